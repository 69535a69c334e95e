// Mosquitto (the Debian package) over WebSocket, with a configuration of our own: loopback only,
// anonymous, no persistence. Mosquitto 2.0.11 refuses to start with only a websockets
// listener, so it also gets an (unused) loopback MQTT listener.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { freePort } from '../../test/helpers/ports.js';
import { startOnPort, type ServerProcess } from './process.js';
import type { BenchTls } from '../tls.js';

/** The version line of the installed mosquitto, or undefined if it is not installed. */
export function mosquittoVersion(): string | undefined {
  try {
    // `mosquitto -h` prints its usage (version first) and exits non-zero.
    execFileSync('mosquitto', ['-h'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    const output = String((error as { stdout?: string }).stdout ?? '');
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    return /mosquitto version (\S+)/.exec(output)?.[1] ?? 'unknown';
  }
  return 'unknown';
}

function config(wsPort: number, mqttPort: number, tls: BenchTls | undefined): string {
  return [
    'per_listener_settings false',
    'allow_anonymous true',
    'persistence false',
    // Run as root, mosquitto would switch to its own user, which cannot read the temporary key.
    ...(process.getuid?.() === 0 ? ['user root'] : []),
    'log_dest stderr',
    'log_type error',
    'log_type warning',
    `listener ${wsPort} 127.0.0.1`,
    'protocol websockets',
    'socket_domain ipv4',
    ...(tls ? [`certfile ${tls.cert}`, `keyfile ${tls.key}`] : []),
    `listener ${mqttPort} 127.0.0.1`,
    'protocol mqtt',
    '',
  ].join('\n');
}

async function startOnce(tls: BenchTls | undefined): Promise<ServerProcess> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mles-bench-mosquitto-'));
  const file = path.join(dir, 'mosquitto.conf');
  const wsPort = await freePort();
  let mqttPort = await freePort();
  while (mqttPort === wsPort) mqttPort = await freePort();
  fs.writeFileSync(file, config(wsPort, mqttPort, tls));
  // Mosquitto does not raise its own open-files limit; the idle scenario holds thousands.
  return startOnPort('mosquitto', {
    command: 'sh',
    args: ['-c', 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec mosquitto -c "$0"', file],
    cleanup: () => fs.rmSync(dir, { recursive: true, force: true }),
  }, wsPort, `${tls ? 'wss' : 'ws'}://127.0.0.1:${wsPort}`);
}

/** Starts mosquitto, trying again if another program took one of its ports meanwhile. */
export async function startMosquitto(tls?: BenchTls, attempts = 3): Promise<ServerProcess> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(tls);
    } catch (error) {
      if (attempt >= attempts) throw error;
    }
  }
}

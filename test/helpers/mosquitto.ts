// A real Mosquitto broker (Debian package mosquitto) on a free loopback port, configured by a
// file in its own temporary directory. It keeps sessions across a graceful restart (persistence
// in that directory), so a test client's queued messages survive `restart()` as on a real broker.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { freePort } from './ports.js';
import { requirePrograms } from './programs.js';

export interface RunningMosquitto {
  /** mqtt://127.0.0.1:<port> */
  url: string;
  /** ws://127.0.0.1:<port>, the websockets listener. */
  wsUrl: string;
  port: number;
  /** Stops it: SIGTERM saves its sessions (a restart resumes them), SIGKILL is a crash. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again on the same ports. */
  start(): Promise<void>;
  /** Kills it and removes its directory. */
  stop(): Promise<void>;
}

/** True if mosquitto is installed; otherwise skips `t` (or fails it in CI). */
export function requireMosquitto(t: TestContext): boolean {
  return requirePrograms(t, 'mosquitto', ['mosquitto']);
}

function configText(port: number, wsPort: number, dir: string): string {
  return [
    // Run as root (CI), mosquitto would switch to its own user, which cannot write `dir`.
    ...(process.getuid?.() === 0 ? ['user root'] : []),
    `listener ${port} 127.0.0.1`,
    `listener ${wsPort} 127.0.0.1`,
    'protocol websockets',
    'allow_anonymous true',
    'persistence true',
    `persistence_location ${dir}${path.sep}`,
    // stderr: unbuffered, so the "running" line arrives when it is written (stdout to a pipe is not).
    'log_dest stderr',
    'log_type error',
    'log_type warning',
    'log_type notice',
    'log_type information',
    '',
  ].join('\n');
}

async function launch(config: string): Promise<ChildProcess> {
  const proc = spawn('mosquitto', ['-c', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  await new Promise<void>((resolve, reject) => {
    const onData = (d: Buffer): void => {
      output += d.toString();
      // Printed once every listener is open.
      if (/mosquitto version \S+ running/.test(output)) {
        proc.stdout!.off('data', onData);
        proc.stderr!.off('data', onData);
        resolve();
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    proc.once('exit', (code) => reject(new Error(`mosquitto exited (${code}):\n${output}`)));
  });
  proc.stdout!.resume();
  proc.stderr!.resume();
  return proc;
}

async function kill(proc: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  proc.kill(signal);
  await exited;
}

export async function startMosquitto(): Promise<RunningMosquitto> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mles-test-mosquitto-'));
  const port = await freePort();
  let wsPort = await freePort();
  while (wsPort === port) wsPort = await freePort();
  const config = path.join(dir, 'mosquitto.conf');
  fs.writeFileSync(config, configText(port, wsPort, dir));
  let proc = await launch(config);
  return {
    url: `mqtt://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${wsPort}`,
    port,
    kill: (signal = 'SIGTERM') => kill(proc, signal),
    async start() {
      proc = await launch(config);
    },
    async stop() {
      await kill(proc, 'SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

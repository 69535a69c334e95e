// A real Mosquitto broker (Debian package mosquitto) on free loopback ports, configured by a
// file in its own temporary directory: MQTT, MQTT over TLS, websockets and websockets over TLS,
// the TLS listeners with a certificate made for this run (openssl) in that directory. It keeps
// sessions across a graceful restart (persistence in that directory), so a test client's queued
// messages survive `restart()` as on a real broker.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import { selfSignedCertificate, type TestCertificate } from './certs.js';
import { freePort } from './ports.js';
import { requirePrograms } from './programs.js';

export interface RunningMosquitto {
  /** mqtt://127.0.0.1:<port> */
  url: string;
  /** ws://127.0.0.1:<port>, the websockets listener. */
  wsUrl: string;
  /** mqtts://127.0.0.1:<port>, MQTT over TLS. */
  tlsUrl: string;
  /** wss://127.0.0.1:<port>, websockets over TLS. */
  wssUrl: string;
  /** The TLS listeners' certificate (self-signed for 127.0.0.1 and localhost): the CA to trust. */
  caFile: string;
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

interface Ports {
  mqtt: number;
  ws: number;
  tls: number;
  wss: number;
}

function configText(ports: Ports, certificate: TestCertificate, dir: string): string {
  const tls = [`certfile ${certificate.certFile}`, `keyfile ${certificate.keyFile}`];
  return [
    // Run as root (CI), mosquitto would switch to its own user, which cannot write `dir`.
    ...(process.getuid?.() === 0 ? ['user root'] : []),
    // Each listener's settings follow its `listener` line.
    `listener ${ports.mqtt} 127.0.0.1`,
    `listener ${ports.ws} 127.0.0.1`,
    'protocol websockets',
    `listener ${ports.tls} 127.0.0.1`,
    ...tls,
    `listener ${ports.wss} 127.0.0.1`,
    'protocol websockets',
    ...tls,
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

/** `count` distinct ports that were free a moment ago. */
async function freePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await freePort());
  return [...ports];
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
  const [mqtt, ws, tls, wss] = await freePorts(4) as [number, number, number, number];
  const certificate = selfSignedCertificate(dir, 'mosquitto', ['localhost'], ['127.0.0.1']);
  const config = path.join(dir, 'mosquitto.conf');
  fs.writeFileSync(config, configText({ mqtt, ws, tls, wss }, certificate, dir));
  let proc = await launch(config);
  return {
    url: `mqtt://127.0.0.1:${mqtt}`,
    wsUrl: `ws://127.0.0.1:${ws}`,
    tlsUrl: `mqtts://127.0.0.1:${tls}`,
    wssUrl: `wss://127.0.0.1:${wss}`,
    caFile: certificate.certFile,
    port: mqtt,
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

export interface Publication {
  topic: string;
  payload: Buffer;
  text: string;
  packet: IPublishPacket;
}

/** An MQTT client of the test that records what it receives and lets the test wait for it. */
export class MqttPeer {
  readonly received: Publication[] = [];
  private waiters: Array<() => void> = [];

  private constructor(readonly client: MqttClient) {
    client.on('message', (topic, payload, packet) => {
      this.received.push({ topic, payload, text: payload.toString(), packet });
      for (const wake of this.waiters.splice(0)) wake();
    });
  }

  static async connect(url: string, options: IClientOptions = {}): Promise<MqttPeer> {
    return new MqttPeer(await mqtt.connectAsync(url, { protocolVersion: 5, reconnectPeriod: 100, ...options }));
  }

  async subscribe(topic: string): Promise<void> {
    await this.client.subscribeAsync(topic, { qos: 1 });
  }

  async publish(topic: string, payload: string | Buffer): Promise<void> {
    await this.client.publishAsync(topic, payload, { qos: 1 });
  }

  /** Waits until a received message satisfies `found`. */
  async waitFor(found: (p: Publication) => boolean): Promise<void> {
    while (!this.received.some(found)) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  texts(topic: string): string[] {
    return this.received.filter((p) => p.topic === topic).map((p) => p.text);
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
  }
}

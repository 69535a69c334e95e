// Pebble, Let's Encrypt's ACME test CA (Debian package `pebble`), on loopback. Its validation
// authority really connects to our TLS port: `pebble-challtestsrv` (same package) is its DNS
// server and answers every A query with 127.0.0.1 (and no AAAA, so validation stays on IPv4
// loopback). No PEBBLE_VA_ALWAYS_VALID: challenges are validated for real.

import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { selfSignedCertificate } from './certs.js';
import { freePort } from './ports.js';

export const PEBBLE_PROGRAMS = ['pebble', 'pebble-challtestsrv', 'openssl'];

export interface PebbleOptions {
  /** A scratch folder for Pebble's API certificate and config. */
  dir: string;
  /** The port Pebble validates tls-alpn-01 challenges on: the mles server's port. */
  tlsPort: number;
  /** Lifetime of issued certificates (Pebble's default is years). */
  validitySeconds?: number;
}

interface Running {
  proc: ChildProcess;
  output: string;
}

/** Starts `command` and resolves once its output contains `ready`. */
async function launch(command: string, args: string[], env: NodeJS.ProcessEnv, ready: string): Promise<Running> {
  const proc = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const running: Running = { proc, output: '' };
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      running.output += chunk.toString();
      if (running.output.includes(ready)) resolve();
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    proc.once('error', reject);
    proc.once('exit', (code) => reject(new Error(`${command} exited (${code}) before it was ready:\n${running.output}`)));
  });
  return running;
}

async function stop(running: Running | undefined): Promise<void> {
  if (!running || running.proc.exitCode !== null || running.proc.signalCode !== null) return;
  const exited = once(running.proc, 'exit');
  running.proc.kill('SIGTERM');
  await exited;
}

export class Pebble {
  readonly directoryUrl: string;
  /** Trust for Pebble's own HTTPS API (pass it as --acme-ca). */
  readonly apiCaFile: string;
  private readonly apiCa: string;
  private pebble: Running | undefined;
  private dns: Running | undefined;

  private constructor(
    private readonly options: PebbleOptions,
    private readonly ports: { acme: number; management: number; dns: number; dnsManagement: number },
  ) {
    const api = selfSignedCertificate(options.dir, 'pebble-api', ['localhost'], ['127.0.0.1']);
    this.apiCaFile = api.certFile;
    this.apiCa = api.cert;
    this.directoryUrl = `https://127.0.0.1:${ports.acme}/dir`;
    const config = {
      pebble: {
        listenAddress: `127.0.0.1:${ports.acme}`,
        managementListenAddress: `127.0.0.1:${ports.management}`,
        certificate: api.certFile,
        privateKey: api.keyFile,
        httpPort: 0,
        tlsPort: options.tlsPort,
        ocspResponderURL: '',
        externalAccountBindingRequired: false,
        ...(options.validitySeconds ? { certificateValidityPeriod: options.validitySeconds } : {}),
      },
    };
    fs.writeFileSync(this.configFile, JSON.stringify(config));
  }

  /** Picks Pebble's ports and writes its config; `start` runs it. */
  static async prepare(options: PebbleOptions): Promise<Pebble> {
    const [acme, management, dns, dnsManagement] = [await freePort(), await freePort(), await freePort(), await freePort()];
    return new Pebble(options, { acme: acme!, management: management!, dns: dns!, dnsManagement: dnsManagement! });
  }

  static async start(options: PebbleOptions): Promise<Pebble> {
    const pebble = await Pebble.prepare(options);
    await pebble.start();
    return pebble;
  }

  private get configFile(): string {
    return path.join(this.options.dir, 'pebble-config.json');
  }

  async start(): Promise<void> {
    try {
      await this.startDns();
      await this.startCa();
    } catch (error) {
      await this.stop();
      throw error;
    }
  }

  /** The DNS server alone: without it Pebble cannot resolve, so validations fail. */
  async startDns(): Promise<void> {
    // Every listener but DNS off (an empty management address would mean port 80).
    this.dns = await launch(
      'pebble-challtestsrv',
      ['-dns01', `127.0.0.1:${this.ports.dns}`, '-http01', '', '-https01', '', '-tlsalpn01', '',
        '-management', `127.0.0.1:${this.ports.dnsManagement}`, '-defaultIPv4', '127.0.0.1', '-defaultIPv6', ''],
      {},
      'Starting challenge servers',
    );
  }

  /** The CA alone (see startDns). */
  async startCa(): Promise<void> {
    this.pebble = await launch(
      'pebble',
      ['-config', this.configFile, '-dnsserver', `127.0.0.1:${this.ports.dns}`],
      { PEBBLE_VA_NOSLEEP: '1' },
      'ACME directory available at',
    );
  }

  /** Everything Pebble logged so far. */
  log(): string {
    return this.pebble?.output ?? '';
  }

  /** How many orders Pebble has accepted so far. */
  orders(): number {
    return this.log().split('Added order').length - 1;
  }

  /** The root that issued our certificates (new on every Pebble start), from the management API. */
  issuingRoot(): Promise<string> {
    return new Promise((resolve, reject) => {
      https
        .get(`https://127.0.0.1:${this.ports.management}/roots/0`, { ca: this.apiCa }, (res) => {
          let body = '';
          res.on('data', (chunk: Buffer) => (body += chunk.toString()));
          res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`roots/0: HTTP ${res.statusCode}`))));
        })
        .on('error', reject);
    });
  }

  async stop(): Promise<void> {
    await Promise.all([stop(this.pebble), stop(this.dns)]);
  }
}

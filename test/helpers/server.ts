// Starts a real `mles` process (the CLI, from source through tsx) on a free loopback port and
// waits for its "listening on" line. Every test that needs a server uses this.

import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import fs from 'node:fs';
import os from 'node:os';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const CLI = path.join(ROOT, 'src/cli.ts');
/** tsx's loader by URL, so the CLI also runs from another working directory. */
const TSX = import.meta.resolve('tsx');

export interface RunningServer {
  /** The URL from the "listening on" line, e.g. ws://127.0.0.1:40123 */
  url: string;
  port: number;
  proc: ChildProcess;
  /** Everything the process wrote to stderr so far (its logs). */
  stderr(): string;
  /** Sends `signal` (default SIGTERM) and resolves with the exit code (or signal name). */
  stop(signal?: NodeJS.Signals): Promise<number | string>;
  /** Resolves when stderr contains `text`. */
  waitForLog(text: string | RegExp): Promise<void>;
}

export interface StartOptions {
  env?: NodeJS.ProcessEnv;
  /** Run from this directory (default: the project root). */
  cwd?: string;
}

/** The command that runs the CLI: node with tsx, so tests need no build step. */
export function cliCommand(args: string[]): [string, string[]] {
  return [process.execPath, ['--import', TSX, CLI, ...args]];
}

export interface Finished {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI to completion (for flag errors, --help): exit code, stdout, stderr. */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Finished> {
  const [cmd, argv] = cliCommand(args);
  return runToEnd(cmd, argv, env);
}

/** Runs a program from the project root to completion, collecting its output. */
export async function runToEnd(cmd: string, argv: string[], env: NodeJS.ProcessEnv = {}): Promise<Finished> {
  const proc = spawn(cmd, argv, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const [code] = (await once(proc, 'exit')) as [number | null];
  return { code, stdout, stderr };
}

let serversStarted = 0;

/**
 * Set by test/cluster-protocol.test.ts: the same suites then run against cluster nodes, each
 * server with data of its own (as each has its own data directory): a Redis database of its own
 * (of the default 16), or on a Redis Cluster a namespace of its own.
 */
function testBroker(): string[] {
  const n = serversStarted++;
  if (process.env.MLES_TEST_REDIS_URL) return ['--redis', `${process.env.MLES_TEST_REDIS_URL}/${n % 16}`];
  const seeds = process.env.MLES_TEST_REDIS_CLUSTER?.split(',') ?? [];
  return seeds.flatMap((seed) => ['--redis-cluster', `${seed}/${n + 1}`]);
}

/** Starts `mles --port 0 ...args` (add your own --port to override) and waits until it listens. */
export async function startServer(args: string[] = [], options: StartOptions = {}): Promise<RunningServer> {
  const withPort = args.includes('--port') || args.includes('-p') ? args : ['--port', '0', ...args];
  const [cmd, argv] = cliCommand(withPort.includes('--redis') || withPort.includes('--redis-cluster') ? withPort : [...withPort, ...testBroker()]);
  // A fresh data directory per server, so the default SQLite history never leaks between tests.
  const dataHome = fs.mkdtempSync(path.join(os.tmpdir(), 'mles-test-data-'));
  const env = { ...process.env, MLES_KEY: '', MLES_LOG: 'info', XDG_DATA_HOME: dataHome, ...options.env };
  const proc = spawn(cmd, argv, { cwd: options.cwd ?? ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  const logWaiters: Array<{ test: (s: string) => boolean; resolve: () => void }> = [];
  proc.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
    for (const waiter of logWaiters.splice(0)) {
      if (waiter.test(stderr)) waiter.resolve();
      else logWaiters.push(waiter);
    }
  });
  const url = await new Promise<string>((resolve, reject) => {
    let stdout = '';
    const onData = (d: Buffer): void => {
      stdout += d.toString();
      const match = /listening on (\S+)\n/.exec(stdout);
      if (match) {
        proc.stdout!.off('data', onData);
        resolve(match[1]!);
      }
    };
    proc.stdout!.on('data', onData);
    proc.once('exit', (code) => {
      fs.rmSync(dataHome, { recursive: true, force: true });
      reject(new Error(`mles exited (${code}) before listening:\n${stderr}`));
    });
  });
  const exited = once(proc, 'exit').then(([code, signal]) => {
    fs.rmSync(dataHome, { recursive: true, force: true });
    return (code ?? signal) as number | string;
  });
  return {
    url,
    port: Number(new URL(url.replace(/^ws/, 'http')).port),
    proc,
    stderr: () => stderr,
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
    waitForLog(text) {
      const test = (s: string): boolean => (typeof text === 'string' ? s.includes(text) : text.test(s));
      if (test(stderr)) return Promise.resolve();
      return new Promise((resolve) => logWaiters.push({ test, resolve }));
    },
  };
}

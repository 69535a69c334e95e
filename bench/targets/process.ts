// A server under test as its own operating-system process: started, watched (an exit nobody
// asked for is a crash and fails the run), and stopped.

import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * `npm run bench` runs compiled JavaScript (dist/), as users run the server: under tsx every
 * closure carries a defined `name` property (esbuild's keepNames), which inflates per-connection
 * memory and CPU. The smoke test runs the TypeScript through tsx; both find their files here.
 */
const COMPILED = import.meta.url.endsWith('.js');
/** The project's root, from bench/targets/ or dist/bench/targets/. */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), COMPILED ? '../../..' : '../..');

/** Node arguments that run a project file (named by its .ts source path) in this mode. */
export function projectScript(file: string): { script: string; execArgv: string[] } {
  return COMPILED
    ? { script: path.join(ROOT, 'dist', file.replace(/\.ts$/, '.js')), execArgv: [] }
    : { script: path.join(ROOT, file), execArgv: ['--import', 'tsx'] };
}

const START_TIMEOUT_MS = 30_000;

// Servers still running when the bench exits (an error, an interrupt) must not outlive it.
const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const proc of running) proc.kill('SIGKILL');
});

export interface ServerProcess {
  readonly pid: number;
  /** Where clients connect, e.g. ws://127.0.0.1:40123 */
  readonly url: string;
  /**
   * Every process the service runs in, when it is more than `pid` (a cluster's workers and its
   * Redis): the server's CPU and RSS are their sums.
   */
  pids?(): number[];
  /** Why the process ended without being asked to, or undefined while it runs. */
  crash(): string | undefined;
  stop(): Promise<void>;
  /** The Redis a cluster target runs on, measured apart too (its share is in `pids` as well). */
  readonly broker?: BrokerProbe;
}

/** What a run reads off a cluster target's Redis: its processes, and the script calls it ran. */
export interface BrokerProbe {
  pids(): number[];
  /** EVALSHA/EVAL calls so far, over every Redis process (INFO commandstats). */
  scriptCalls(): Promise<number>;
}

export interface SpawnSpec {
  command: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  /** Runs after the process has exited (temporary files). */
  cleanup?: () => void;
}

/** A command that runs a file of this project (compiled or through tsx, see projectScript). */
export function projectNode(file: string, args: string[] = []): SpawnSpec {
  const { script, execArgv } = projectScript(file);
  return { command: process.execPath, args: [...execArgv, script, ...args] };
}

/**
 * Spawns `spec` and resolves once `ready(proc)` yields the URL clients use; rejects if the
 * process exits first or takes longer than START_TIMEOUT_MS.
 */
async function start(what: string, spec: SpawnSpec, ready: (proc: ChildProcess, exited: () => boolean) => Promise<string>): Promise<ServerProcess> {
  const proc = spawn(spec.command, spec.args, { cwd: ROOT, env: spec.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(proc);
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  let stopping = false;
  let crash: string | undefined;
  let hasExited = false;
  let onExit: (code: number | null, signal: string | null) => void = () => {};
  const exited = new Promise<void>((resolve) => {
    proc.once('exit', (code, signal) => {
      running.delete(proc);
      hasExited = true;
      spec.cleanup?.();
      if (!stopping) crash = `${what} exited (${code ?? signal}): ${stderr.trim().split('\n').slice(-5).join(' | ')}`;
      onExit(code, signal);
      resolve();
    });
  });
  const stop = async (): Promise<void> => {
    stopping = true;
    if (!hasExited) {
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
  };
  let timer: NodeJS.Timeout | undefined;
  const failed = new Promise<never>((_, reject) => {
    onExit = () => reject(new Error(crash));
    timer = setTimeout(() => reject(new Error(`${what} did not start within ${START_TIMEOUT_MS / 1000} s: ${stderr.trim()}`)), START_TIMEOUT_MS);
  });
  try {
    const url = await Promise.race([ready(proc, () => hasExited), failed]);
    onExit = () => {};
    return { pid: proc.pid!, url, crash: () => crash, stop };
  } catch (error) {
    await stop();
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

/** Starts a program that prints `listening on <url>` on stdout once it accepts connections. */
export function startAnnounced(what: string, spec: SpawnSpec): Promise<ServerProcess> {
  return start(what, spec, (proc) => new Promise<string>((resolve) => {
    let stdout = '';
    proc.stdout!.on('data', (d: Buffer) => {
      stdout += d.toString();
      const match = /listening on (\S+)\n/.exec(stdout);
      if (match) resolve(match[1]!);
    });
  }));
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.on('error', () => resolve(false));
  });
}

/** Starts a program told its port in advance, and waits until that port accepts connections. */
export function startOnPort(what: string, spec: SpawnSpec, port: number, url: string): Promise<ServerProcess> {
  return start(what, spec, async (proc, exited) => {
    proc.stdout!.resume();
    while (!exited() && !(await accepts(port))) await new Promise((resolve) => setTimeout(resolve, 20));
    return url;
  });
}

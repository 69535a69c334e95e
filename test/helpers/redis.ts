// A real redis-server (Debian package redis-server) on a free loopback port, without persistence,
// in its own temporary directory. Tests that need it call requireRedis first.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { freePort } from './ports.js';
import { requirePrograms } from './programs.js';

export interface RunningRedis {
  url: string;
  port: number;
  /** Kills the server like a crash (it saves nothing either way). */
  kill(): Promise<void>;
  /** Starts it again on the same port, empty. */
  start(): Promise<void>;
  /** Kills it and removes its directory. */
  stop(): Promise<void>;
}

/** True if redis-server is installed; otherwise skips `t` (or fails it in CI). */
export function requireRedis(t: TestContext): boolean {
  return requirePrograms(t, 'redis-server', ['redis-server']);
}

/** redis-server arguments for a throwaway loopback server: no persistence, files in `dir`. */
export function redisServerArgs(port: number, dir: string): string[] {
  return ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no'];
}

async function launch(port: number, dir: string): Promise<ChildProcess> {
  const proc = spawn('redis-server', redisServerArgs(port, dir), { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  await new Promise<void>((resolve, reject) => {
    const onData = (d: Buffer): void => {
      output += d.toString();
      if (output.includes('Ready to accept connections')) {
        proc.stdout!.off('data', onData);
        resolve();
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', (d: Buffer) => (output += d.toString()));
    proc.once('exit', (code) => reject(new Error(`redis-server exited (${code}):\n${output}`)));
  });
  proc.stdout!.resume();
  return proc;
}

/** SIGKILLs `proc` (a crash: nothing saved) and resolves once it exited. */
export async function killProcess(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  proc.kill('SIGKILL');
  await exited;
}

export async function startRedis(): Promise<RunningRedis> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mles-test-redis-'));
  const port = await freePort();
  let proc = await launch(port, dir);
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    kill: () => killProcess(proc),
    async start() {
      proc = await launch(port, dir);
    },
    async stop() {
      await killProcess(proc);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

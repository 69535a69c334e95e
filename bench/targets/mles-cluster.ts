// This server in cluster mode (--redis, --workers N) with a redis-server of its own, measured as
// one service: CPU and memory are those of the primary, its workers and Redis together.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../../test/helpers/ports.js';
import { redisServerArgs } from '../../test/helpers/redis.js';
import { processTree } from '../measure.js';
import { startMles } from './mles.js';
import { startOnPort, type ServerProcess } from './process.js';

/** A redis-server on a free loopback port, without persistence, in a temporary directory. */
async function startRedisServer(): Promise<ServerProcess> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mles-bench-redis-'));
  const port = await freePort();
  return startOnPort('redis-server', {
    command: 'redis-server',
    args: redisServerArgs(port, dir),
    cleanup: () => fs.rmSync(dir, { recursive: true, force: true }),
  }, port, `redis://127.0.0.1:${port}`);
}

export async function startMlesCluster(workers: number, historyLimit: number): Promise<ServerProcess> {
  const redis = await startRedisServer();
  try {
    const mles = await startMles(`mles cluster (${workers} workers)`, historyLimit, ['--redis', redis.url, '--workers', String(workers), '--history', 'memory']);
    return {
      pid: mles.pid,
      url: mles.url,
      pids: () => [...processTree(mles.pid), redis.pid],
      crash: () => mles.crash() ?? redis.crash(),
      async stop() {
        await mles.stop();
        await redis.stop();
      },
    };
  } catch (error) {
    await redis.stop();
    throw error;
  }
}

// This server in cluster mode with a Redis of its own, measured as one service: CPU and memory
// are those of the primary, its workers and Redis together; Redis is also measured apart (its
// CPU and script calls), for the scaling model in docs/cluster.md.
//   mles-cluster1, mles-cluster2: --redis, --workers 1 or 2, on one redis-server
//   mles-rcluster2: --redis-cluster, --workers 2, on a 3-master Redis Cluster

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { freePort } from '../../test/helpers/ports.js';
import { redisServerArgs } from '../../test/helpers/redis.js';
import { startRedisCluster } from '../../test/helpers/redis-cluster.js';
import { processTree } from '../measure.js';
import { startMles } from './mles.js';
import { startOnPort, type BrokerProbe, type ServerProcess } from './process.js';

/** A Redis the target runs on: how to reach it, what to read off it, how to stop it. */
interface RunningBroker extends BrokerProbe {
  /** The mles flags that join it. */
  flags: string[];
  stop(): Promise<void>;
}

/** EVALSHA and EVAL calls a Redis server has run, from INFO commandstats. */
async function scriptCallsOf(port: number): Promise<number> {
  const redis = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 0 });
  try {
    await redis.connect();
    const stats = await redis.info('commandstats');
    let calls = 0;
    for (const match of stats.matchAll(/^cmdstat_(?:evalsha|eval):calls=(\d+)/gm)) calls += Number(match[1]);
    return calls;
  } finally {
    redis.disconnect();
  }
}

const sum = (values: number[]): number => values.reduce((total, value) => total + value, 0);

/** A redis-server on a free loopback port, without persistence, in a temporary directory. */
async function startRedisServer(): Promise<RunningBroker> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mles-bench-redis-'));
  const port = await freePort();
  const redis = await startOnPort('redis-server', {
    command: 'redis-server',
    args: redisServerArgs(port, dir),
    cleanup: () => fs.rmSync(dir, { recursive: true, force: true }),
  }, port, `redis://127.0.0.1:${port}`);
  return {
    flags: ['--redis', redis.url],
    pids: () => [redis.pid],
    scriptCalls: () => scriptCallsOf(port),
    stop: () => redis.stop(),
  };
}

async function startRedisClusterBroker(): Promise<RunningBroker> {
  const cluster = await startRedisCluster();
  const ports = cluster.nodes.map((node) => node.port);
  return {
    flags: cluster.urls.flatMap((url) => ['--redis-cluster', url]),
    pids: () => cluster.pids(),
    scriptCalls: async () => sum(await Promise.all(ports.map(scriptCallsOf))),
    stop: () => cluster.stop(),
  };
}

export async function startMlesCluster(workers: number, on: 'redis' | 'redis-cluster', historyLimit: number, flags: string[] = []): Promise<ServerProcess> {
  const broker = on === 'redis' ? await startRedisServer() : await startRedisClusterBroker();
  try {
    const mles = await startMles(`mles cluster (${workers} workers, ${on})`, historyLimit, [...broker.flags, '--workers', String(workers), '--history', 'memory', ...flags]);
    return {
      pid: mles.pid,
      url: mles.url,
      pids: () => [...processTree(mles.pid), ...broker.pids()],
      broker,
      crash: () => mles.crash(),
      async stop() {
        await mles.stop();
        await broker.stop();
      },
    };
  } catch (error) {
    await broker.stop();
    throw error;
  }
}

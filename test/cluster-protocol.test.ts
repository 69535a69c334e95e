// Issues 8 and 12: a cluster node behaves as one node, on every broker. Re-runs the single-node
// protocol suite (spec sections 1-3) with every server it starts joined to a real Redis
// (--redis) and to a real 3-master Redis Cluster (--redis-cluster).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { ROOT } from './helpers/server.js';
import { requireRedis, startRedis } from './helpers/redis.js';
import { requireRedisCluster, startRedisCluster } from './helpers/redis-cluster.js';

/** Runs test/protocol.test.ts in a child whose servers all join the broker `env` names. */
async function protocolSuite(env: NodeJS.ProcessEnv): Promise<void> {
  // Without the test runner's marker, so the child runs its file as a suite of its own.
  const { NODE_TEST_CONTEXT: _, ...inherited } = process.env;
  const child = spawn(process.execPath, ['--import', 'tsx', '--test', path.join(ROOT, 'test/protocol.test.ts')], {
    cwd: ROOT,
    env: { ...inherited, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  assert.equal(code, 0, `protocol suite failed in cluster mode:\n${output}`);
  assert.match(output, /# fail 0/);
}

test('the protocol suite passes against cluster nodes on one Redis', { timeout: 90_000 }, async (t) => {
  if (!requireRedis(t)) return;
  const redis = await startRedis();
  try {
    await protocolSuite({ MLES_TEST_REDIS_URL: redis.url });
  } finally {
    await redis.stop();
  }
});

test('the protocol suite passes against cluster nodes on a Redis Cluster', { timeout: 120_000 }, async (t) => {
  if (!requireRedisCluster(t)) return;
  const cluster = await startRedisCluster();
  try {
    await protocolSuite({ MLES_TEST_REDIS_CLUSTER: cluster.urls.join(',') });
  } finally {
    await cluster.stop();
  }
});

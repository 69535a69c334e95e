// Issue 8: a cluster node behaves as one node. Re-runs the single-node protocol suite (spec
// sections 1-3) with every server it starts joined to a real Redis (--redis).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { ROOT } from './helpers/server.js';
import { requireRedis, startRedis } from './helpers/redis.js';

test('the protocol suite passes against cluster nodes', { timeout: 90_000 }, async (t) => {
  if (!requireRedis(t)) return;
  const redis = await startRedis();
  try {
    // Without the test runner's marker, so the child runs its file as a suite of its own.
    const { NODE_TEST_CONTEXT: _, ...env } = process.env;
    const child = spawn(process.execPath, ['--import', 'tsx', '--test', path.join(ROOT, 'test/protocol.test.ts')], {
      cwd: ROOT,
      env: { ...env, MLES_TEST_REDIS_URL: redis.url },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.equal(code, 0, `protocol suite failed in cluster mode:\n${output}`);
    assert.match(output, /# fail 0/);
  } finally {
    await redis.stop();
  }
});

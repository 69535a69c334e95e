// Issue 11, finding 7: history is capped by payload bytes as well as by count (--history-bytes),
// newest kept, in every store: memory, SQLite and the cluster's Redis.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { MemoryStore } from '../src/store/memory.js';
import { SqliteStore } from '../src/store/sqlite.js';
import type { HistoryStore } from '../src/store/store.js';
import { KeySpace } from '../src/broker/redis/scripts.js';
import { startServer } from './helpers/server.js';
import { TestClient } from './helpers/client.js';
import { requireRedis, startRedis } from './helpers/redis.js';

const T = { timeout: 30_000 };
const text = (s: string) => ({ data: Buffer.from(s), binary: false });

function tempFile(t: TestContext, name: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mles-limits-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, name);
}

/** Drives a store made with --limit 5 and --history-bytes 10 through every case of the rule. */
async function keepsNewestWithinCap(store: HistoryStore): Promise<void> {
  const history = async (): Promise<string[]> => (await store.read('ch')).map((m) => m.data.toString());
  for (const s of ['aaaa', 'bbbb', 'cc']) await store.append('ch', text(s), 1);
  assert.deepEqual(await history(), ['aaaa', 'bbbb', 'cc'], 'exactly the cap is kept');
  await store.append('ch', text('d'), 1);
  assert.deepEqual(await history(), ['bbbb', 'cc', 'd'], 'one byte over: the oldest goes');
  await store.append('ch', text('x'.repeat(25)), 1);
  assert.deepEqual(await history(), ['x'.repeat(25)], 'a message over the cap is kept alone, as the newest');
  await store.append('ch', text('e'), 1);
  assert.deepEqual(await history(), ['e'], 'and goes as soon as a newer one comes');
  // One turn of appends (one SQLite transaction) is trimmed the same way.
  await Promise.all(['f1.', 'f2.', 'f3.', 'f4.'].map((s) => store.append('ch', text(s), 1)));
  assert.deepEqual(await history(), ['f2.', 'f3.', 'f4.']);
  // --limit still holds for small messages.
  await Promise.all(['g', 'h', 'i'].map((s) => store.append('ch', text(s), 1)));
  assert.deepEqual(await history(), ['f3.', 'f4.', 'g', 'h', 'i']);
}

const CAPS = { historyBytes: 10 };

test('memory store keeps the newest messages within --limit and --history-bytes', async () => {
  await keepsNewestWithinCap(new MemoryStore(5, CAPS));
  const uncapped = new MemoryStore(5, { historyBytes: 0 });
  for (let i = 0; i < 3; i++) uncapped.append('ch', text('x'.repeat(1000)), 1);
  assert.equal(uncapped.read('ch').length, 3, '0: no byte cap');
});

test('sqlite store keeps the newest messages within --limit and --history-bytes, across reopen', async (t) => {
  const file = tempFile(t, 'h.db');
  const store = new SqliteStore(file, 5, CAPS);
  await keepsNewestWithinCap(store);
  await store.close();
  // The database agrees with what the reads (from the cache) said, and its byte total is right.
  const reopened = new SqliteStore(file, 5, CAPS);
  const history = (): string[] => reopened.read('ch').map((m) => m.data.toString());
  assert.deepEqual(history(), ['f3.', 'f4.', 'g', 'h', 'i']);
  await reopened.append('ch', text('jjjjjj'), 2);
  assert.deepEqual(history(), ['g', 'h', 'i', 'jjjjjj']);
  await reopened.close();

  const uncapped = new SqliteStore(tempFile(t, 'u.db'), 5, { historyBytes: 0 });
  await Promise.all([0, 1, 2].map(() => uncapped.append('ch', text('x'.repeat(1000)), 1)));
  assert.equal(uncapped.read('ch').length, 3, '0: no byte cap');
  await uncapped.close();
});

/** 1000-byte messages, numbered: 10 of them fit in 10 KiB (10,240 bytes), 11 do not. */
const KB_MESSAGES = Array.from({ length: 30 }, (_, i) => `${String(i).padStart(3, '0')} ${'x'.repeat(996)}`);

/**
 * A newcomer to `channel` on `url` receives exactly `expected` as its replay: it waits for them,
 * then for a message sent live after its join, which must come right after them.
 */
async function assertReplay(url: string, channel: string, expected: string[]): Promise<void> {
  const newcomer = await TestClient.join(url, `newcomer-${Math.random()}`, channel);
  assert.deepEqual((await newcomer.waitFor(expected.length)).map((m) => m.text), expected);
  const marker = await TestClient.join(url, `marker-${Math.random()}`, channel);
  marker.send('live');
  assert.equal((await newcomer.waitFor(expected.length + 1))[expected.length]!.text, 'live');
  await Promise.all([newcomer.close(), marker.close()]);
}

/** Writes KB_MESSAGES to a channel; a newcomer then gets the newest that fit in 10 KiB. */
async function newcomerGetsNewestTenKiB(url: string, stored: () => Promise<void> = async () => {}): Promise<void> {
  const writer = await TestClient.join(url, 'writer', 'capped');
  for (const m of KB_MESSAGES) writer.send(m);
  await writer.close(); // the server has handled every frame before it answers the close
  await stored();
  // The writer's join frame was the oldest: it is gone with the first 20 messages.
  await assertReplay(url, 'capped', KB_MESSAGES.slice(20));
}

for (const [store, args] of [['sqlite', []], ['memory', ['--history', 'memory']]] as const) {
  test(`--history-bytes 10k (${store}): a newcomer receives only the newest messages within 10 KiB`, T, async () => {
    const server = await startServer(['--history-bytes', '10k', ...args]);
    try {
      await newcomerGetsNewestTenKiB(server.url);
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });
}

test('--history-bytes 10k (cluster): Redis keeps only the newest messages within 10 KiB, also of a history from before the cap', T, async (t) => {
  if (!requireRedis(t)) return;
  const redis = await startRedis();
  const direct = new Redis(redis.url);
  try {
    // A history kept by a version without the byte cap: the list only, no byte total beside it.
    const legacy = new KeySpace(0, 0).channel('legacy');
    await direct.rpush(legacy.history, ...KB_MESSAGES.map((m) => `t${m}`));
    await direct.set(legacy.seq, KB_MESSAGES.length);

    const node = await startServer(['--redis', redis.url, '--history-bytes', '10k']);
    try {
      // A cluster node sequences appends in Redis after it handled the frames: a newcomer that
      // joined before the last were sequenced would rightly get them live, not in its replay.
      const capped = new KeySpace(0, 0).channel('capped');
      await newcomerGetsNewestTenKiB(node.url, async () => {
        for (let i = 0; Number(await direct.get(capped.seq)) < 1 + KB_MESSAGES.length; i++) {
          assert.ok(i < 500, `every message was sequenced in Redis (seq ${await direct.get(capped.seq)}, history ${await direct.llen(capped.history)})`);
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      });
      // The first join reads the old history whole, and its append trims it to the cap.
      const first = await TestClient.join(node.url, 'first', 'legacy');
      await first.waitFor(KB_MESSAGES.length);
      await first.close();
      const firstJoin = JSON.stringify({ uid: 'first', channel: 'legacy' });
      await assertReplay(node.url, 'legacy', [...KB_MESSAGES.slice(20), firstJoin]);
    } finally {
      assert.equal(await node.stop(), 0);
    }
  } finally {
    direct.disconnect();
    await redis.stop();
  }
});

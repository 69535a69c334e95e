// Join replay is paced by the reader (issue 11, findings 2 and 3): a history larger than
// --max-buffered reaches a newcomer that reads, whole and in order, and joiners that never read
// do not each hold a copy of a large history.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer } from './helpers/server.js';
import { TestClient } from './helpers/client.js';
import { RawClient, Opcode, encodeFrame } from './helpers/raw-ws.js';

const T = { timeout: 120_000 };

const payload = (i: number, size: number): string => `${i}:`.padEnd(size, '.');
const indexOf = (data: Buffer): number => Number(data.subarray(0, 12).toString().split(':')[0]);

function tempDb(): { file: string; remove(): void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mles-replay-'));
  return { file: path.join(dir, 'history.db'), remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** Resident memory of a process, from /proc (Linux). */
function rssBytes(pid: number): number {
  const line = fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmRSS:'))!;
  return Number(line.split(/\s+/)[1]) * 1024;
}

/**
 * Publishes `count` messages, in steps that a live reader takes without falling behind, and
 * waits until it has them all, so the history is complete.
 */
async function fill(url: string, channel: string, count: number, size: number): Promise<void> {
  const publisher = await TestClient.join(url, 'publisher', channel);
  const reader = await TestClient.join(url, 'reader', channel);
  await reader.waitFor(1); // the publisher's join frame, from history: both are members
  for (let i = 0; i < count; i++) {
    publisher.send(payload(i, size));
    if (i % 8 === 7 || i === count - 1) await reader.waitFor(2 + i);
  }
  await Promise.all([publisher.close(), reader.close()]);
}

for (const history of ['memory', 'sqlite'] as const) {
  test(`replay (${history}): a history larger than --max-buffered reaches a newcomer that reads, whole`, T, async () => {
    const db = tempDb();
    const server = await startServer([
      '--max-buffered', '4MiB', '--limit', '100',
      '--history', history === 'memory' ? 'memory' : `sqlite:${db.file}`,
    ]);
    try {
      const count = 81;
      await fill(server.url, 'big', count, 100 * 1024); // 8 MiB of history, twice the bound
      const newcomer = await TestClient.join(server.url, 'newcomer', 'big');
      // publisher's join, reader's join, then the 81 messages
      const got = await newcomer.waitFor(count + 2);
      const messages = got.slice(2).map((m) => indexOf(m.data));
      assert.deepEqual(messages, Array.from({ length: count }, (_, i) => i));
      await newcomer.close();
      assert.equal((await newcomer.closed).code, 1000, 'closed by the client, not evicted');
    } finally {
      assert.equal(await server.stop(), 0);
      db.remove();
    }
  });
}

test('replay: a newcomer gets the history first, then messages sent during its replay, in order', T, async () => {
  const server = await startServer(['--max-buffered', '1MiB', '--limit', '1000', '--history', 'memory']);
  try {
    await fill(server.url, 'mixed', 300, 16 * 1024); // ~4.7 MiB of history
    const slow = await RawClient.connect(server.port);
    const stopThrottle = slow.throttle(256 * 1024, 5);
    slow.write(encodeFrame(Opcode.text, JSON.stringify({ uid: 'slow', channel: 'mixed' })));
    // The late publisher's replay ends with the slow member's join frame: it is a member.
    const publisher = await TestClient.join(server.url, 'late', 'mixed');
    await publisher.waitFor(2 + 300 + 1);
    for (let i = 300; i < 400; i++) publisher.send(payload(i, 100));
    await slow.until(() => slow.data().length >= 2 + 400);
    stopThrottle();
    const indexes = slow.data().map((f) => f.payload).filter((p) => p[0] !== 0x7b).map(indexOf);
    assert.deepEqual(indexes, Array.from({ length: 400 }, (_, i) => i));
    assert.equal(slow.closeReceived(), undefined);
    slow.destroy();
    await publisher.close();
  } finally {
    assert.equal(await server.stop(), 0);
  }
});

test('replay (sqlite): 20 joiners that never read a 60 MB history do not multiply memory', T, async () => {
  const db = tempDb();
  const server = await startServer(['--limit', '200', '--history', `sqlite:${db.file}`]);
  try {
    await fill(server.url, 'heavy', 200, 300 * 1024); // 60 MB
    const before = rssBytes(server.proc.pid!);
    const joiners: RawClient[] = [];
    for (let i = 0; i < 20; i++) {
      const joiner = await RawClient.connect(server.port);
      joiner.socket.pause(); // never reads
      joiner.write(encodeFrame(Opcode.text, JSON.stringify({ uid: `lurker${i}`, channel: 'heavy' })));
      joiners.push(joiner);
    }
    // Every joiner is in: a newcomer that reads sees all 20 join frames at the end of the
    // history (the newest 200 entries).
    const probe = await TestClient.join(server.url, 'probe', 'heavy');
    const seen = await probe.waitFor(200);
    assert.equal(seen.filter((m) => m.text.includes('"lurker')).length, 20);
    const after = rssBytes(server.proc.pid!);
    const grown = (after - before) / 2 ** 20;
    // One copy of the history is 60 MB; 20 copies (the old behaviour) took over 1 GB.
    assert.ok(grown < 200, `RSS grew by ${grown.toFixed(0)} MiB for 20 joiners`);
    for (const joiner of joiners) joiner.destroy();
    await probe.close();
  } finally {
    assert.equal(await server.stop(), 0);
    db.remove();
  }
});

// Slow consumers never stall a channel (issue: "Slow consumers"): a member that stops reading
// costs the others nothing, is closed once its unsent bytes pass --max-buffered (or stay over a
// quarter of it without draining for the grace period), while a slow but steady reader is kept.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { startServer } from './helpers/server.js';
import { TestClient } from './helpers/client.js';
import { RawClient, Opcode, encodeFrame, type Frame } from './helpers/raw-ws.js';
import { createServer } from '../src/server.js';
import { MiB } from '../src/config.js';

const T = { timeout: 30_000 };

const joinFrame = (uid: string, channel: string): Buffer => encodeFrame(Opcode.text, JSON.stringify({ uid, channel }));

/** Message `i` of a publisher: its index, then padding up to `size` bytes. */
const message = (i: number, size: number): string => `${i}:`.padEnd(size, '.');
const indexOf = (data: Buffer | string): number => Number(data.toString().slice(0, 12).split(':')[0]);

/** The data frames a raw client received must be messages 0, 1, 2, ... in order. */
function assertInOrderPrefix(frames: Frame[]): void {
  frames.forEach((frame, i) => assert.equal(indexOf(frame.payload), i, `frame ${i} out of order`));
}

/**
 * Publishes `count` messages of `size` bytes in batches, waiting after each batch until `reader`
 * (a healthy member) has them all, so the healthy member itself never builds up a backlog.
 */
async function publishPaced(publisher: TestClient, reader: TestClient, count: number, size: number, batch: number, before = 0): Promise<void> {
  for (let i = 0; i < count; i++) {
    publisher.send(message(i, size));
    if ((i + 1) % batch === 0 || i === count - 1) await reader.waitFor(before + i + 1);
  }
}

/** A logger that keeps its JSON lines, so a test can read what the server said. */
function capturingLogger(lines: Array<Record<string, unknown>>): pino.Logger {
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  return pino({ level: 'warn' }, sink);
}

test('slow consumers: a stalled member does not delay the others, and is closed past --max-buffered', T, async () => {
  const server = await startServer(['--max-buffered', '256KiB']);
  try {
    const stalled = await RawClient.connect(server.port);
    stalled.write(joinFrame('stalled', 'slow'));
    stalled.socket.pause(); // stops reading: the server's unsent bytes for it pile up
    const healthy = await TestClient.join(server.url, 'healthy', 'slow');
    await healthy.waitFor(1); // the stalled member's join frame: it is a member
    const publisher = await TestClient.join(server.url, 'publisher', 'slow');

    const count = 5000;
    await publishPaced(publisher, healthy, count, 3000, 50, 1);
    const live = healthy.received.slice(1);
    assert.equal(live.length, count);
    live.forEach((m, i) => assert.equal(indexOf(m.data), i, `healthy member: message ${i} out of order`));

    await server.waitForLog('closing slow consumer');
    stalled.socket.resume();
    await stalled.until(() => stalled.closeReceived() !== undefined);
    assert.deepEqual(stalled.closeReceived(), { code: 1013, reason: 'slow consumer: send buffer full' });
    const got = stalled.data();
    assert.ok(got.length < count, `the stalled member was cut off (got ${got.length})`);
    assertInOrderPrefix(got);
    stalled.destroy();
    await Promise.all([healthy.close(), publisher.close()]);
  } finally {
    assert.equal(await server.stop(), 0);
  }
});

test('slow consumers: a member over a quarter of the bound that drains nothing for the grace period is closed', T, async () => {
  const lines: Array<Record<string, unknown>> = [];
  const maxBuffered = 4 * MiB;
  const server = await createServer({ port: 0, maxBuffered, slowConsumerGraceMs: 200, logger: capturingLogger(lines) });
  try {
    const stalled = await RawClient.connect(server.address.port);
    stalled.write(joinFrame('stalled', 'grace'));
    stalled.socket.pause();
    const healthy = await TestClient.join(server.address.url, 'healthy', 'grace');
    await healthy.waitFor(1);
    const publisher = await TestClient.join(server.address.url, 'publisher', 'grace');
    // About 4 MB/s: the kernel's socket buffers fill first, then the server's buffer grows past a
    // quarter of the bound and, at this pace, stays below the bound itself for longer than the grace.
    let sent = 0;
    while (server.endpoint.stats.slowConsumerCloses === 0) {
      assert.ok(sent < 5000, 'the stalled member was never closed');
      publisher.send(message(sent++, 8192));
      await healthy.waitFor(1 + sent);
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    const closing = lines.find((l) => l.msg === 'closing slow consumer');
    assert.ok(closing, 'the server logged the close');
    assert.equal(closing.uid, 'stalled');
    const buffered = closing.backlog as number;
    assert.ok(buffered > maxBuffered / 4 && buffered <= maxBuffered, `closed for stalling, not for size (${buffered})`);

    stalled.socket.resume();
    await stalled.until(() => stalled.closeReceived() !== undefined);
    assert.equal(stalled.closeReceived()!.code, 1013);
    assertInOrderPrefix(stalled.data());
    stalled.destroy();
    await Promise.all([healthy.close(), publisher.close()]);
  } finally {
    await server.close();
  }
});

test('slow consumers: a slow but steady reader of a burst of tens of MB is not closed', T, async () => {
  const lines: Array<Record<string, unknown>> = [];
  // Default bound (64 MiB), and a grace a tenth of the default: its buffer goes over a quarter
  // of the bound during the burst (with a grace of 1 ms this reader is closed), but it drains.
  const server = await createServer({ port: 0, slowConsumerGraceMs: 500, logger: capturingLogger(lines) });
  try {
    const slow = await RawClient.connect(server.address.port);
    slow.write(joinFrame('slow', 'burst'));
    const fast = await TestClient.join(server.address.url, 'fast', 'burst');
    await fast.waitFor(1);
    const stopThrottle = slow.throttle(32 * 1024, 1); // at most about 32 MB/s
    const publisher = await TestClient.join(server.address.url, 'publisher', 'burst');
    const count = 384;
    const size = 64 * 1024; // 24 MiB in all, sent as fast as the publisher can
    for (let i = 0; i < count; i++) publisher.send(message(i, size));
    await fast.waitFor(1 + count);
    await slow.until(() => slow.data().length >= count || slow.closeReceived() !== undefined);
    stopThrottle();
    assert.equal(slow.closeReceived(), undefined, 'not closed');
    assertInOrderPrefix(slow.data());
    assert.equal(slow.data().length, count);
    assert.equal(server.endpoint.stats.slowConsumerCloses, 0);
    assert.deepEqual(lines.filter((l) => l.msg === 'closing slow consumer'), []);
    slow.destroy();
    await Promise.all([fast.close(), publisher.close()]);
  } finally {
    await server.close();
  }
});

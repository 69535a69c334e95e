// Frame size limits (issue limits; spec 2 for the join frame): --max-message-size and the cap on
// the first frame.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type RunningServer } from './helpers/server.js';
import { TestClient } from './helpers/client.js';
import { MAX_JOIN_BYTES } from '../src/protocol/join.js';
import { MiB } from '../src/config.js';

const T = { timeout: 15_000 };

/** --max-message-size 1KiB, so a 1025-byte frame is too big. */
let small: RunningServer;

before(async () => {
  small = await startServer(['--max-message-size', '1KiB']);
});

after(async () => {
  assert.equal(await small.stop(), 0);
});

test('limits: --max-message-size: a frame of exactly the limit passes, one byte more closes with 1009', T, async () => {
  const listener = await TestClient.join(small.url, 'listener', 'size');
  const sender = await TestClient.join(small.url, 'sender', 'size');
  sender.send('x'.repeat(1024));
  assert.equal((await listener.waitFor(1))[0]!.data.length, 1024);
  sender.send('y'.repeat(1025));
  assert.equal((await sender.closed).code, 1009);

  const binarySender = await TestClient.join(small.url, 'binary', 'size');
  binarySender.send(Buffer.alloc(2000, 7));
  assert.equal((await binarySender.closed).code, 1009);

  // Neither oversized frame reached the listener: the next message is the next thing it gets.
  const other = await TestClient.join(small.url, 'other', 'size');
  other.send('after');
  const got = await listener.waitFor(2);
  assert.equal(got[1]!.text, 'after');
  await Promise.all([listener.close(), other.close()]);
  assert.equal(listener.received.length, 2);
});

test('limits: a join frame over --max-message-size closes with 1009 and joins nothing', T, async () => {
  const big = new TestClient(small.url);
  await big.opened();
  big.send(JSON.stringify({ uid: 'big', channel: 'size-join', padding: 'p'.repeat(2000) }));
  assert.equal((await big.closed).code, 1009);
  const first = await TestClient.join(small.url, 'first', 'size-join');
  const second = await TestClient.join(small.url, 'second', 'size-join');
  assert.equal(JSON.parse((await second.waitFor(1))[0]!.text).uid, 'first', 'history starts with the first valid join');
  await Promise.all([first.close(), second.close()]);
});

test('limits: the first frame is capped well below the message limit (1009 "join frame too big")', T, async () => {
  const server = await startServer();
  try {
    const big = new TestClient(server.url);
    await big.opened();
    big.send(JSON.stringify({ uid: 'big', channel: 'cap', padding: 'p'.repeat(MAX_JOIN_BYTES) }));
    assert.deepEqual(await big.closed, { code: 1009, reason: 'join frame too big' });

    // The default message limit is 8 MiB: exactly 8 MiB passes, one byte more does not.
    const listener = await TestClient.join(server.url, 'listener', 'cap');
    const sender = await TestClient.join(server.url, 'sender', 'cap');
    sender.send(Buffer.alloc(8 * MiB, 1));
    assert.equal((await listener.waitFor(1))[0]!.data.length, 8 * MiB);
    sender.send(Buffer.alloc(8 * MiB + 1, 2));
    assert.equal((await sender.closed).code, 1009);
    await listener.close();
  } finally {
    assert.equal(await server.stop(), 0);
  }
});

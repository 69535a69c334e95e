// What history holds is what it counts. A parser hands on a frame's payload as a view into the
// read that carried it (ws: the socket read, up to 64 KiB); kept as such in history, a message of
// 4 bytes would hold the whole read, beyond what --history-bytes and the per-message overhead
// count: a client could make history hold a thousand times its bytes. Real server, raw socket.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { createServer } from '../src/server.js';
import { encodeFrame, Opcode, RawClient } from './helpers/raw-ws.js';
import { frameOf } from '../src/net/frame.js';

test('a message kept in history owns its bytes: a few bytes that arrived with 60 KB hold a few bytes', async (t) => {
  const server = await createServer({ port: 0, history: 'memory', logger: pino({ level: 'silent' }) });
  t.after(() => server.close());
  const client = await RawClient.connect(server.address.port);
  t.after(() => client.socket.destroy());
  // One TCP write, so the server reads all three frames at once.
  client.write(
    encodeFrame(Opcode.text, JSON.stringify({ uid: 'hoarder', channel: 'kept' })),
    encodeFrame(Opcode.text, 'tiny'),
    encodeFrame(Opcode.binary, Buffer.alloc(60_000, 7)),
  );
  let history = await server.hub.store.read('kept');
  while (history.length < 3) {
    await new Promise((resolve) => setImmediate(resolve));
    history = await server.hub.store.read('kept');
  }
  assert.deepEqual(history.map((m) => m.data.length), [34, 4, 60_000]);
  // Its own bytes, and at most the header of the frame it is sent in (which it is a view of).
  for (const message of history) {
    assert.ok(message.data.buffer.byteLength <= message.data.length + 10, `a message of ${message.data.length} bytes holds ${message.data.buffer.byteLength}`);
  }
});

test('the frame a kept message is sent in holds its own bytes: frames of quiet channels pin no shared slab', async (t) => {
  const server = await createServer({ port: 0, history: 'memory', logger: pino({ level: 'silent' }) });
  t.after(() => server.close());
  const join = (uid: string): Promise<RawClient> => RawClient.connect(server.address.port).then((client) => {
    t.after(() => client.socket.destroy());
    client.write(encodeFrame(Opcode.text, JSON.stringify({ uid, channel: 'quiet' })));
    return client;
  });
  const [sender, reader] = [await join('sender'), await join('reader')];
  sender.write(encodeFrame(Opcode.text, 'hello'), encodeFrame(Opcode.binary, Buffer.alloc(20_000, 7)));
  await reader.until(() => reader.data().length === 3); // the sender's join frame and the two messages, each framed for delivery
  const history = await server.hub.store.read('quiet');
  assert.equal(history.length, 4);
  for (const message of history) {
    const frame = frameOf(message);
    for (const part of Array.isArray(frame) ? frame : [frame]) {
      assert.ok(part.buffer.byteLength <= part.length, `a frame part of ${part.length} bytes holds ${part.buffer.byteLength}`);
    }
    assert.ok(message.data.buffer.byteLength <= message.data.length + 10, `a message of ${message.data.length} bytes holds ${message.data.buffer.byteLength}`);
  }
});

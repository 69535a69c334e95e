// The pre-framed fan-out path (src/net/frame.ts) must produce frames any RFC 6455 client parses:
// checked with ws's own receiver at every length-encoding boundary, text and binary.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import * as wsModule from 'ws';
import { frameOf, keptMessage } from '../src/net/frame.js';

// ws's frame parser; @types/ws does not declare it.
type ReceiverLike = EventEmitter & { write(chunk: Buffer): void };
const { Receiver } = wsModule as unknown as { Receiver: new (options: object) => ReceiverLike };

function parse(bytes: Buffer): Promise<{ data: Buffer; binary: boolean }> {
  return new Promise((resolve, reject) => {
    const receiver = new Receiver({ isServer: false, binaryType: 'nodebuffer' });
    receiver.on('message', (data: Buffer, binary: boolean) => resolve({ data, binary }));
    receiver.on('error', reject);
    receiver.write(bytes);
  });
}

for (const length of [0, 1, 125, 126, 127, 16 * 1024, 16 * 1024 + 1, 65_535, 65_536, 200_000]) {
  for (const binary of [false, true]) {
    test(`RFC 6455 5.2: a ${length}-byte ${binary ? 'binary' : 'text'} message frames correctly`, async () => {
      const data = Buffer.alloc(length, binary ? 0xab : 0x61);
      const message = { data, binary };
      const frame = frameOf(message);
      assert.equal(frameOf(message), frame, 'framed once, then reused');
      const bytes = Array.isArray(frame) ? Buffer.concat(frame) : frame;
      const parsed = await parse(bytes);
      assert.equal(parsed.binary, binary);
      assert.ok(parsed.data.equals(data));
    });
  }
}

test('keptMessage: one copy, into its frame, which holds nothing else; the payload is a view of it', async () => {
  const read = Buffer.from('xx{"uid":"a","channel":"b"}yy'); // a view into a larger read, as ws hands it on
  const view = read.subarray(2, read.length - 2);
  const kept = keptMessage({ data: view, binary: false });
  assert.ok(kept.data.equals(view));
  const frame = frameOf(kept);
  assert.equal(frameOf(kept), frame, 'framed once, then reused');
  assert.ok(!Array.isArray(frame));
  assert.equal(frame.buffer, kept.data.buffer, 'the payload is a view of its frame');
  assert.equal(frame.buffer.byteLength, frame.length, 'a frame of its own, not a view of the read or of a shared slab');
  const parsed = await parse(frame as Buffer);
  assert.ok(parsed.data.equals(view));
  assert.equal(parsed.binary, false);
});

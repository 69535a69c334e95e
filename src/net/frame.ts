// The fan-out fast path: a message is framed once, however many members receive it, and each
// socket's frames of one event-loop turn leave in one write.
//
// `ws` frames every send() anew and issues a write per frame; at a fan-out of 100 that cost,
// not the protocol, dominates. Server-to-client frames are unmasked, so the same bytes serve
// every recipient. Sockets are corked on their first frame of a turn and uncorked together in
// a setImmediate, which turns a burst into a single writev per socket.

import type { Socket } from 'node:net';
import { ownedMessage, type Message } from '../store/store.js';

const FIN = 0x80;
const OPCODE_TEXT = 0x1;
const OPCODE_BINARY = 0x2;
/** Payloads up to this size are copied behind their header once, so each recipient is one write. */
const COPY_LIMIT = 16 * 1024;

const frameKey = Symbol('frame');
type Framed = Message & { [frameKey]?: Buffer | [Buffer, Buffer] };

/**
 * A frame for `length` payload bytes of which `copied` follow its header in the same buffer (0:
 * the header alone). Memory of its own, not a slice of Buffer's shared pool: a frame lives as
 * long as its message, which history may keep for days, and a pool slice would keep the whole
 * 8 KiB slab it was cut from alive with it.
 */
function frameBuffer(length: number, binary: boolean, copied: number): Buffer {
  const size = length < 126 ? 2 : length < 65_536 ? 4 : 10;
  const out = Buffer.allocUnsafeSlow(size + copied);
  out[0] = FIN | (binary ? OPCODE_BINARY : OPCODE_TEXT);
  if (size === 2) {
    out[1] = length;
  } else if (size === 4) {
    out[1] = 126;
    out.writeUInt16BE(length, 2);
  } else {
    out[1] = 127;
    out.writeUInt32BE(Math.floor(length / 2 ** 32), 2);
    out.writeUInt32BE(length >>> 0, 6);
  }
  return out;
}

/** `data` copied behind its header: one buffer, one write per recipient. */
function copiedFrame(data: Buffer, binary: boolean): Buffer {
  const frame = frameBuffer(data.length, binary, data.length);
  data.copy(frame, frame.length - data.length);
  return frame;
}

/** The message as one WebSocket frame (header + payload), built on first use and kept. */
export function frameOf(message: Message): Buffer | [Buffer, Buffer] {
  const framed = message as Framed;
  let frame = framed[frameKey];
  if (frame === undefined) {
    const { data, binary } = message;
    frame = data.length <= COPY_LIMIT ? copiedFrame(data, binary) : [frameBuffer(data.length, binary, 0), data];
    framed[frameKey] = frame;
  }
  return frame;
}

/**
 * `message` as the hub keeps it (history, members' queues), apart from the read it arrived in.
 * Up to COPY_LIMIT it is copied once, into its frame, and its payload is a view of that: one
 * allocation for both, which no other buffer shares. Bigger ones keep a payload of their own
 * (ownedMessage: not copied if it owns its memory already) and are framed at their first send;
 * their frame's key is made now all the same (added later, it would cost a property store).
 */
export function keptMessage(message: Message): Message {
  const { data, binary } = message;
  if (data.length > COPY_LIMIT) {
    const kept: Framed = { data: ownedMessage(message).data, binary, [frameKey]: undefined };
    return kept;
  }
  const frame = copiedFrame(data, binary);
  const kept: Framed = { data: frame.subarray(frame.length - data.length), binary, [frameKey]: frame };
  return kept;
}

const corked: Socket[] = [];
let flushScheduled = false;

function uncorkAll(): void {
  flushScheduled = false;
  for (const socket of corked.splice(0)) socket.uncork();
}

/** Queues `message` on `socket` as a frame; the socket is flushed at the end of this turn. */
export function writeFrame(socket: Socket, message: Message): void {
  if (socket.writableCorked === 0) {
    socket.cork();
    corked.push(socket);
    if (!flushScheduled) {
      flushScheduled = true;
      setImmediate(uncorkAll);
    }
  }
  const frame = frameOf(message);
  if (Array.isArray(frame)) {
    socket.write(frame[0]);
    socket.write(frame[1]);
  } else {
    socket.write(frame);
  }
}

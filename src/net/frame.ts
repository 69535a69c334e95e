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

/** Frames are cut from slabs of this size; larger ones get memory of their own. */
const SLAB_BYTES = 8 * 1024;
let slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
let slabUsed = 0;

/**
 * Memory for a frame. A frame lives as long as its message, which history may keep for days, so
 * it is not cut from Buffer's shared pool: there the short-lived buffers allocated around it (a
 * replay's coalesced write, say) would leave it holding a mostly dead 8 KiB slab. Cut from slabs
 * that hold frames alone, they sit densely, and a slab goes once its messages have.
 */
function frameMemory(size: number): Buffer {
  if (size > SLAB_BYTES / 2) return Buffer.allocUnsafeSlow(size);
  if (slabUsed + size > SLAB_BYTES) {
    slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
    slabUsed = 0;
  }
  slabUsed += size;
  return slab.subarray(slabUsed - size, slabUsed);
}

function header(length: number, binary: boolean, extra: number): Buffer {
  const size = length < 126 ? 2 : length < 65_536 ? 4 : 10;
  const out = frameMemory(size + extra);
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

/** The message as one WebSocket frame (header + payload), built on first use and kept. */
export function frameOf(message: Message): Buffer | [Buffer, Buffer] {
  const framed = message as Framed;
  let frame = framed[frameKey];
  if (frame === undefined) {
    const { data, binary } = message;
    if (data.length <= COPY_LIMIT) {
      const out = header(data.length, binary, data.length);
      data.copy(out, out.length - data.length);
      frame = out;
    } else {
      frame = [header(data.length, binary, 0), data];
    }
    framed[frameKey] = frame;
  }
  return frame;
}

/**
 * `message` as the hub keeps it: ownedMessage's copy, made with room for its frame. A Message
 * framed only later, at its first delivery, would get a property store of its own for it (40
 * bytes more per message in history).
 */
export function keptMessage(message: Message): Message {
  const { data, binary } = ownedMessage(message);
  const kept: Framed = { data, binary, [frameKey]: undefined };
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

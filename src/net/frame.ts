// The fan-out fast path: a message is framed once, however many members receive it, and each
// socket's frames of one event-loop turn leave in one write.
//
// `ws` frames every send() anew and issues a write per frame; at a fan-out of 100 that cost,
// not the protocol, dominates. Server-to-client frames are unmasked, so the same bytes serve
// every recipient. Sockets are corked on their first frame of a turn and uncorked together in
// a setImmediate, which turns a burst into a single writev per socket.

import type { Socket } from 'node:net';
import type { Message } from '../store/store.js';

const FIN = 0x80;
const OPCODE_TEXT = 0x1;
const OPCODE_BINARY = 0x2;
/** Payloads up to this size are copied behind their header once, so each recipient is one write. */
const COPY_LIMIT = 16 * 1024;

const frameKey = Symbol('frame');
type Framed = Message & { [frameKey]?: Buffer | [Buffer, Buffer] };

function header(length: number, binary: boolean, extra: number): Buffer {
  const size = length < 126 ? 2 : length < 65_536 ? 4 : 10;
  const out = Buffer.allocUnsafe(size + extra);
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

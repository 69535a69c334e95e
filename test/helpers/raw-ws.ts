// A WebSocket client written by hand on a TCP socket, for what a library client hides: the exact
// HTTP answer to an upgrade, several frames in one TCP write, invalid frames, and a reader that
// stops reading the socket altogether.

import net from 'node:net';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';

export const Opcode = { continuation: 0, text: 1, binary: 2, close: 8, ping: 9, pong: 10 } as const;

export interface Frame {
  opcode: number;
  payload: Buffer;
}

export interface HttpAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** A masked client frame (RFC 6455 section 5.2). */
export function encodeFrame(opcode: number, payload: Buffer | string, fin = true): Buffer {
  const data = typeof payload === 'string' ? Buffer.from(payload) : payload;
  const length = data.length;
  const extra = length < 126 ? 0 : length < 65_536 ? 2 : 8;
  const header = Buffer.alloc(2 + extra + 4);
  header[0] = (fin ? 0x80 : 0) | opcode;
  if (extra === 0) header[1] = 0x80 | length;
  else if (extra === 2) {
    header[1] = 0x80 | 126;
    header.writeUInt16BE(length, 2);
  } else {
    header[1] = 0x80 | 127;
    header.writeBigUInt64BE(BigInt(length), 2);
  }
  const mask = randomBytes(4);
  mask.copy(header, 2 + extra);
  const masked = Buffer.alloc(length);
  for (let i = 0; i < length; i++) masked[i] = data[i]! ^ mask[i & 3]!;
  return Buffer.concat([header, masked]);
}

export function closeFrame(code: number, reason = ''): Buffer {
  const payload = Buffer.alloc(2 + Buffer.byteLength(reason));
  payload.writeUInt16BE(code, 0);
  payload.write(reason, 2);
  return encodeFrame(Opcode.close, payload);
}

/** The close code and reason carried by a close frame's payload. */
export function parseClose(payload: Buffer): { code: number; reason: string } {
  return payload.length < 2
    ? { code: 1005, reason: '' }
    : { code: payload.readUInt16BE(0), reason: payload.subarray(2).toString() };
}

function upgradeRequest(port: number, protocol: string | undefined, path: string): string {
  return (
    `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n` +
    (protocol === undefined ? '' : `Sec-WebSocket-Protocol: ${protocol}\r\n`) +
    '\r\n'
  );
}

function parseHead(head: string): { status: number; headers: Record<string, string> } {
  const [statusLine, ...lines] = head.split('\r\n');
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { status: Number(statusLine!.split(' ')[1]), headers };
}

/**
 * Sends an upgrade request (plus `after`, raw bytes written in the same TCP write) and returns
 * the server's whole HTTP answer; for upgrades the server refuses.
 */
export async function refusedUpgrade(port: number, protocol: string | undefined, after: Buffer = Buffer.alloc(0)): Promise<HttpAnswer> {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => {});
  await once(socket, 'connect');
  socket.write(Buffer.concat([Buffer.from(upgradeRequest(port, protocol, '/')), after]));
  const chunks: Buffer[] = [];
  socket.on('data', (d: Buffer) => chunks.push(d));
  await once(socket, 'close');
  const text = Buffer.concat(chunks).toString();
  const end = text.indexOf('\r\n\r\n');
  return { ...parseHead(text.slice(0, end)), body: text.slice(end + 4) };
}

export class RawClient {
  readonly frames: Frame[] = [];
  /** Resolves when the TCP connection is gone. */
  readonly ended: Promise<void>;
  private buffer: Buffer = Buffer.alloc(0);
  private waiters: Array<() => void> = [];

  private constructor(readonly socket: net.Socket, readonly protocol: string) {
    this.ended = new Promise((resolve) => socket.once('close', () => {
      resolve();
      this.wake();
    }));
  }

  /** Opens a WebSocket with the Mles subprotocol; fails unless the server answers 101. */
  static async connect(port: number, protocol = 'mles-websocket', path = '/'): Promise<RawClient> {
    const socket = net.connect(port, '127.0.0.1');
    socket.on('error', () => {});
    await once(socket, 'connect');
    socket.write(upgradeRequest(port, protocol, path));
    let head = Buffer.alloc(0);
    for (;;) {
      const [chunk] = (await once(socket, 'data')) as [Buffer];
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) continue;
      socket.pause();
      const answer = parseHead(head.subarray(0, end).toString());
      if (answer.status !== 101) throw new Error(`upgrade refused: ${head.toString()}`);
      const client = new RawClient(socket, answer.headers['sec-websocket-protocol'] ?? '');
      client.onData(head.subarray(end + 4));
      socket.on('data', (d: Buffer) => client.onData(d));
      socket.resume();
      return client;
    }
  }

  /** Writes all `frames` in one TCP write, so the server receives them in one read. */
  write(...frames: Buffer[]): void {
    this.socket.write(Buffer.concat(frames));
  }

  /** Data frames (text and binary) received so far. */
  data(): Frame[] {
    return this.frames.filter((f) => f.opcode === Opcode.text || f.opcode === Opcode.binary);
  }

  /** The code and reason of the server's close frame, once it arrived. */
  closeReceived(): { code: number; reason: string } | undefined {
    const frame = this.frames.find((f) => f.opcode === Opcode.close);
    return frame && parseClose(frame.payload);
  }

  /** Waits until `done()` holds, or fails if the connection ends first. */
  async until(done: () => boolean): Promise<void> {
    while (!done()) {
      if (this.socket.destroyed) throw new Error(`connection ended after ${this.frames.length} frames`);
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  /**
   * From now on reads at most `bytes` every `everyMs`: a reader that keeps reading, slowly.
   * Returns a function that lets it read at full speed again.
   */
  throttle(bytes: number, everyMs: number): () => void {
    this.socket.pause();
    // In paused mode read(n) hands the chunk to the 'data' listener and refills from the socket.
    const timer = setInterval(() => this.socket.read(Math.min(bytes, this.socket.readableLength)), everyMs);
    return () => {
      clearInterval(timer);
      this.socket.resume();
    };
  }

  destroy(): void {
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    for (;;) {
      const frame = this.nextFrame();
      if (!frame) break;
      this.frames.push(frame);
    }
    this.wake();
  }

  /** Parses one unmasked server frame off the buffer (servers send unfragmented frames here). */
  private nextFrame(): Frame | undefined {
    const b = this.buffer;
    if (b.length < 2) return undefined;
    let length = b[1]! & 0x7f;
    let offset = 2;
    if (length === 126) {
      if (b.length < 4) return undefined;
      length = b.readUInt16BE(2);
      offset = 4;
    } else if (length === 127) {
      if (b.length < 10) return undefined;
      length = Number(b.readBigUInt64BE(2));
      offset = 10;
    }
    if (b.length < offset + length) return undefined;
    this.buffer = b.subarray(offset + length);
    return { opcode: b[0]! & 0x0f, payload: b.subarray(offset, offset + length) };
  }

  private wake(): void {
    for (const waiter of this.waiters.splice(0)) waiter();
  }
}

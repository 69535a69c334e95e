// The bytes every benchmark message carries, identical for every target: a kind marker, the
// publisher, its sequence number and the send time, as fixed-width ASCII hex so that the same
// payload travels as a binary frame, an MQTT payload or a Socket.IO string.
//
//   offset 0  "MB" data | "MP" probe (readiness check, not measured)
//          2  publisher id, 6 hex digits
//          8  sequence number, 8 hex digits
//         16  send time in µs on the shared monotonic clock, 12 hex digits
//         28  '.' padding up to the payload size

export const HEADER_BYTES = 28;

export type Kind = 'data' | 'probe';

export interface Decoded {
  kind: Kind;
  publisher: number;
  seq: number;
  sentUs: number;
}

const M = 0x4d;
const B = 0x42;
const P = 0x50;

// performance.now() has a per-process origin; hrtime is CLOCK_MONOTONIC, shared by every process
// on the machine. One offset per process gives a cheap clock comparable across processes.
const offsetMs = Number(process.hrtime.bigint()) / 1e6 - performance.now();

/** Microseconds on a clock shared by all processes of this machine. */
export function clockUs(): number {
  return (performance.now() + offsetMs) * 1000;
}

function writeHex(buf: Buffer, offset: number, digits: number, value: number): void {
  for (let i = offset + digits - 1; i >= offset; i--) {
    const nibble = value % 16;
    buf[i] = nibble < 10 ? 48 + nibble : 87 + nibble;
    value = Math.floor(value / 16);
  }
}

function readHex(buf: Uint8Array, offset: number, digits: number): number {
  let value = 0;
  for (let i = offset; i < offset + digits; i++) {
    const c = buf[i]!;
    value = value * 16 + (c <= 57 ? c - 48 : c - 87);
  }
  return value;
}

/** A new payload of `size` bytes (at least HEADER_BYTES), stamped with the current time. */
export function encode(kind: Kind, publisher: number, seq: number, size: number): Buffer {
  const buf = Buffer.allocUnsafe(Math.max(size, HEADER_BYTES));
  buf[0] = M;
  buf[1] = kind === 'data' ? B : P;
  writeHex(buf, 2, 6, publisher);
  writeHex(buf, 8, 8, seq);
  writeHex(buf, 16, 12, Math.round(clockUs()));
  buf.fill(46, HEADER_BYTES);
  return buf;
}

/** The header of a benchmark payload, or undefined for anything else (join frames, history). */
export function decode(buf: Uint8Array): Decoded | undefined {
  if (buf.length < HEADER_BYTES || buf[0] !== M || (buf[1] !== B && buf[1] !== P)) return undefined;
  return {
    kind: buf[1] === B ? 'data' : 'probe',
    publisher: readHex(buf, 2, 6),
    seq: readHex(buf, 8, 8),
    sentUs: readHex(buf, 16, 12),
  };
}

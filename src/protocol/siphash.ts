// SipHash-2-4 (Aumasson & Bernstein), the hash Mles uses for auth and for deduplication.
// Pure TypeScript on 32-bit halves so it runs unchanged in Node and in browsers, and fast
// enough for per-message dedup (no BigInt arithmetic on the hot path).

const ZERO_KEY = new Uint8Array(16);

// The state is four 64-bit words kept as [lo, hi] pairs: v0 = s[0],s[1]; v1 = s[2],s[3]; ...
type State = Uint32Array;

function add(s: State, a: number, b: number): void {
  const lo = (s[a]! + s[b]!) >>> 0;
  s[a + 1] = (s[a + 1]! + s[b + 1]! + (lo < s[a]! ? 1 : 0)) >>> 0;
  s[a] = lo;
}

function rotl(s: State, a: number, n: number): void {
  let lo = s[a]!;
  let hi = s[a + 1]!;
  if (n >= 32) {
    [lo, hi] = [hi, lo];
    n -= 32;
  }
  if (n > 0) {
    const newLo = ((lo << n) | (hi >>> (32 - n))) >>> 0;
    hi = ((hi << n) | (lo >>> (32 - n))) >>> 0;
    lo = newLo;
  }
  s[a] = lo;
  s[a + 1] = hi;
}

function xor(s: State, a: number, b: number): void {
  s[a] = (s[a]! ^ s[b]!) >>> 0;
  s[a + 1] = (s[a + 1]! ^ s[b + 1]!) >>> 0;
}

const V0 = 0, V1 = 2, V2 = 4, V3 = 6;

function sipRound(s: State): void {
  add(s, V0, V1); rotl(s, V1, 13); xor(s, V1, V0); rotl(s, V0, 32);
  add(s, V2, V3); rotl(s, V3, 16); xor(s, V3, V2);
  add(s, V0, V3); rotl(s, V3, 21); xor(s, V3, V0);
  add(s, V2, V1); rotl(s, V1, 17); xor(s, V1, V2); rotl(s, V2, 32);
}

function readLE32(b: Uint8Array, i: number): number {
  return (b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16) | (b[i + 3]! << 24)) >>> 0;
}

/** SipHash-2-4 of `msg` under a 16-byte `key`, as [lo, hi] 32-bit halves of the 64-bit result. */
export function siphash24Words(msg: Uint8Array, key: Uint8Array = ZERO_KEY): [number, number] {
  const k0lo = readLE32(key, 0), k0hi = readLE32(key, 4);
  const k1lo = readLE32(key, 8), k1hi = readLE32(key, 12);
  const s: State = new Uint32Array([
    (k0lo ^ 0x70736575) >>> 0, (k0hi ^ 0x736f6d65) >>> 0,
    (k1lo ^ 0x6e646f6d) >>> 0, (k1hi ^ 0x646f7261) >>> 0,
    (k0lo ^ 0x6e657261) >>> 0, (k0hi ^ 0x6c796765) >>> 0,
    (k1lo ^ 0x79746573) >>> 0, (k1hi ^ 0x74656462) >>> 0,
    0, 0, // scratch word m at index 8
  ]);
  const M = 8;
  const whole = msg.length - (msg.length % 8);
  const compress = (): void => {
    xor(s, V3, M);
    sipRound(s);
    sipRound(s);
    xor(s, V0, M);
  };
  for (let i = 0; i < whole; i += 8) {
    s[M] = readLE32(msg, i);
    s[M + 1] = readLE32(msg, i + 4);
    compress();
  }
  // Last block: remaining bytes little-endian, message length (mod 256) in the top byte.
  const tail = new Uint8Array(8);
  tail.set(msg.subarray(whole));
  tail[7] = msg.length & 0xff;
  s[M] = readLE32(tail, 0);
  s[M + 1] = readLE32(tail, 4);
  compress();
  s[V2] = (s[V2]! ^ 0xff) >>> 0;
  for (let i = 0; i < 4; i++) sipRound(s);
  const lo = (s[0]! ^ s[2]! ^ s[4]! ^ s[6]!) >>> 0;
  const hi = (s[1]! ^ s[3]! ^ s[5]! ^ s[7]!) >>> 0;
  return [lo, hi];
}

/** SipHash-2-4 as 16 lower-case hex digits (the form Mles clients send as `auth`). */
export function siphash24Hex(msg: Uint8Array, key: Uint8Array = ZERO_KEY): string {
  const [lo, hi] = siphash24Words(msg, key);
  return hi.toString(16).padStart(8, '0') + lo.toString(16).padStart(8, '0');
}

/**
 * A number that identifies a payload for dedup sets: the 64-bit hash folded to 53 bits so it
 * is an exact JS number (a Set of numbers is far cheaper than a Set of strings or bigints).
 */
export function siphash24Key(msg: Uint8Array): number {
  const [lo, hi] = siphash24Words(msg);
  return (hi & 0x1fffff) * 0x100000000 + lo;
}

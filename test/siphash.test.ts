// SipHash-2-4 (spec 2, Authentication) checked against the published vectors and against an
// independent reference written here with BigInt arithmetic, straight from the paper.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { siphash24Hex, siphash24Key, siphash24Words } from '../src/protocol/siphash.js';
import { authHash } from '../src/protocol/join.js';

const MASK64 = (1n << 64n) - 1n;

function rotl(x: bigint, bits: bigint): bigint {
  return ((x << bits) | (x >> (64n - bits))) & MASK64;
}

function readU64LE(bytes: Uint8Array, offset: number): bigint {
  let value = 0n;
  for (let i = 7; i >= 0; i--) value = (value << 8n) | BigInt(bytes[offset + i] ?? 0);
  return value;
}

/** SipHash-2-4 as the paper defines it, on 64-bit BigInt words. */
function referenceSipHash(key: Uint8Array, message: Uint8Array): bigint {
  const k0 = readU64LE(key, 0);
  const k1 = readU64LE(key, 8);
  let v0 = k0 ^ 0x736f6d6570736575n;
  let v1 = k1 ^ 0x646f72616e646f6dn;
  let v2 = k0 ^ 0x6c7967656e657261n;
  let v3 = k1 ^ 0x7465646279746573n;
  const round = (): void => {
    v0 = (v0 + v1) & MASK64; v1 = rotl(v1, 13n); v1 ^= v0; v0 = rotl(v0, 32n);
    v2 = (v2 + v3) & MASK64; v3 = rotl(v3, 16n); v3 ^= v2;
    v0 = (v0 + v3) & MASK64; v3 = rotl(v3, 21n); v3 ^= v0;
    v2 = (v2 + v1) & MASK64; v1 = rotl(v1, 17n); v1 ^= v2; v2 = rotl(v2, 32n);
  };
  const absorb = (m: bigint): void => {
    v3 ^= m;
    round();
    round();
    v0 ^= m;
  };
  const blocks = Math.floor(message.length / 8);
  for (let i = 0; i < blocks; i++) absorb(readU64LE(message, i * 8));
  const tail = new Uint8Array(8);
  tail.set(message.subarray(blocks * 8));
  absorb(readU64LE(tail, 0) | (BigInt(message.length % 256) << 56n));
  v2 ^= 0xffn;
  for (let i = 0; i < 4; i++) round();
  return v0 ^ v1 ^ v2 ^ v3;
}

const hex16 = (value: bigint): string => value.toString(16).padStart(16, '0');
const sequence = (length: number): Uint8Array => Uint8Array.from({ length }, (_, i) => i);
const KEY_00_0F = sequence(16);
const ZERO_KEY = new Uint8Array(16);

test('spec 2: SipHash reference vector, key 00..0f, message 00..0e -> a129ca6149be45e5', () => {
  assert.equal(siphash24Hex(sequence(15), KEY_00_0F), 'a129ca6149be45e5');
  assert.equal(hex16(referenceSipHash(KEY_00_0F, sequence(15))), 'a129ca6149be45e5');
});

test('spec 2: SipHash of the empty message under key 00..0f is the paper\'s first vector', () => {
  assert.equal(siphash24Hex(new Uint8Array(0), KEY_00_0F), '726fdb47dd0e0e31');
});

test('spec 2: every message length 0..15 (key 00..0f) matches the BigInt reference', () => {
  for (let length = 0; length <= 15; length++) {
    const message = sequence(length);
    assert.equal(siphash24Hex(message, KEY_00_0F), hex16(referenceSipHash(KEY_00_0F, message)), `length ${length}`);
  }
});

test('spec 2: zero key, lengths 0..64 and past 255 bytes (length byte wraps) match the reference', () => {
  const lengths = [...Array.from({ length: 65 }, (_, i) => i), 255, 256, 257, 1000];
  for (const length of lengths) {
    // Bytes with high bits set exercise the carries of the 32-bit halves.
    const message = Uint8Array.from({ length }, (_, i) => (i * 167 + 89) & 0xff);
    assert.equal(siphash24Hex(message, ZERO_KEY), hex16(referenceSipHash(ZERO_KEY, message)), `length ${length}`);
    assert.equal(siphash24Hex(message), siphash24Hex(message, ZERO_KEY), 'the default key is all zero');
  }
});

test('spec 2: the words, hex and dedup key are the same 64-bit value', () => {
  const message = new TextEncoder().encode('a payload to deduplicate');
  const expected = referenceSipHash(ZERO_KEY, message);
  const [lo, hi] = siphash24Words(message);
  assert.equal((BigInt(hi) << 32n) | BigInt(lo), expected);
  assert.equal(siphash24Hex(message), hex16(expected));
  assert.equal(BigInt(siphash24Key(message)), expected & ((1n << 53n) - 1n));
  assert.ok(Number.isSafeInteger(siphash24Key(message)));
});

test('spec 2: auth test vectors (zero key over uid ‖ channel ‖ MLES_KEY)', () => {
  const vectors: Array<[string, string, string | undefined, string]> = [
    ['alice', 'example', undefined, '9b3b95527f7c2d80'],
    ['alice', 'example', 'secret', 'afa46b8689dae7a5'],
    ['bob', 'example', 'secret', '6f862a3096e7c765'],
    ['', '', undefined, '1e924b9d737700d7'],
  ];
  for (const [uid, channel, key, auth] of vectors) {
    assert.equal(authHash(uid, channel, key), auth, `${uid}/${channel}/${key}`);
    const bytes = new TextEncoder().encode(uid + channel + (key ?? ''));
    assert.equal(hex16(referenceSipHash(ZERO_KEY, bytes)), auth);
  }
});

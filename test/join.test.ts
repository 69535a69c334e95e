// parseJoin (spec 2): the first frame's validation, auth and the session identity; and the proof
// that a `peer` join comes from a server sharing MLES_PEER_KEY (issue 11, finding 10).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseJoin, sessionKey, authHash, linkJoinFrame, MAX_JOIN_BYTES, type JoinResult } from '../src/protocol/join.js';
import { peerProof, provesPeer } from '../src/protocol/peer-proof.js';
import { CloseCode } from '../src/protocol/close-codes.js';

const text = (value: unknown): Buffer => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value));

function refused(result: JoinResult): { code: number; reason: string } {
  assert.equal(result.ok, false, 'expected the join to be refused');
  return (result as Extract<JoinResult, { ok: false }>).close;
}

function accepted(result: JoinResult): Extract<JoinResult, { ok: true }>['join'] {
  assert.ok(result.ok, `expected the join to be accepted, got ${JSON.stringify(result)}`);
  return result.join;
}

test('spec 2: a valid join keeps uid, channel, auth and the exact frame text', () => {
  const frame = Buffer.from('{ "uid": "alice",\n "channel": "example", "extra": [1, 2] }');
  const join = accepted(parseJoin(frame, false, undefined));
  assert.equal(join.uid, 'alice');
  assert.equal(join.channel, 'example');
  assert.equal(join.auth, undefined);
  assert.equal(join.text, frame, 'the join frame goes into history byte for byte');
});

test('spec 2: a binary first frame is refused with 1003', () => {
  const close = refused(parseJoin(text({ uid: 'a', channel: 'c' }), true, undefined));
  assert.equal(close.code, CloseCode.unsupportedData);
  assert.match(close.reason, /text/);
});

test('spec 2: malformed first frames are refused with 1007 and a reason', () => {
  const cases: Array<[string, string | object, RegExp]> = [
    ['invalid JSON', '{"uid": "a", "channel": ', /not JSON/],
    ['empty frame', '', /not JSON/],
    ['JSON array', [{ uid: 'a', channel: 'c' }], /not a JSON object/],
    ['JSON string', '"hello"', /not a JSON object/],
    ['JSON null', 'null', /not a JSON object/],
    ['missing uid', { channel: 'c' }, /missing uid/],
    ['missing channel', { uid: 'a' }, /missing channel/],
    ['empty uid', { uid: '', channel: 'c' }, /empty uid/],
    ['empty channel', { uid: 'a', channel: '' }, /empty channel/],
    ['non-ASCII uid', { uid: 'käyttäjä', channel: 'c' }, /uid must be ASCII/],
    ['non-ASCII channel', { uid: 'a', channel: 'kanava🙂' }, /channel must be ASCII/],
    ['escaped non-ASCII uid', '{"uid": "\\u00e9", "channel": "c"}', /uid must be ASCII/],
    ['numeric uid', { uid: 5, channel: 'c' }, /uid must be a string/],
    ['null channel', { uid: 'a', channel: null }, /channel must be a string/],
    ['object channel', { uid: 'a', channel: { name: 'c' } }, /channel must be a string/],
    ['numeric auth', { uid: 'a', channel: 'c', auth: 123 }, /auth must be a string/],
  ];
  for (const [name, frame, reason] of cases) {
    const close = refused(parseJoin(text(frame), false, undefined));
    assert.equal(close.code, CloseCode.invalidPayload, name);
    assert.match(close.reason, reason, name);
    assert.ok(Buffer.byteLength(close.reason) <= 123, 'a close reason fits a control frame');
  }
});

test('spec 2: a join frame over the first-frame cap is refused with 1009 before parsing', () => {
  const padding = 'x'.repeat(MAX_JOIN_BYTES);
  const close = refused(parseJoin(text({ uid: 'a', channel: 'c', padding }), false, undefined));
  assert.equal(close.code, CloseCode.messageTooBig);
});

test('spec 2: without MLES_KEY auth is optional but must match the unkeyed hash', () => {
  accepted(parseJoin(text({ uid: 'alice', channel: 'example' }), false, undefined));
  const join = accepted(parseJoin(text({ uid: 'alice', channel: 'example', auth: '9b3b95527f7c2d80' }), false, undefined));
  assert.equal(join.auth, '9b3b95527f7c2d80');
  for (const auth of ['afa46b8689dae7a5', '0000000000000000', '', 'not hex at all!', '9b3b95527f7c2d8000']) {
    const close = refused(parseJoin(text({ uid: 'alice', channel: 'example', auth }), false, undefined));
    assert.equal(close.code, CloseCode.policyViolation, auth);
    assert.equal(close.reason, 'auth failed');
  }
});

test('spec 2: with MLES_KEY auth is required and keyed (test vectors)', () => {
  accepted(parseJoin(text({ uid: 'alice', channel: 'example', auth: 'afa46b8689dae7a5' }), false, 'secret'));
  accepted(parseJoin(text({ uid: 'bob', channel: 'example', auth: '6f862a3096e7c765' }), false, 'secret'));
  const wrong: Array<Record<string, unknown>> = [
    { uid: 'alice', channel: 'example' },
    { uid: 'alice', channel: 'example', auth: '9b3b95527f7c2d80' },
    { uid: 'bob', channel: 'example', auth: 'afa46b8689dae7a5' },
    { uid: 'alice', channel: 'other', auth: 'afa46b8689dae7a5' },
  ];
  for (const frame of wrong) {
    const close = refused(parseJoin(text(frame), false, 'secret'));
    assert.equal(close.code, CloseCode.policyViolation, JSON.stringify(frame));
  }
});

test('spec 2: auth hex is parsed case-insensitively', () => {
  accepted(parseJoin(text({ uid: 'alice', channel: 'example', auth: 'AFA46B8689DAE7A5' }), false, 'secret'));
  accepted(parseJoin(text({ uid: 'alice', channel: 'example', auth: '9B3b95527F7c2D80' }), false, undefined));
});

test('spec 2: auth of a hash with leading zero digits compares by value', () => {
  // Find a uid whose hash starts with a zero digit, then send it without that digit.
  let uid = '';
  for (let i = 0; !authHash(uid, 'c').startsWith('0'); i++) uid = `u${i}`;
  const full = authHash(uid, 'c');
  accepted(parseJoin(text({ uid, channel: 'c', auth: full }), false, undefined));
  accepted(parseJoin(text({ uid, channel: 'c', auth: full.replace(/^0+/, '') }), false, undefined));
});

test('spec 2: the session identity is the (uid, channel, auth) triplet', () => {
  const a = sessionKey({ uid: 'alice', channel: 'example', auth: undefined });
  assert.equal(a, sessionKey({ uid: 'alice', channel: 'example', auth: undefined }));
  assert.notEqual(a, sessionKey({ uid: 'alice', channel: 'other', auth: undefined }));
  assert.notEqual(a, sessionKey({ uid: 'bob', channel: 'example', auth: undefined }));
  assert.notEqual(a, sessionKey({ uid: 'alice', channel: 'example', auth: '9b3b95527f7c2d80' }));
  // Auth is a hex number: another case or leading zeros do not make another session.
  assert.equal(
    sessionKey({ uid: 'alice', channel: 'example', auth: '09B3B95527F7C2D80' }),
    sessionKey({ uid: 'alice', channel: 'example', auth: '9b3b95527f7c2d80' }),
  );
  // No separator ambiguity: "ab"+"c" and "a"+"bc" are different sessions.
  assert.notEqual(sessionKey({ uid: 'ab', channel: 'c', auth: undefined }), sessionKey({ uid: 'a', channel: 'bc', auth: undefined }));
});

test('spec 8: a `peer` claim and its `peerauth` are read from the join frame, and prove nothing alone', () => {
  const claimed = accepted(parseJoin(text({ uid: 'lurker', channel: 'c', peer: true }), false, undefined));
  assert.equal(claimed.peer, true);
  assert.equal(claimed.peerAuth, undefined);
  assert.equal(provesPeer(claimed, 'peer-secret'), false, 'a bare `peer: true` is no proof');
  // A peerauth that is not a string is ignored like any unknown field, not refused.
  const odd = accepted(parseJoin(text({ uid: 'a', channel: 'c', peer: true, peerauth: 5 }), false, undefined));
  assert.equal(odd.peerAuth, undefined);
  const proof = peerProof('a', 'c', 'peer-secret');
  const notPeer = accepted(parseJoin(text({ uid: 'a', channel: 'c', peer: 'yes', peerauth: proof }), false, undefined));
  assert.equal(notPeer.peer, false, 'only the JSON value true claims to be a peer');
  assert.equal(provesPeer(notPeer, 'peer-secret'), false);
});

test('spec 8: peerauth is HMAC-SHA256 of "mles-peer-v1:" ‖ len(uid) ":" ‖ uid ‖ channel (test vectors)', () => {
  // Computed with openssl: printf 'mles-peer-v1:5:aliceexample' | openssl dgst -sha256 -hmac peer-secret
  assert.equal(peerProof('alice', 'example', 'peer-secret'), 'db7c626655595f302570ca5d50e25139df848811097934fa4f6f8f9160ec97b0');
  assert.equal(peerProof('mles-peer-host-8081', 'example', 'peer-secret'), '5ad9d6c3f09e5b8bee30ac05bb4c073644a01990288477fba7273176141ef64b');
  // The length prefix keeps the split between uid and channel: "ab"+"c" is not "a"+"bc".
  assert.notEqual(peerProof('ab', 'c', 'k'), peerProof('a', 'bc', 'k'));
});

test('spec 8: only the right key, uid and channel prove a peer join; hex case does not matter', () => {
  const join = (uid: string, channel: string, peerauth: unknown) =>
    accepted(parseJoin(text({ uid, channel, peer: true, peerauth }), false, undefined));
  const proof = peerProof('link', 'room', 'peer-secret');
  assert.equal(provesPeer(join('link', 'room', proof), 'peer-secret'), true);
  assert.equal(provesPeer(join('link', 'room', proof.toUpperCase()), 'peer-secret'), true);
  assert.equal(provesPeer(join('link', 'room', proof), undefined), false, 'without MLES_PEER_KEY nothing is proven');
  assert.equal(provesPeer(join('link', 'room', peerProof('link', 'room', 'wrong')), 'peer-secret'), false, 'wrong key');
  assert.equal(provesPeer(join('other', 'room', proof), 'peer-secret'), false, 'proof for another uid');
  assert.equal(provesPeer(join('link', 'hall', proof), 'peer-secret'), false, 'proof for another channel');
  for (const bad of ['', proof.slice(0, 62), `${proof}00`, `${proof.slice(0, 63)}g`]) {
    assert.equal(provesPeer(join('link', 'room', bad), 'peer-secret'), false, `malformed proof ${bad}`);
  }
});

test('spec 8: a link\'s join frame carries its proof only when the server has a peer key', () => {
  const plain = JSON.parse(linkJoinFrame('link', 'room', undefined, undefined)) as Record<string, unknown>;
  assert.deepEqual(plain, { uid: 'link', channel: 'room', peer: true });
  const proven = accepted(parseJoin(Buffer.from(linkJoinFrame('link', 'room', 'secret', peerProof('link', 'room', 'pk'))), false, 'secret'));
  assert.equal(proven.auth, authHash('link', 'room', 'secret'));
  assert.equal(provesPeer(proven, 'pk'), true);
});

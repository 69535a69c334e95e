// parseJoin (spec 2): the first frame's validation, auth and the session identity.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseJoin, sessionKey, authHash, MAX_JOIN_BYTES, type JoinResult } from '../src/protocol/join.js';
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

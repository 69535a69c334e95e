// The Mles v2 protocol (spec sections 1-3), black-box: raw WebSocket clients against a spawned
// server process.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type RunningServer } from './helpers/server.js';
import { TestClient } from './helpers/client.js';
import { RawClient, Opcode, encodeFrame, closeFrame, refusedUpgrade } from './helpers/raw-ws.js';
import { authHash } from '../src/protocol/join.js';

/** No test here needs more than a few seconds; a hang fails instead of stalling the suite. */
const T = { timeout: 15_000 };

let server: RunningServer;

before(async () => {
  server = await startServer();
});

after(async () => {
  assert.equal(await server.stop(), 0);
});

/** Opens a client, sends `frame` as its first frame and returns how the server closed it. */
async function firstFrame(frame: string | Buffer, url = server.url): Promise<{ code: number; reason: string; received: number }> {
  const client = new TestClient(url);
  await client.opened();
  client.send(frame);
  const closed = await client.closed;
  return { ...closed, received: client.received.length };
}

let counter = 0;
/** A uid or text no other test uses. */
const unique = (prefix: string): string => `${prefix}-${++counter}`;

/** Waits until `client` has received a message with exactly `text`. */
async function waitForText(client: TestClient, text: string): Promise<void> {
  while (!client.texts().includes(text)) await client.waitFor(client.received.length + 1);
}

/** Proves `client` is joined to `channel`: a message from a fresh member reaches it. */
async function provesJoined(client: TestClient, channel: string, url = server.url): Promise<void> {
  const text = unique('probe message');
  const probe = await TestClient.join(url, unique('probe'), channel);
  probe.send(text);
  await waitForText(client, text);
  await probe.close();
}

/** Joins a fresh member and returns the history it was sent: everything up to its own frames. */
async function historyOf(channel: string, expected: number, url = server.url): Promise<string[]> {
  const reader = await TestClient.join(url, unique('reader'), channel);
  // A message from a second member marks the end of the reader's history.
  const marker = await TestClient.join(url, unique('marker'), channel);
  const end = unique('end of history');
  marker.send(end);
  await waitForText(reader, end);
  await Promise.all([reader.close(), marker.close()]);
  const history = reader.texts().slice(0, reader.texts().indexOf(end));
  assert.equal(history.length, expected, `history of ${channel}`);
  return history;
}

const uids = (texts: string[]): string[] => texts.map((t) => JSON.parse(t).uid as string);

test('spec 1: an upgrade without the mles-websocket subprotocol is refused with HTTP 400 and never joins', T, async () => {
  const join = encodeFrame(Opcode.text, JSON.stringify({ uid: 'intruder', channel: 'spec1-refused' }));
  for (const protocol of [undefined, 'foo', 'mles-websocket2', 'foo mles-websocket', 'chat, superchat']) {
    // The join frame rides in the same TCP write as the request, as an eager client would send it.
    const answer = await refusedUpgrade(server.port, protocol, join);
    assert.equal(answer.status, 400, `offer ${protocol}`);
    assert.match(answer.body, /mles-websocket/);
  }
  const first = await TestClient.join(server.url, 'first', 'spec1-refused');
  assert.deepEqual(uids(await historyOf('spec1-refused', 1)), ['first'], 'nothing was joined or stored');
  await first.close();
});

test('spec 1: mles-websocket is accepted anywhere in an offer list, and the 101 names it', T, async () => {
  for (const offer of ['foo, mles-websocket', 'mles-websocket,foo', ' foo ,  mles-websocket , bar']) {
    const raw = await RawClient.connect(server.port, offer);
    assert.equal(raw.protocol, 'mles-websocket', offer);
    raw.destroy();
  }
  const client = new TestClient(server.url, ['foo', 'mles-websocket']);
  await client.opened();
  assert.equal(client.ws.protocol, 'mles-websocket');
  client.send(JSON.stringify({ uid: 'listed', channel: 'spec1-offer' }));
  await provesJoined(client, 'spec1-offer');
  await client.close();
});

test('spec 1: any request path is accepted for the upgrade', T, async () => {
  const raw = await RawClient.connect(server.port, 'mles-websocket', '/some/deep/path?x=1');
  assert.equal(raw.protocol, 'mles-websocket');
  raw.destroy();
});

test('spec 2: binary first frame closes with 1003', T, async () => {
  const closed = await firstFrame(Buffer.from(JSON.stringify({ uid: 'a', channel: 'spec2-invalid' })));
  assert.equal(closed.code, 1003);
  assert.equal(closed.reason, 'first frame must be text');
});

test('spec 2: invalid first frames close with 1007 and a reason', T, async () => {
  const cases: Array<[string, RegExp]> = [
    ['{"uid": "a", "channel": ', /not JSON/],
    ['hello', /not JSON/],
    ['["a", "b"]', /not a JSON object/],
    [JSON.stringify({ channel: 'spec2-invalid' }), /missing uid/],
    [JSON.stringify({ uid: 'a' }), /missing channel/],
    [JSON.stringify({ uid: '', channel: 'spec2-invalid' }), /empty uid/],
    [JSON.stringify({ uid: 'a', channel: '' }), /empty channel/],
    [JSON.stringify({ uid: 'ålice', channel: 'spec2-invalid' }), /uid must be ASCII/],
    [JSON.stringify({ uid: 'a', channel: 'spec2-invälid' }), /channel must be ASCII/],
    [JSON.stringify({ uid: 42, channel: 'spec2-invalid' }), /uid must be a string/],
    [JSON.stringify({ uid: 'a', channel: ['spec2-invalid'] }), /channel must be a string/],
    [JSON.stringify({ uid: 'a', channel: 'spec2-invalid', auth: 7 }), /auth must be a string/],
  ];
  const results = await Promise.all(cases.map(([frame]) => firstFrame(frame)));
  results.forEach((closed, i) => {
    assert.equal(closed.code, 1007, cases[i]![0]);
    assert.match(closed.reason, cases[i]![1], cases[i]![0]);
    assert.equal(closed.received, 0);
  });
});

test('spec 2: a first text frame that is not UTF-8 closes with 1007', T, async () => {
  const raw = await RawClient.connect(server.port);
  raw.write(encodeFrame(Opcode.text, Buffer.from([0x7b, 0xc3, 0x28, 0x7d])));
  await raw.until(() => raw.closeReceived() !== undefined);
  assert.equal(raw.closeReceived()!.code, 1007);
  raw.destroy();
});

test('spec 2: a failed auth closes with 1008; refused joins store nothing', T, async () => {
  const closed = await firstFrame(JSON.stringify({ uid: 'a', channel: 'spec2-invalid', auth: 'afa46b8689dae7a5' }));
  assert.equal(closed.code, 1008);
  assert.equal(closed.reason, 'auth failed');
  const member = await TestClient.join(server.url, 'valid', 'spec2-invalid');
  assert.deepEqual(uids(await historyOf('spec2-invalid', 1)), ['valid']);
  await member.close();
});

test('spec 2: without MLES_KEY auth is optional, and if present must be the unkeyed hash', T, async () => {
  const plain = await TestClient.join(server.url, 'alice', 'example');
  await provesJoined(plain, 'example');
  const hashed = await TestClient.join(server.url, 'alice', 'example', { auth: '9b3b95527f7c2d80' });
  await provesJoined(hashed, 'example');
  const empty = await TestClient.join(server.url, '', '', { auth: '1e924b9d737700d7' });
  assert.equal((await empty.closed).code, 1007, 'empty uid and channel, even with the vector for empty input');
  for (const auth of ['afa46b8689dae7a5', '0123456789abcdef', 'zz']) {
    const closed = await firstFrame(JSON.stringify({ uid: 'alice', channel: 'example', auth }));
    assert.deepEqual([closed.code, closed.reason], [1008, 'auth failed'], auth);
  }
  await Promise.all([plain.close(), hashed.close()]);
});

test('spec 2: with MLES_KEY auth is required and must be the keyed hash', T, async () => {
  const keyed = await startServer([], { env: { MLES_KEY: 'secret' } });
  try {
    const alice = await TestClient.join(keyed.url, 'alice', 'example', { auth: 'afa46b8689dae7a5' });
    const bob = await TestClient.join(keyed.url, 'bob', 'example', { auth: '6F862A3096E7C765' });
    bob.send('hello alice');
    assert.equal((await alice.waitFor(1))[0]!.text, 'hello alice');
    const refusals = await Promise.all([
      firstFrame(JSON.stringify({ uid: 'carol', channel: 'example' }), keyed.url),
      firstFrame(JSON.stringify({ uid: 'alice', channel: 'example', auth: '9b3b95527f7c2d80' }), keyed.url),
      firstFrame(JSON.stringify({ uid: 'bob', channel: 'example', auth: 'afa46b8689dae7a5' }), keyed.url),
    ]);
    for (const closed of refusals) assert.deepEqual([closed.code, closed.reason], [1008, 'auth failed']);
    await Promise.all([alice.close(), bob.close()]);
  } finally {
    assert.equal(await keyed.stop(), 0);
  }
});

test('spec 2: a duplicate (uid, channel, auth) is refused with 4409 while the first keeps working', T, async () => {
  const first = await TestClient.join(server.url, 'twin', 'spec2-dup');
  const second = await TestClient.join(server.url, 'twin', 'spec2-dup');
  assert.deepEqual(await second.closed, { code: 4409, reason: 'uid already joined' });
  assert.equal(second.received.length, 0);
  await provesJoined(first, 'spec2-dup');

  // The same uid on another channel, or with auth, is another session.
  const otherChannel = await TestClient.join(server.url, 'twin', 'spec2-dup-other');
  await provesJoined(otherChannel, 'spec2-dup-other');
  const withAuth = await TestClient.join(server.url, 'twin', 'spec2-dup', { auth: authHash('twin', 'spec2-dup') });
  await provesJoined(withAuth, 'spec2-dup');

  const history = await historyOf('spec2-dup', 6);
  const twinJoins = history.filter((t) => t.startsWith('{') && JSON.parse(t).uid === 'twin');
  assert.equal(twinJoins.length, 2, 'the first and the authenticated join; the refused one stored nothing');
  assert.equal(JSON.parse(twinJoins[1]!).auth, authHash('twin', 'spec2-dup'));
  await Promise.all([first.close(), otherChannel.close(), withAuth.close()]);
});

test('spec 2: a uid is accepted again right after its first session left', T, async () => {
  for (let round = 0; round < 5; round++) {
    const session = await TestClient.join(server.url, 'returner', 'spec2-rejoin');
    await provesJoined(session, 'spec2-rejoin');
    await session.close();
  }
});

test('spec 3: history replays oldest first in the original frame types, then the join frame is appended', T, async () => {
  const channel = 'spec3-replay';
  // Odd spacing and an unknown field: the stored join frame is the exact text received.
  const aliceJoin = `{ "channel":"${channel}",  "uid" : "alice", "x": [1] }`;
  const alice = new TestClient(server.url);
  await alice.opened();
  alice.send(aliceJoin);
  alice.send('text one');
  alice.send(Buffer.from([0, 1, 2, 255]));
  alice.send('text three');
  const bob = await TestClient.join(server.url, 'bob', channel);
  const replay = await bob.waitFor(4);
  assert.deepEqual(replay.map((m) => m.binary), [false, false, true, false]);
  assert.equal(replay[0]!.text, aliceJoin);
  assert.equal(replay[1]!.text, 'text one');
  assert.deepEqual([...replay[2]!.data], [0, 1, 2, 255]);
  assert.equal(replay[3]!.text, 'text three');

  const carol = await TestClient.join(server.url, 'carol', channel);
  const carolReplay = await carol.waitFor(5);
  assert.deepEqual(carolReplay.slice(0, 4).map((m) => [m.text, m.binary]), replay.map((m) => [m.text, m.binary]));
  assert.deepEqual(JSON.parse(carolReplay[4]!.text), { uid: 'bob', channel });
  await Promise.all([alice.close(), bob.close(), carol.close()]);
});

test('spec 3: join frames are not sent live, and nothing is echoed to its sender', T, async () => {
  const channel = 'spec3-nolive';
  const alice = await TestClient.join(server.url, 'alice', channel);
  alice.send('from alice');
  const bob = await TestClient.join(server.url, 'bob', channel);
  await bob.waitFor(2);
  const carol = await TestClient.join(server.url, 'carol', channel);
  await carol.waitFor(3);
  carol.send('from carol');
  // Per-channel order: anything sent to alice before carol's message would arrive before it.
  await waitForText(alice, 'from carol');
  await waitForText(bob, 'from carol');
  assert.deepEqual(alice.texts(), ['from carol'], 'no join frames, no echo of "from alice"');
  assert.deepEqual(bob.texts().slice(2), ['from carol'], 'carol\'s join was not sent live to bob');
  await Promise.all([alice.close(), bob.close(), carol.close()]);
});

test('spec 1: control frames (ping, pong) are never forwarded', T, async () => {
  const channel = 'spec1-control';
  const listener = await TestClient.join(server.url, 'listener', channel);
  const sender = await TestClient.join(server.url, 'sender', channel);
  let listenerPings = 0;
  listener.ws.on('ping', () => listenerPings++);
  listener.ws.on('pong', () => listenerPings++);
  const ponged = new Promise<Buffer>((resolve) => sender.ws.once('pong', resolve));
  sender.ws.ping('are you there');
  sender.ws.pong('unsolicited');
  assert.equal((await ponged).toString(), 'are you there', 'the server answers a ping itself');
  sender.send('data');
  await waitForText(listener, 'data');
  assert.deepEqual(listener.texts(), ['data']);
  assert.equal(listenerPings, 0);
  await Promise.all([listener.close(), sender.close()]);
});

test('spec 3: every frame goes to all other members, never to its sender', T, async () => {
  const channel = 'spec3-fanout';
  const members: TestClient[] = [];
  for (const uid of ['m0', 'm1', 'm2', 'm3']) {
    members.push(await TestClient.join(server.url, uid, channel));
    await members.at(-1)!.waitFor(members.length - 1); // its history: the earlier joins
  }
  const historyLength = members.map((m) => m.received.length);
  members.forEach((m, i) => m.send(i % 2 === 0 ? `text from m${i}` : Buffer.from(`binary from m${i}`)));
  await Promise.all(members.map((m, i) => m.waitFor(historyLength[i]! + 3)));
  members.forEach((m, i) => {
    const live = m.received.slice(historyLength[i]!);
    assert.equal(live.length, 3);
    assert.deepEqual(
      live.map((r) => r.text).sort(),
      [0, 1, 2, 3].filter((j) => j !== i).map((j) => `${j % 2 === 0 ? 'text' : 'binary'} from m${j}`).sort(),
    );
    for (const r of live) assert.equal(r.binary, r.text.startsWith('binary'));
  });
  await Promise.all(members.map((m) => m.close()));
  assert.deepEqual(members.map((m) => m.received.length), historyLength.map((h) => h + 3), 'nothing more arrived');
});

test('spec 3: per-channel order is the same for every member, and each sender\'s order is kept', T, async () => {
  const channel = 'spec3-order';
  const [a, b] = [await TestClient.join(server.url, 'a', channel), await TestClient.join(server.url, 'b', channel)];
  const [c, d] = [await TestClient.join(server.url, 'c', channel), await TestClient.join(server.url, 'd', channel)];
  await Promise.all([a.waitFor(0), b.waitFor(1), c.waitFor(2), d.waitFor(3)]);
  const n = 300;
  for (let i = 0; i < n; i++) {
    a.send(`a${i}`);
    b.send(`b${i}`);
  }
  const [cLive, dLive] = await Promise.all([c.waitFor(2 + 2 * n), d.waitFor(3 + 2 * n)]);
  const cTexts = cLive.slice(2).map((m) => m.text);
  const dTexts = dLive.slice(3).map((m) => m.text);
  assert.deepEqual(cTexts, dTexts, 'both receivers see one channel order');
  assert.deepEqual(cTexts.filter((t) => t[0] === 'a'), Array.from({ length: n }, (_, i) => `a${i}`));
  assert.deepEqual(cTexts.filter((t) => t[0] === 'b'), Array.from({ length: n }, (_, i) => `b${i}`));
  // A newcomer's replay (the newest 200) has the same order.
  await Promise.all([a.close(), b.close()]);
  assert.deepEqual(await historyOf(channel, 200), cTexts.slice(-200));
  await Promise.all([c.close(), d.close()]);
});

test('spec 2: frames sent in the same tick right after the join frame are kept, in order', T, async () => {
  const channel = 'spec2-eager';
  const listener = await TestClient.join(server.url, 'listener', channel);
  const eager = new TestClient(server.url);
  await eager.opened();
  eager.send(JSON.stringify({ uid: 'eager', channel }));
  for (let i = 0; i < 200; i++) eager.send(i % 10 === 0 ? Buffer.from([i]) : `eager ${i}`);
  const got = await listener.waitFor(200);
  got.forEach((m, i) => {
    if (i % 10 === 0) assert.deepEqual([m.binary, [...m.data]], [true, [i]]);
    else assert.deepEqual([m.binary, m.text], [false, `eager ${i}`]);
  });
  await Promise.all([listener.close(), eager.close()]);
});

test('spec 2: a client that sends join, frames and close in one TCP write is fully handled', T, async () => {
  const channel = 'spec2-oneshot';
  const listener = await TestClient.join(server.url, 'listener', channel);
  const raw = await RawClient.connect(server.port);
  const frames = [encodeFrame(Opcode.text, JSON.stringify({ uid: 'oneshot', channel }))];
  for (let i = 0; i < 50; i++) frames.push(encodeFrame(i % 2 ? Opcode.binary : Opcode.text, `shot ${i}`));
  frames.push(closeFrame(1000, 'bye'));
  raw.write(...frames);
  const got = await listener.waitFor(50);
  assert.deepEqual(got.map((m) => [m.text, m.binary]), Array.from({ length: 50 }, (_, i) => [`shot ${i}`, i % 2 === 1]));
  await raw.ended;
  assert.equal(raw.closeReceived()?.code, 1000, 'the server answered the close');
  const history = await historyOf(channel, 52);
  assert.deepEqual(uids(history.slice(0, 2)), ['listener', 'oneshot']);
  assert.deepEqual(history.slice(2), got.map((m) => m.text));
  await listener.close();
});

test('spec 3: history keeps the newest 200 messages by default', T, async () => {
  const channel = 'spec3-limit-default';
  const writer = await TestClient.join(server.url, 'writer', channel);
  for (let i = 1; i <= 250; i++) writer.send(`m${i}`);
  await writer.close(); // the server has handled every frame before it answers the close
  const history = await historyOf(channel, 200);
  assert.deepEqual(history, Array.from({ length: 200 }, (_, i) => `m${i + 51}`));
});

test('spec 3: --limit keeps the newest N messages; the oldest is dropped first', T, async () => {
  const small = await startServer(['--limit', '3']);
  try {
    const writer = await TestClient.join(small.url, 'writer', 'ch');
    for (const m of ['a', 'b', 'c', 'd']) writer.send(m);
    await writer.close();
    const first = await TestClient.join(small.url, 'first', 'ch');
    assert.deepEqual((await first.waitFor(3)).map((m) => m.text), ['b', 'c', 'd']);
    const second = await TestClient.join(small.url, 'second', 'ch');
    const replay = (await second.waitFor(3)).map((m) => m.text);
    assert.deepEqual([replay[0], replay[1], JSON.parse(replay[2]!).uid], ['c', 'd', 'first']);
    await Promise.all([first.close(), second.close()]);
  } finally {
    assert.equal(await small.stop(), 0);
  }
});

test('spec 3: history is kept after all members leave', T, async () => {
  const channel = 'spec3-kept';
  const alice = await TestClient.join(server.url, 'alice', channel);
  const bob = await TestClient.join(server.url, 'bob', channel);
  alice.send('before leaving');
  await waitForText(bob, 'before leaving');
  await Promise.all([alice.close(), bob.close()]);
  const later = await TestClient.join(server.url, 'later', channel);
  const replay = (await later.waitFor(3)).map((m) => m.text);
  assert.deepEqual([...uids([replay[0]!, replay[1]!]), replay[2]], ['alice', 'bob', 'before leaving']);
  await later.close();
});

test('spec 3: channels are independent: own members, own history', T, async () => {
  const red = await TestClient.join(server.url, 'same-uid', 'spec3-red');
  const blue = await TestClient.join(server.url, 'same-uid', 'spec3-blue');
  red.send('red only');
  blue.send('blue only');
  assert.deepEqual(await historyOf('spec3-red', 2).then((h) => h.slice(1)), ['red only']);
  assert.deepEqual(await historyOf('spec3-blue', 2).then((h) => h.slice(1)), ['blue only']);
  // Each saw only its own channel's marker (sent after the other channel's message).
  assert.deepEqual([red.texts(), blue.texts()].map((texts) => texts.map((t) => t.startsWith('end of history'))), [[true], [true]]);
  await Promise.all([red.close(), blue.close()]);
});

test('spec 3 + 8: a join claiming `"peer": true` without proof is stored in history like any join', T, async () => {
  // Issue 11, finding 10: the claim alone once kept a join out of history, so anyone could lurk
  // unseen. Only a link proving the shared MLES_PEER_KEY may stay out (test/peers.test.ts).
  const channel = 'spec8-lurker';
  const lurkerJoin = JSON.stringify({ uid: 'lurker', channel, peer: true });
  const lurker = new TestClient(server.url);
  await lurker.opened();
  lurker.send(lurkerJoin);
  await provesJoined(lurker, channel); // its join step ran: the frame was stored then, or never
  const history = await historyOf(channel, 3);
  assert.equal(history[0], lurkerJoin, 'a newcomer sees the lurker join, byte for byte');
  assert.equal(uids([history[1]!])[0]!.startsWith('probe'), true);
  await lurker.close();
});

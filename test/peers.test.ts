// Peer links between real server processes (spec section 8, issue 5 points 4-6): messages cross
// exactly once (also around a loop), per-publisher order holds, a server restarted with an empty
// store regains its history from a peer, and a dead peer does not stall local clients. Links
// stay out of history only when they prove the shared MLES_PEER_KEY (issue 11, finding 10).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type RunningServer } from './helpers/server.js';
import { TestClient } from './helpers/client.js';
import { freePort } from './helpers/ports.js';
import { authHash } from '../src/protocol/join.js';
import { peerProof } from '../src/protocol/peer-proof.js';

const MEMORY = ['--history', 'memory', '--limit', '1000'];
/** Whatever the test runner's environment holds: these servers share no peer key. */
const NO_PEER_KEY = { MLES_PEER_KEY: '' };

function countOf(list: string[], value: string): number {
  return list.filter((v) => v === value).length;
}

/** Waits until `server` has logged `text` at least `times` times. */
async function logged(server: RunningServer, text: string, times = 1): Promise<void> {
  const pattern = new RegExp(`(${text}[\\s\\S]*){${times}}`);
  await server.waitForLog(pattern);
}

/** The uid of a join frame, or undefined for any other message. */
function joinUid(text: string): string | undefined {
  if (!text.startsWith('{')) return undefined;
  return (JSON.parse(text) as { uid?: string }).uid;
}

/**
 * The history a newcomer on `server` gets for `channel`: everything a reader receives before a
 * marker that a second member sends once both are joined (history comes first, in order).
 */
async function historyOn(server: RunningServer, channel: string): Promise<string[]> {
  const reader = await TestClient.join(server.url, 'history-reader', channel);
  const marker = await TestClient.join(server.url, 'history-marker', channel);
  marker.send('end of history');
  while (!reader.texts().includes('end of history')) await reader.waitFor(reader.received.length + 1);
  await Promise.all([reader.close(), marker.close()]);
  return reader.texts().slice(0, reader.texts().indexOf('end of history'));
}

/** Messages of `publisher` as received by `client`, in arrival order. */
function from(client: TestClient, publisher: string): string[] {
  return client.texts().filter((m) => m.startsWith(`${publisher}:`));
}

test('spec 8: two linked servers relay both ways exactly once, in order', async (t) => {
  const b = await startServer(MEMORY, { env: NO_PEER_KEY });
  t.after(() => b.stop());
  const a = await startServer([...MEMORY, '--peer', b.url, '--peer-uid', 'link-a'], { env: NO_PEER_KEY });
  t.after(() => a.stop());

  const alice = await TestClient.join(a.url, 'alice', 'pair');
  await logged(a, 'peer link resynchronised');
  const bob = await TestClient.join(b.url, 'bob', 'pair');
  // Alice's join frame reaches bob (in B's replay, or live if B is still taking it in): A sent
  // it to B when the link resynchronised.
  while (!bob.texts().some((m) => joinUid(m) === 'alice')) await bob.waitFor(bob.received.length + 1);

  for (let i = 0; i < 100; i++) alice.send(`alice:${i}`);
  for (let i = 0; i < 100; i++) bob.send(`bob:${i}`);
  alice.send('alice:end');
  bob.send('bob:end');
  await Promise.all([
    (async () => { while (!alice.texts().includes('bob:end')) await alice.waitFor(alice.received.length + 1); })(),
    (async () => { while (!bob.texts().includes('alice:end')) await bob.waitFor(bob.received.length + 1); })(),
  ]);
  const expected = (who: string) => [...Array.from({ length: 100 }, (_, i) => `${who}:${i}`), `${who}:end`];
  assert.deepEqual(from(bob, 'alice'), expected('alice'));
  assert.deepEqual(from(alice, 'bob'), expected('bob'));
  assert.equal(from(alice, 'alice').length, 0, 'never echoed back across the link');

  // A newcomer on B sees the whole conversation once. Without MLES_PEER_KEY the
  // link's join frame is stored on B like any join: a link cannot prove it is one.
  const history = await historyOn(b, 'pair');
  for (const message of [...expected('alice'), ...expected('bob')]) assert.equal(countOf(history, message), 1, message);
  assert.deepEqual(history.map(joinUid).filter((uid) => uid !== undefined).sort(), ['alice', 'bob', 'link-a']);
  assert.equal(history.length, 3 + 202);
  await Promise.all([alice.close(), bob.close()]);
});

test('spec 8: a loop of three servers (A-B-C-A) delivers every message exactly once', async (t) => {
  const ports = [await freePort(), await freePort(), await freePort()];
  const url = (i: number) => `ws://127.0.0.1:${ports[i % 3]}`;
  const servers = await Promise.all(
    [0, 1, 2].map((i) => startServer([...MEMORY, '--port', String(ports[i]), '--peer', url(i + 1)])),
  );
  t.after(() => Promise.all(servers.map((s) => s.stop())));

  const names = ['ann', 'ben', 'cat'];
  const clients = await Promise.all(names.map((name, i) => TestClient.join(servers[i]!.url, name, 'ring')));
  await Promise.all(servers.map((s) => logged(s, 'peer link resynchronised')));

  const perClient = 50;
  clients.forEach((client, i) => {
    for (let n = 0; n < perClient; n++) client.send(`${names[i]}:${n}`);
  });
  // Each client expects the others' messages; wait for the last one of each.
  await Promise.all(clients.map(async (client, i) => {
    const others = names.filter((_, j) => j !== i).map((name) => `${name}:${perClient - 1}`);
    while (!others.every((last) => client.texts().includes(last))) await client.waitFor(client.received.length + 1);
  }));
  // A barrier round: once every client has every barrier message, earlier loop copies are through.
  clients.forEach((client, i) => client.send(`${names[i]}:barrier`));
  await Promise.all(clients.map(async (client, i) => {
    const others = names.filter((_, j) => j !== i).map((name) => `${name}:barrier`);
    while (!others.every((b) => client.texts().includes(b))) await client.waitFor(client.received.length + 1);
  }));

  clients.forEach((client, i) => {
    for (const [j, name] of names.entries()) {
      const got = from(client, name);
      if (j === i) {
        assert.equal(got.length, 0, `${names[i]} must not get its own messages back`);
      } else {
        const expected = [...Array.from({ length: perClient }, (_, n) => `${name}:${n}`), `${name}:barrier`];
        assert.deepEqual(got, expected, `${names[i]} receives ${name}'s messages once, in order`);
      }
    }
  });
  await Promise.all(clients.map((c) => c.close()));
});

test('spec 8: a peer restarted with an empty store regains the history, and a new server rebuilds from its peer', async (t) => {
  const portB = await freePort();
  const urlB = `ws://127.0.0.1:${portB}`;
  let b = await startServer([...MEMORY, '--port', String(portB)]);
  t.after(() => b.stop());
  const a = await startServer([...MEMORY, '--peer', urlB]);
  t.after(() => a.stop());

  const alice = await TestClient.join(a.url, 'alice', 'heal');
  await logged(a, 'peer link resynchronised');
  for (let i = 0; i < 20; i++) alice.send(`alice:${i}`);
  alice.send('alice:end');
  const watcher = await TestClient.join(b.url, 'watcher', 'heal');
  while (!watcher.texts().includes('alice:end')) await watcher.waitFor(watcher.received.length + 1);
  await watcher.close();

  // B dies and comes back empty on the same port: A relinks and sends what B lacks.
  await b.stop('SIGKILL');
  b = await startServer([...MEMORY, '--port', String(portB)]);
  await logged(a, 'peer link resynchronised', 2);
  const late = await TestClient.join(b.url, 'late', 'heal');
  while (!late.texts().includes('alice:end')) await late.waitFor(late.received.length + 1);
  assert.deepEqual(from(late, 'alice'), [...Array.from({ length: 20 }, (_, i) => `alice:${i}`), 'alice:end']);
  await late.close();

  // A brand-new server linked to B rebuilds the channel from B once someone joins it there.
  const fresh = await startServer([...MEMORY, '--peer', urlB]);
  t.after(() => fresh.stop());
  const newcomer = await TestClient.join(fresh.url, 'newcomer', 'heal');
  while (!newcomer.texts().includes('alice:end')) await newcomer.waitFor(newcomer.received.length + 1);
  assert.deepEqual(from(newcomer, 'alice'), [...Array.from({ length: 20 }, (_, i) => `alice:${i}`), 'alice:end']);
  await Promise.all([alice.close(), newcomer.close()]);
});

test('spec 8: a killed peer does not stall the other server\'s clients', async (t) => {
  const b = await startServer(MEMORY);
  const a = await startServer([...MEMORY, '--peer', b.url]);
  t.after(() => Promise.all([a.stop(), b.stop()]));
  const alice = await TestClient.join(a.url, 'alice', 'stall');
  const dave = await TestClient.join(a.url, 'dave', 'stall');
  await logged(a, 'peer link resynchronised');
  await b.stop('SIGKILL');
  await logged(a, 'peer link closed');
  for (let i = 0; i < 1000; i++) alice.send(`alice:${i}`);
  while (!dave.texts().includes('alice:999')) await dave.waitFor(dave.received.length + 1);
  assert.equal(from(dave, 'alice').length, 1000);
  await Promise.all([alice.close(), dave.close()]);
});

test('spec 2 + 8: with MLES_KEY, links join their peers with the keyed auth hash', async (t) => {
  const env = { MLES_KEY: 'secret' };
  const b = await startServer(MEMORY, { env });
  t.after(() => b.stop());
  const a = await startServer([...MEMORY, '--peer', b.url], { env });
  t.after(() => a.stop());
  const alice = await TestClient.join(a.url, 'alice', 'keyed', { auth: authHash('alice', 'keyed', 'secret') });
  await logged(a, 'peer link resynchronised');
  const bob = await TestClient.join(b.url, 'bob', 'keyed', { auth: authHash('bob', 'keyed', 'secret') });
  alice.send('alice:keyed');
  while (!bob.texts().includes('alice:keyed')) await bob.waitFor(bob.received.length + 1);
  assert.doesNotMatch(a.stderr(), /peer link closed/);
  await Promise.all([alice.close(), bob.close()]);
});

test('spec 8: with MLES_PEER_KEY on both servers the link proves itself and its join is not in history', async (t) => {
  const env = { MLES_PEER_KEY: 'peer-secret' };
  const b = await startServer(MEMORY, { env });
  t.after(() => b.stop());
  const a = await startServer([...MEMORY, '--peer', b.url, '--peer-uid', 'link-a'], { env });
  t.after(() => a.stop());
  const alice = await TestClient.join(a.url, 'alice', 'proven');
  await logged(a, 'peer link resynchronised');
  alice.send('alice:hello');
  // Once B relays alice's message, it has taken in the link's join frame sent before it.
  const bob = await TestClient.join(b.url, 'bob', 'proven');
  while (!bob.texts().includes('alice:hello')) await bob.waitFor(bob.received.length + 1);
  // Sorted: bob's join may be taken in before or after what the link relays.
  const history = await historyOn(b, 'proven');
  assert.deepEqual(history.map((m) => joinUid(m) ?? m).sort(), ['alice', 'alice:hello', 'bob'], 'no join of link-a');
  // Still a peer: messages keep flowing both ways.
  bob.send('bob:hello');
  while (!alice.texts().includes('bob:hello')) await alice.waitFor(alice.received.length + 1);
  await Promise.all([alice.close(), bob.close()]);
});

test('spec 8: a `peer` join with a proof made with the wrong key is stored and seen; the right key is not', async (t) => {
  const b = await startServer(MEMORY, { env: { MLES_PEER_KEY: 'peer-secret' } });
  t.after(() => b.stop());
  const channel = 'forged';
  const forged = JSON.stringify({ uid: 'forger', channel, peer: true, peerauth: peerProof('forger', channel, 'guessed') });
  const forger = new TestClient(b.url);
  await forger.opened();
  forger.send(forged);
  // The control: the same frame with the right proof is what a link sends, and stays unseen.
  const proven = JSON.stringify({ uid: 'prover', channel, peer: true, peerauth: peerProof('prover', channel, 'peer-secret') });
  const prover = new TestClient(b.url);
  await prover.opened();
  prover.send(proven);
  // Both are members once a probe's message reaches them: their join frames were taken in.
  const probe = await TestClient.join(b.url, 'probe', channel);
  probe.send('probe:hello');
  await Promise.all([forger, prover].map(async (c) => {
    while (!c.texts().includes('probe:hello')) await c.waitFor(c.received.length + 1);
  }));
  // Sorted: the probe's join may be taken in before the others'.
  const history = await historyOn(b, channel);
  assert.deepEqual(history.sort(), [forged, JSON.stringify({ uid: 'probe', channel }), 'probe:hello'].sort());
  await Promise.all([forger.close(), prover.close(), probe.close()]);
});

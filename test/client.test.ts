// The client kit (client/): backoff, auth from a key, refusals, reconnect after a server
// restart, and dedup of a reconnect's history replay. Against real servers.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, backoffDelay, type ClientEvents, type MlesClient, type MlesMessage } from '../client/index.js';
import { startServer } from './helpers/server.js';
import { TestClient } from './helpers/client.js';
import { startTcpProxy } from './helpers/tcp-proxy.js';

const FAST = { reconnect: { minDelayMs: 50, maxDelayMs: 400 }, historyIdleMs: 150 };

/** Resolves with the next `name` event that passes `accept`. */
function next<K extends keyof ClientEvents>(
  client: MlesClient,
  name: K,
  accept: (event: ClientEvents[K]) => boolean = () => true,
): Promise<ClientEvents[K]> {
  return new Promise((resolve) => {
    const off = client.on(name, (event) => {
      if (!accept(event)) return;
      off();
      resolve(event);
    });
  });
}

function record(client: MlesClient): MlesMessage[] {
  const messages: MlesMessage[] = [];
  client.on('message', (m) => messages.push(m));
  return messages;
}

const text = (m: MlesMessage): string => (m.type === 'text' ? m.text : `<${m.data.length} bytes>`);

test('backoff grows exponentially from the minimum, is capped, and jitters within the upper half', () => {
  const options = { minDelayMs: 100, maxDelayMs: 1000 };
  assert.deepEqual([1, 2, 3, 4, 5, 6].map((n) => backoffDelay(n, options, () => 0)), [50, 100, 200, 400, 500, 500]);
  assert.deepEqual([1, 2, 3, 4, 5, 6].map((n) => backoffDelay(n, options, () => 0.999_999)), [100, 200, 400, 800, 1000, 1000]);
  assert.equal(backoffDelay(1000, options, () => 0.5), 750);
});

test('refuses a URL that is not ws:// or wss://', () => {
  assert.throws(() => connect('http://127.0.0.1:1', { uid: 'a', channel: 'c' }), TypeError);
});

test('joins with the auth hash computed from the key; a wrong or missing key is refused without retry (spec 2)', { timeout: 20_000 }, async (t) => {
  const server = await startServer([], { env: { MLES_KEY: 'secret' } });
  t.after(() => server.stop());
  const alice = connect(server.url, { uid: 'alice', channel: 'example', key: 'secret', ...FAST });
  t.after(() => alice.close());
  await next(alice, 'historyDone');
  alice.send('hi');
  alice.send(new Uint8Array([0, 1, 2]));
  const bob = await TestClient.join(server.url, 'bob', 'example', { auth: '6f862a3096e7c765' });
  t.after(() => bob.close());
  const [join, hi, bytes] = await bob.waitFor(3);
  assert.deepEqual(JSON.parse(join!.text), { uid: 'alice', channel: 'example', auth: 'afa46b8689dae7a5' });
  assert.equal(hi!.text, 'hi');
  assert.deepEqual([...bytes!.data], [0, 1, 2]);
  assert.equal(bytes!.binary, true);

  const received = next(alice, 'message');
  bob.send(Buffer.from([9, 8]));
  assert.deepEqual(await received, { type: 'binary', data: new Uint8Array([9, 8]), history: false });

  for (const key of ['wrong', undefined]) {
    const eve = connect(server.url, { uid: 'eve', channel: 'example', ...(key ? { key } : {}), ...FAST });
    t.after(() => eve.close());
    let retries = 0;
    eve.on('reconnecting', () => retries++);
    assert.deepEqual(await eve.closed, { code: 1008, reason: 'auth failed', refused: true, willReconnect: false });
    assert.equal(eve.state, 'closed');
    assert.equal(retries, 0);
  }
});

test('a uid already joined is refused on the first connection, not retried (spec 2)', { timeout: 20_000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const first = connect(server.url, { uid: 'alice', channel: 'dup', ...FAST });
  t.after(() => first.close());
  await next(first, 'historyDone');
  const second = connect(server.url, { uid: 'alice', channel: 'dup', ...FAST });
  t.after(() => second.close());
  assert.deepEqual(await second.closed, { code: 4409, reason: 'uid already joined', refused: true, willReconnect: false });
  assert.equal(first.state, 'open');
});

test('history is flagged and reported done; messages sent before the join are queued', { timeout: 20_000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const bob = await TestClient.join(server.url, 'bob', 'hist');
  t.after(() => bob.close());
  bob.send('one');
  bob.send('two');
  // Once a newcomer has seen them, bob's messages are in the history.
  const probe = await TestClient.join(server.url, 'probe', 'hist');
  t.after(() => probe.close());
  await probe.waitFor(3);

  const alice = connect(server.url, { uid: 'alice', channel: 'hist', ...FAST });
  t.after(() => alice.close());
  alice.send('queued');
  const messages = record(alice);
  const done = await next(alice, 'historyDone');
  assert.equal(done.messages, 4);
  assert.deepEqual(messages.map((m) => [text(m), m.history]), [
    ['{"uid":"bob","channel":"hist"}', true],
    ['one', true],
    ['two', true],
    ['{"uid":"probe","channel":"hist"}', true],
  ]);
  assert.equal((await bob.waitFor(1))[0]!.text, 'queued');
  const live = next(alice, 'message');
  bob.send('three');
  assert.deepEqual(await live, { type: 'text', text: 'three', history: false });
});

test('reconnects after the server restarts on the same port', { timeout: 30_000 }, async (t) => {
  let server = await startServer();
  t.after(() => server.stop());
  const alice = connect(server.url, { uid: 'alice', channel: 'restart', ...FAST });
  t.after(() => alice.close());
  await next(alice, 'historyDone');

  const dropped = next(alice, 'close');
  const retrying = next(alice, 'reconnecting');
  await server.stop();
  assert.deepEqual(await dropped, { code: 1001, reason: 'server shutting down', refused: false, willReconnect: true });
  const { attempt, delayMs } = await retrying;
  assert.equal(attempt, 1);
  assert.ok(delayMs >= 25 && delayMs <= 50, `first delay ${delayMs}`);

  const reopened = next(alice, 'open');
  server = await startServer(['--port', String(server.port)]);
  assert.deepEqual(await reopened, { reconnect: true });
  alice.send('back');
  const bob = await TestClient.join(server.url, 'bob', 'restart');
  t.after(() => bob.close());
  const [join, back] = await bob.waitFor(2);
  assert.equal(JSON.parse(join!.text).uid, 'alice');
  assert.equal(back!.text, 'back');
  const live = next(alice, 'message');
  bob.send('welcome back');
  assert.equal(text(await live), 'welcome back');
});

test("drops what a reconnect's history replays a second time, and only that (spec 3, 8)", { timeout: 30_000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const proxy = await startTcpProxy(server.port);
  t.after(() => proxy.close());
  const alice = connect(proxy.url, { uid: 'alice', channel: 'replay', ...FAST });
  t.after(() => alice.close());
  await next(alice, 'historyDone');
  const bob = await TestClient.join(server.url, 'bob', 'replay');
  t.after(() => bob.close());

  const messages = record(alice);
  const m2 = next(alice, 'message', (m) => text(m) === 'm2');
  bob.send('m1');
  bob.send('m2');
  alice.send('from alice');
  await bob.waitFor(1);
  await m2;

  const dropped = next(alice, 'close');
  proxy.down();
  assert.equal((await dropped).willReconnect, true);
  bob.send('m3');
  // Once a newcomer has seen m3, it is in the history alice will get.
  const probe = await TestClient.join(server.url, 'probe', 'replay');
  t.after(() => probe.close());
  await probe.waitFor(6);
  await probe.close();
  const reopened = next(alice, 'open');
  messages.length = 0;
  proxy.up();
  await reopened;
  await next(alice, 'historyDone');
  // The replay holds the joins of alice, bob and the probe, m1, m2, alice's own message and m3.
  // Alice saw all but the other joins (joins are never sent live) and m3 (sent while away).
  assert.deepEqual(messages.map((m) => [text(m), m.history]), [
    ['{"uid":"bob","channel":"replay"}', true],
    ['m3', true],
    ['{"uid":"probe","channel":"replay"}', true],
  ]);

  const repeat = next(alice, 'message');
  bob.send('m1');
  assert.deepEqual(await repeat, { type: 'text', text: 'm1', history: false });
});

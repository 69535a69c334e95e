// Liveness (spec 4) and the join timeout (issue limits), with short intervals so tests run fast.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { startServer, type RunningServer } from './helpers/server.js';
import { TestClient } from './helpers/client.js';
import { resolveConfig } from '../src/config.js';

const T = { timeout: 15_000 };

/** Shared by the ping tests: pings every 100 ms. */
let server: RunningServer;

before(async () => {
  server = await startServer(['--ping-interval', '100']);
});

after(async () => {
  assert.equal(await server.stop(), 0);
});

test('spec 4: a client that answers no pings is closed with 1001 after 3 missed pings; others stay', T, async () => {
  const healthy = await TestClient.join(server.url, 'healthy', 'live-1');
  const silent = new TestClient(server.url, 'mles-websocket', { autoPong: false });
  await silent.opened();
  silent.send(JSON.stringify({ uid: 'silent', channel: 'live-1' }));
  let pings = 0;
  silent.ws.on('ping', () => pings++);
  let healthyPings = 0;
  healthy.ws.on('ping', () => healthyPings++);

  assert.deepEqual(await silent.closed, { code: 1001, reason: 'ping timeout' });
  assert.equal(pings, 3, 'closed after exactly 3 unanswered pings');

  // Keep watching the healthy client for more than 3 further ping intervals.
  const seen = healthyPings;
  while (healthyPings < seen + 5) await once(healthy.ws, 'ping');
  assert.equal(healthy.ws.readyState, healthy.ws.OPEN);
  const other = await TestClient.join(server.url, 'other', 'live-1');
  other.send('still served');
  const got = await healthy.waitFor(healthy.received.length + 1);
  assert.equal(got.at(-1)!.text, 'still served');
  await Promise.all([healthy.close(), other.close()]);
});

test('spec 4: any frame from the client resets the count of unanswered pings', T, async () => {
  const chatty = new TestClient(server.url, 'mles-websocket', { autoPong: false });
  await chatty.opened();
  chatty.send(JSON.stringify({ uid: 'chatty', channel: 'live-2' }));
  const listener = await TestClient.join(server.url, 'listener', 'live-2');
  // Never a pong, but a data frame after every ping.
  let pings = 0;
  chatty.ws.on('ping', () => chatty.send(`after ping ${++pings}`));
  while (pings < 8) await once(chatty.ws, 'ping');
  assert.equal(chatty.ws.readyState, chatty.ws.OPEN, 'alive after 8 pings answered only with data');
  const got = await listener.waitFor(listener.received.length + 1);
  assert.match(got.at(-1)!.text, /^after ping \d+$/);
  await Promise.all([chatty.close(), listener.close()]);
});

test('spec 4: an unjoined connection is pinged and dropped too', T, async () => {
  const idle = new TestClient(server.url, 'mles-websocket', { autoPong: false });
  await idle.opened();
  assert.deepEqual(await idle.closed, { code: 1001, reason: 'ping timeout' });
});

test('spec 4: the default ping interval is 24 s', T, async () => {
  assert.equal(resolveConfig().pingIntervalMs, 24_000);
});

test('limits: --join-timeout closes a connection that never sends a join frame', T, async () => {
  const server = await startServer(['--join-timeout', '200']);
  try {
    const started = performance.now();
    const idle = new TestClient(server.url);
    const joined = await TestClient.join(server.url, 'prompt', 'timeout');
    assert.deepEqual(await idle.closed, { code: 1008, reason: 'no join frame in time' });
    assert.ok(performance.now() - started >= 150, 'not before the timeout');
    // A client that joined in time is not affected.
    const other = await TestClient.join(server.url, 'other', 'timeout');
    other.send('hello');
    assert.equal((await joined.waitFor(1))[0]!.text, 'hello');
    await Promise.all([joined.close(), other.close()]);
  } finally {
    assert.equal(await server.stop(), 0);
  }
});

test('limits: the join timeout defaults to 10 s', T, async () => {
  assert.equal(resolveConfig().joinTimeoutMs, 10_000);
});

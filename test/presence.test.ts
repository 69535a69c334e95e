// GET /.mles/presence against a real server process: who is joined to a channel now (people, not
// history), and with MLES_KEY only for a caller whose auth would let it join.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { startServer, type RunningServer } from './helpers/server.js';
import { TestClient } from './helpers/client.js';
import { authHash } from '../src/protocol/join.js';

async function start(t: TestContext, env: NodeJS.ProcessEnv = {}): Promise<RunningServer> {
  const server = await startServer([], { env });
  t.after(() => server.stop());
  return server;
}

async function presence(server: RunningServer, query: Record<string, string>): Promise<{ status: number; body: unknown }> {
  const url = `${server.url.replace(/^ws/, 'http')}/.mles/presence?${new URLSearchParams(query)}`;
  const res = await fetch(url);
  assert.equal(res.headers.get('cache-control'), 'no-store');
  return { status: res.status, body: await res.json() };
}

/** Asks until the online list is `expected` (joins and leaves land a moment after the socket event). */
async function onlineBecomes(server: RunningServer, query: Record<string, string>, expected: string[]): Promise<void> {
  for (;;) {
    const { status, body } = await presence(server, query);
    assert.equal(status, 200);
    const online = [...(body as { online: string[] }).online].sort();
    if (JSON.stringify(online) === JSON.stringify(expected)) return;
    await sleep(50);
  }
}

async function leave(client: TestClient): Promise<void> {
  client.ws.close();
  await client.closed;
}

test('presence lists the people joined now; one who leaves is gone, though history still has them', { timeout: 30_000 }, async (t) => {
  const server = await start(t);
  const alice = await TestClient.join(server.url, 'alice', 'garden');
  const bob = await TestClient.join(server.url, 'bob', 'garden');
  t.after(() => Promise.all([alice, bob].map(leave)));
  const elsewhere = await TestClient.join(server.url, 'carol', 'kitchen');
  t.after(() => leave(elsewhere));

  await onlineBecomes(server, { channel: 'garden', uid: 'alice' }, ['alice', 'bob']);
  await leave(bob);
  await onlineBecomes(server, { channel: 'garden', uid: 'alice' }, ['alice']);
  // A later joiner still finds bob's join frame in history; presence is what tells him apart.
  const dave = await TestClient.join(server.url, 'dave', 'garden');
  t.after(() => leave(dave));
  const history = await dave.waitFor(2);
  assert.ok(history.some((m) => m.text.includes('"bob"')));
  await onlineBecomes(server, { channel: 'garden', uid: 'dave' }, ['alice', 'dave']);

  assert.equal((await presence(server, { channel: 'garden' })).status, 400);
  assert.deepEqual(await presence(server, { channel: 'empty', uid: 'x' }), { status: 200, body: { online: [] } });
});

test('with MLES_KEY, presence answers only the auth that could join as that uid and channel', { timeout: 30_000 }, async (t) => {
  const key = 'presence-test-key';
  const server = await start(t, { MLES_KEY: key });
  const auth = (uid: string, channel: string): string => authHash(uid, channel, key);
  const alice = await TestClient.join(server.url, 'alice', 'vault', { auth: auth('alice', 'vault') });
  const bob = await TestClient.join(server.url, 'bob', 'vault', { auth: auth('bob', 'vault') });
  t.after(() => Promise.all([alice, bob].map(leave)));

  const refused = { error: 'auth does not match this uid and channel' };
  assert.deepEqual(await presence(server, { channel: 'vault', uid: 'alice' }), { status: 403, body: refused });
  assert.deepEqual(await presence(server, { channel: 'vault', uid: 'alice', auth: authHash('alice', 'vault') }), { status: 403, body: refused });
  // Bob's auth does not let anyone else look, nor does a channel's auth reach another channel.
  assert.equal((await presence(server, { channel: 'vault', uid: 'mallory', auth: auth('bob', 'vault') })).status, 403);
  assert.equal((await presence(server, { channel: 'vault', uid: 'alice', auth: auth('alice', 'other') })).status, 403);
  await onlineBecomes(server, { channel: 'vault', uid: 'alice', auth: auth('alice', 'vault').toUpperCase() }, ['alice', 'bob']);
});

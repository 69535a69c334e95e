// Issue 13: the HTTP server API and presence are cluster-wide. Two cluster nodes, on one Redis and
// on a 3-master Redis Cluster: any node's API sees members of every node, publishes to all of
// them, disconnects a member joined elsewhere and clears the shared history; a node that dies
// drops out of presence within the session TTL.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { adminOf } from './helpers/metrics.js';
import { request } from './helpers/http.js';
import { startServer, type RunningServer } from './helpers/server.js';
import { TestClient } from './helpers/client.js';
import { requireRedis, startRedis } from './helpers/redis.js';
import { requireRedisCluster, startRedisCluster } from './helpers/redis-cluster.js';

const KEY = 'cluster-api-key';
/** Short, so a dead node's sessions leave presence within the test; refreshed every third of it. */
const SESSION_TTL_MS = 3_000;

interface Node {
  server: RunningServer;
  adminPort: number;
}

async function api(node: Node, path: string, method = 'GET', body?: unknown): Promise<{ status: number; json: unknown }> {
  const res = await request(node.adminPort, path, {
    method,
    headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, json: JSON.parse(res.text) as unknown };
}

/** Asks until `read` returns `expected` (a join or a leave lands in Redis a moment later). */
async function becomes(read: () => Promise<unknown>, expected: unknown, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (JSON.stringify(value) === JSON.stringify(expected)) return;
    if (Date.now() > deadline) assert.fail(`${what}: ${JSON.stringify(value)}, want ${JSON.stringify(expected)}`);
    await sleep(50);
  }
}

const members = async (node: Node, channel: string): Promise<string[]> =>
  ((await api(node, `/api/channels/${encodeURIComponent(channel)}/members`)).json as Array<{ uid: string }>).map((m) => m.uid).sort();

async function presence(node: Node, channel: string, uid: string): Promise<string[]> {
  const res = await fetch(`${node.server.url.replace(/^ws/, 'http')}/.mles/presence?${new URLSearchParams({ channel, uid })}`);
  return [...((await res.json()) as { online: string[] }).online].sort();
}

async function waitForText(client: TestClient, text: string): Promise<void> {
  while (!client.texts().includes(text)) await client.waitFor(client.received.length + 1);
}

async function scenario(t: TestContext, brokerArgs: string[], stopBroker: () => Promise<void>): Promise<void> {
  const start = async (): Promise<Node> => {
    const server = await startServer(['--admin-port', '0', ...brokerArgs], {
      env: { MLES_API_KEY: KEY, MLES_CLUSTER_TTL_MS: String(SESSION_TTL_MS) },
    });
    t.after(() => server.stop('SIGKILL'));
    return { server, adminPort: Number((await adminOf(server)).port) };
  };
  const [a, b] = await Promise.all([start(), start()]);
  const clients: TestClient[] = [];
  t.after(() => Promise.all(clients.map((client) => client.close())));
  const join = async (node: Node, uid: string): Promise<TestClient> => {
    const client = await TestClient.join(node.server.url, uid, 'room');
    clients.push(client);
    return client;
  };

  const alice = await join(a, 'alice');
  const bob = await join(b, 'bob');
  await becomes(() => members(a, 'room'), ['alice', 'bob'], 'members seen from node a');
  await becomes(() => members(b, 'room'), ['alice', 'bob'], 'members seen from node b');
  assert.deepEqual(await presence(a, 'room', 'alice'), ['alice', 'bob'], 'the demo\'s presence is cluster-wide too');
  assert.deepEqual((await api(a, '/api/channels')).json, [{ channel: 'room', members: 2, history: 2 }]);

  // Published through node b's API: members of both nodes get it, and the shared history keeps it.
  assert.equal((await api(b, '/api/publish', 'POST', { channel: 'room', text: 'from the backend' })).status, 200);
  await Promise.all([waitForText(alice, 'from the backend'), waitForText(bob, 'from the backend')]);
  const history = (await api(a, '/api/channels/room/history')).json as Array<{ text: string }>;
  assert.deepEqual(history.at(-1), { text: 'from the backend' });
  assert.equal(history.length, 3);

  // Bob is on node b; node a's API disconnects him.
  assert.equal((await api(a, '/api/channels/room/members/nobody', 'DELETE')).status, 404);
  assert.equal((await api(a, '/api/channels/room/members/bob', 'DELETE')).status, 200);
  assert.deepEqual(await bob.closed, { code: 1008, reason: 'disconnected by an operator' });
  assert.equal(alice.ws.readyState, alice.ws.OPEN, 'only bob was disconnected');
  await becomes(() => members(b, 'room'), ['alice'], 'members after the disconnect');

  assert.equal((await api(b, '/api/channels/room/history', 'DELETE')).status, 200);
  assert.deepEqual((await api(a, '/api/channels/room/history')).json, []);

  // A node that dies cannot say its members left: their presence expires with the session TTL.
  const carol = await join(b, 'carol');
  await becomes(() => members(a, 'room'), ['alice', 'carol'], 'members with carol on node b');
  // Presence lists a session from its claim on; carol's join is stored once she gets messages.
  alice.send('welcome carol');
  await waitForText(carol, 'welcome carol');
  await b.server.stop('SIGKILL');
  await becomes(() => members(a, 'room'), ['alice'], 'members once node b is dead', SESSION_TTL_MS + 10_000);
  assert.deepEqual((await api(a, '/api/channels')).json, [{ channel: 'room', members: 1, history: 2 }]);

  // Without Redis the node serves its members alone, and the API says it cannot see the cluster.
  await stopBroker();
  for (const path of ['/api/channels', '/api/channels/room/members', '/api/channels/room/history']) {
    const res = await api(a, path);
    assert.equal(res.status, 503, path);
    assert.match((res.json as { error: string }).error, /unavailable/);
  }
  // Metrics are wanted most in an outage: they still answer (the history count keeps its last value).
  const metrics = await request(a.adminPort, '/metrics');
  assert.equal(metrics.status, 200);
  assert.match(metrics.text, /^mles_history_messages \d+$/m);
}

test('the API and presence are cluster-wide on nodes of one Redis', { timeout: 60_000 }, async (t) => {
  if (!requireRedis(t)) return;
  const redis = await startRedis();
  t.after(() => redis.stop());
  await scenario(t, ['--redis', redis.url], () => redis.stop());
});

test('the API and presence are cluster-wide on nodes of a Redis Cluster', { timeout: 90_000 }, async (t) => {
  if (!requireRedisCluster(t)) return;
  const cluster = await startRedisCluster();
  t.after(() => cluster.stop());
  await scenario(t, cluster.urls.flatMap((url) => ['--redis-cluster', url]), () => cluster.stop());
});

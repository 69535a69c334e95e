// Issue 8: mles nodes sharing one real Redis act as one service: fan-out across nodes exactly
// once, one order per channel on every node, shared history stitched to the live stream, the
// duplicate rule across nodes, a SIGKILLed node, a Redis restart, and --workers.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, runCli, type RunningServer } from './helpers/server.js';
import { TestClient } from './helpers/client.js';
import { requireRedis, startRedis, type RunningRedis } from './helpers/redis.js';
import { hasProgram } from './helpers/programs.js';
import { Redis } from 'ioredis';

const T = { timeout: 20_000 };
/** Dead nodes' sessions expire after this in these tests (30 s in production). */
const SESSION_TTL_MS = 1_500;

let redis: RunningRedis | undefined;
const nodes: RunningServer[] = [];

function startNode(args: string[] = []): Promise<RunningServer> {
  return startServer(['--redis', redis!.url, ...args], { env: { MLES_CLUSTER_TTL_MS: String(SESSION_TTL_MS) } });
}

before(async () => {
  // Skipping needs a test context: each test below calls requireRedis.
  if (!hasProgram('redis-server')) return;
  redis = await startRedis();
  nodes.push(...(await Promise.all([startNode(), startNode(), startNode()])));
});

after(async () => {
  await Promise.all(nodes.map((n) => n.stop('SIGKILL')));
  await redis?.stop();
});

/** Waits until `client` has received a message with exactly `text`. */
async function waitForText(client: TestClient, text: string): Promise<void> {
  while (!client.texts().includes(text)) await client.waitFor(client.received.length + 1);
}

/**
 * Joins and waits until the join is in effect: a probe's message from the first node arrives.
 * What it received stays: `live` checks that a late second copy of a probe never comes.
 */
async function joinReady(url: string, uid: string, channel: string): Promise<TestClient> {
  const client = await TestClient.join(url, uid, channel);
  const probe = await TestClient.join(nodes[0]!.url, `probe-${Math.random()}`, channel);
  const text = `probe ${Math.random()}`;
  probe.send(text);
  await waitForText(client, text);
  await probe.close();
  return client;
}

/** Resolves once `node` has logged `text` for the `n`th time. */
function nthLog(node: RunningServer, text: string, n: number): Promise<void> {
  return node.waitForLog(new RegExp(`(?:${text}[\\s\\S]*){${n}}`));
}

const count = (node: RunningServer, text: string): number => node.stderr().split(text).length - 1;

/**
 * What a client received apart from join frames (in its replay) and probes, once it is checked
 * that no message, probes included, arrived twice: every text a test sends is unique, so a copy
 * is a duplicate delivery. Join frames may repeat (a uid that rejoins is in history each time).
 */
function live(client: TestClient): string[] {
  const seen = new Set<string>();
  const messages: string[] = [];
  for (const text of client.texts()) {
    if (text.startsWith('{')) continue;
    assert.ok(!seen.has(text), `${text} delivered more than once`);
    seen.add(text);
    if (!text.startsWith('probe')) messages.push(text);
  }
  return messages;
}

async function waitForLive(client: TestClient, n: number): Promise<string[]> {
  while (live(client).length < n) await client.waitFor(client.received.length + 1);
  return live(client);
}

test('3 nodes: every member gets every other member\'s messages exactly once, never its own', T, async (t) => {
  if (!requireRedis(t)) return;
  const members = await Promise.all(nodes.map((n, i) => joinReady(n.url, `m${i}`, 'three')));
  members.forEach((m, i) => m.send(`from m${i}`));
  members.forEach((m, i) => m.send(`end m${i}`));
  for (const [i, member] of members.entries()) {
    for (const j of [0, 1, 2].filter((j) => j !== i)) await waitForText(member, `end m${j}`);
    const got = live(member).sort();
    const expected = [0, 1, 2].filter((j) => j !== i).flatMap((j) => [`end m${j}`, `from m${j}`]).sort();
    assert.deepEqual(got, expected, `m${i} on node ${i}`);
  }
  await Promise.all(members.map((m) => m.close()));
});

test('concurrent publishers on different nodes: every node delivers the channel in the same order', T, async (t) => {
  if (!requireRedis(t)) return;
  const channel = 'order';
  const readers = await Promise.all(nodes.map((n, i) => joinReady(n.url, `reader${i}`, channel)));
  const writers = await Promise.all(nodes.map((n, i) => joinReady(n.url, `writer${i}`, channel)));
  const perWriter = 300;
  // Interleave the writers' frames in small bursts so the nodes really publish concurrently.
  for (let k = 0; k < perWriter; k += 10) {
    for (const [i, writer] of writers.entries()) {
      for (let j = k; j < k + 10; j++) writer.send(`w${i}:${j}`);
    }
    await new Promise((resolve) => setImmediate(resolve));
  }
  const total = perWriter * writers.length;
  const orders = await Promise.all(readers.map((r) => waitForLive(r, total)));
  assert.deepEqual(orders[1], orders[0], 'node 1 delivers as node 0');
  assert.deepEqual(orders[2], orders[0], 'node 2 delivers as node 0');
  for (const [i] of writers.entries()) {
    const own = orders[0]!.filter((text) => text.startsWith(`w${i}:`));
    assert.deepEqual(own, Array.from({ length: perWriter }, (_, j) => `w${i}:${j}`), `writer ${i}'s order is kept`);
  }
  // The writers see the same order too, minus their own messages.
  for (const [i, writer] of writers.entries()) {
    assert.deepEqual(await waitForLive(writer, total - perWriter), orders[0]!.filter((text) => !text.startsWith(`w${i}:`)), `writer ${i}`);
  }
  await Promise.all([...readers, ...writers].map((c) => c.close()));
});

test('newcomers on other nodes get the whole history, then the live stream, nothing missing or doubled', T, async (t) => {
  if (!requireRedis(t)) return;
  const channel = 'history';
  const writer = await joinReady(nodes[0]!.url, 'writer', channel);
  const total = 150; // within the default limit of 200, so every newcomer must see all of them
  const newcomers: Array<Promise<TestClient>> = [];
  for (let i = 0; i < total; i++) {
    writer.send(`h${i}`);
    // Newcomers join on the other nodes while the writer is publishing.
    if (i % 30 === 15) newcomers.push(TestClient.join(nodes[1 + (i % 2)]!.url, `newcomer${i}`, channel));
    if (i % 5 === 0) await new Promise((resolve) => setImmediate(resolve));
  }
  writer.send('done');
  const expected = [...Array.from({ length: total }, (_, i) => `h${i}`), 'done'];
  for (const newcomer of await Promise.all(newcomers)) {
    await waitForText(newcomer, 'done');
    assert.deepEqual(live(newcomer), expected);
  }
  await Promise.all([writer, ...(await Promise.all(newcomers))].map((c) => c.close()));
});

test('a member that sends and closes at once loses nothing: its last messages reach Redis before its session is released', T, async (t) => {
  if (!requireRedis(t)) return;
  // The close frame can arrive while the join is still on its way to Redis; the messages sent
  // meanwhile carry the session as their guard and used to reach Redis after its release.
  for (let round = 0; round < 20; round++) {
    const channel = `hasty-${round}`;
    const reader = await joinReady(nodes[1]!.url, 'reader', channel);
    const writer = await TestClient.join(nodes[0]!.url, 'writer', channel);
    const sent = Array.from({ length: 30 }, (_, i) => `r${round} m${i}`);
    for (const text of sent) writer.send(text);
    await writer.close();
    assert.deepEqual(await waitForLive(reader, sent.length), sent, `round ${round}`);
    await reader.close();
  }
});

test('duplicate rule across nodes: refused on every other node, released at once on close', T, async (t) => {
  if (!requireRedis(t)) return;
  const first = await joinReady(nodes[0]!.url, 'twin', 'dup');
  for (const node of nodes.slice(1)) {
    const second = await TestClient.join(node.url, 'twin', 'dup');
    assert.deepEqual(await second.closed, { code: 4409, reason: 'uid already joined' });
    assert.equal(second.received.length, 0, 'a refused duplicate gets no history');
  }
  await first.close();
  // Leaving and rejoining at once on another node, again and again.
  for (let round = 0; round < 6; round++) {
    const again = await joinReady(nodes[round % 3]!.url, 'twin', 'dup');
    await again.close();
  }
});

test('a SIGKILLed node does not disturb the others; its sessions are released within the TTL', T, async (t) => {
  if (!requireRedis(t)) return;
  const doomed = await startNode();
  const victim = await joinReady(doomed.url, 'victim', 'kill');
  const a = await joinReady(nodes[0]!.url, 'a', 'kill');
  const b = await joinReady(nodes[1]!.url, 'b', 'kill');
  const refused = await TestClient.join(nodes[0]!.url, 'victim', 'kill');
  assert.equal((await refused.closed).code, 4409);
  assert.equal(await doomed.stop('SIGKILL'), 'SIGKILL');
  await victim.closed;
  a.send('still here');
  await waitForText(b, 'still here');
  const killedAt = Date.now();
  let back: TestClient;
  for (;;) {
    back = await TestClient.join(nodes[1]!.url, 'victim', 'kill');
    const joined = await Promise.race([back.closed.then(() => false), back.waitFor(1).then(() => true, () => false)]);
    if (joined) break;
    assert.equal((await back.closed).code, 4409);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.ok(Date.now() - killedAt < SESSION_TTL_MS + 1_000, 'the dead node\'s session expired within its TTL');
  await Promise.all([a.close(), b.close(), back.close()]);
});

test('Redis restart: nodes serve their members locally meanwhile, then rejoin; nothing received is lost from history', { timeout: 30_000 }, async (t) => {
  if (!requireRedis(t)) return;
  const channel = 'outage';
  const a = await joinReady(nodes[0]!.url, 'a', channel);
  const c = await joinReady(nodes[0]!.url, 'c', channel);
  const b = await joinReady(nodes[1]!.url, 'b', channel);
  a.send('before');
  await Promise.all([waitForText(b, 'before'), waitForText(c, 'before')]);

  const outages = nodes.map((n) => count(n, 'redis unreachable'));
  await redis!.kill();
  await Promise.all(nodes.map((n, i) => nthLog(n, 'redis unreachable', outages[i]! + 1)));
  a.send('during');
  await waitForText(c, 'during'); // same node: served locally at once
  // A join during the outage gets the node's own copy of the history.
  const d = await TestClient.join(nodes[1]!.url, 'd', channel);
  await waitForText(d, 'before');

  const rejoins = nodes.map((n) => count(n, 'joined the cluster'));
  await redis!.start();
  await Promise.all(nodes.map((n, i) => nthLog(n, 'joined the cluster', rejoins[i]! + 1)));
  a.send('after');
  await Promise.all([b, c, d].map((m) => waitForText(m, 'after')));
  assert.deepEqual(live(c), ['before', 'during', 'after'], 'c got each message once');
  // b (another node) gets 'during' live only if its node was back before a's node replayed it;
  // never twice (live() fails on any second copy).
  assert.deepEqual(live(b).filter((text) => text !== 'during'), ['before', 'after']);

  // Redis restarted empty: the nodes put back what their members had received.
  const reader = await TestClient.join(nodes[2]!.url, 'reader', channel);
  await waitForText(reader, 'after');
  assert.deepEqual(live(reader), ['before', 'during', 'after']);
  await Promise.all([a, b, c, d, reader].map((m) => m.close()));
});

test('a lost subscription (CLIENT KILL TYPE pubsub) loses nothing: every node fetches what it missed by seq, in the one order', T, async (t) => {
  if (!requireRedis(t)) return;
  const channel = 'blip';
  const members = await Promise.all(nodes.map((node, i) => joinReady(node.url, `m${i}`, channel)));
  const publishers = await Promise.all([0, 1].map((i) => joinReady(nodes[i]!.url, `p${i}`, channel)));
  const lost = nodes.map((n) => count(n, 'redis subscription lost'));
  const back = nodes.map((n) => count(n, 'caught up'));
  const beyond = nodes.map((n) => count(n, 'history no longer holds'));
  const send = (from: number, to: number): void => {
    for (let i = from; i < to; i++) for (const [p, publisher] of publishers.entries()) publisher.send(`p${p} ${i}`);
  };
  send(0, 100);
  // Every node has these 200 before its subscription goes, so what it misses is at most the next
  // 200: within the history (--limit 200). Killed earlier, a node missed up to 400 and lost some.
  await Promise.all(members.map((m) => waitForLive(m, 200)));
  const admin = new Redis(redis!.url);
  try {
    assert.ok(Number(await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub')) >= nodes.length);
  } finally {
    admin.disconnect();
  }
  send(100, 200); // while the nodes' subscriptions are gone: stored in Redis, missed on the stream
  await Promise.all(nodes.map((n, i) => nthLog(n, 'redis subscription lost', lost[i]! + 1)));
  await Promise.all(nodes.map((n, i) => nthLog(n, 'caught up', back[i]! + 1)));
  assert.deepEqual(nodes.map((n) => count(n, 'history no longer holds')), beyond, 'every node missed only what history holds');
  send(200, 300);
  const received = await Promise.all(members.map((m) => waitForLive(m, 600)));
  for (const [i, messages] of received.entries()) {
    assert.equal(messages.length, 600, `m${i} got each message once`);
    assert.deepEqual(messages, received[0], `m${i} got them in the same order as m0`);
  }
  for (const p of [0, 1]) {
    assert.deepEqual(received[0]!.filter((m) => m.startsWith(`p${p} `)), Array.from({ length: 300 }, (_, i) => `p${p} ${i}`));
  }
  await Promise.all([...members, ...publishers].map((c) => c.close()));
});

test('Redis slower than the members: what waits for it is bounded by --max-buffered; the sender is told, nothing accepted is lost', T, async (t) => {
  if (!requireRedis(t)) return;
  const node = await startNode(['--max-buffered', '64KiB']);
  t.after(() => node.stop('SIGKILL'));
  const channel = 'stalled';
  const sender = await joinReady(node.url, 'sender', channel);
  const reader = await joinReady(node.url, 'reader', channel);
  const admin = new Redis(redis!.url);
  t.after(() => admin.disconnect());
  // Redis stops taking writes (scripts, PUBLISH) but stays connected: the node's queue only grows.
  await admin.call('CLIENT', 'PAUSE', '20000', 'WRITE');
  const payload = 'x'.repeat(4096);
  for (let i = 0; i < 100; i++) sender.send(`${i} ${payload}`);
  assert.deepEqual(await sender.closed, { code: 1011, reason: 'history unavailable: a message was not stored' });
  await node.waitForLog('too much waiting for Redis');
  await admin.call('CLIENT', 'UNPAUSE');
  // What the node accepted before its bound reaches every member and history, in order, ahead
  // of what the reader sends next.
  const watcher = await joinReady(nodes[0]!.url, 'watcher', channel);
  reader.send('done');
  await waitForText(watcher, 'done');
  const indices = (texts: string[]): number[] => texts.filter((text) => text.endsWith(payload)).map((text) => Number(text.split(' ')[0]));
  const accepted = indices(live(watcher)).length;
  const expected = Array.from({ length: accepted }, (_, i) => i);
  assert.ok(accepted >= 1 && accepted < 16, `${accepted} messages of 4 KiB fit in 64 KiB`);
  assert.deepEqual(indices(live(watcher)), expected);
  await waitForLive(reader, accepted);
  assert.deepEqual(indices(live(reader)), expected);
  const late = await joinReady(nodes[0]!.url, 'late', channel);
  assert.deepEqual(indices(late.texts()), expected, 'history holds what was accepted, once');
  await Promise.all([reader.close(), watcher.close(), late.close()]);
});

test('--workers 2: two processes behind one port, one cluster', T, async (t) => {
  if (!requireRedis(t)) return;
  const refused = await runCli(['--port', '0', '--workers', '2']);
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /--workers: .*--redis/);

  const server = await startServer(['--redis', redis!.url, '--workers', '2']);
  try {
    await server.waitForLog(/worker listening[\s\S]*worker listening/);
    // Connections are handed to the workers in turn, so these land on both.
    const members = [];
    for (let i = 0; i < 4; i++) members.push(await TestClient.join(server.url, `w${i}`, 'workers'));
    const twin = await TestClient.join(server.url, 'w0', 'workers');
    assert.equal((await twin.closed).code, 4409);
    for (const [i, member] of members.entries()) member.send(`hi from w${i}`);
    for (const [i, member] of members.entries()) {
      for (const j of [0, 1, 2, 3].filter((j) => j !== i)) await waitForText(member, `hi from w${j}`);
    }
    await Promise.all(members.map((m) => m.close()));
  } finally {
    assert.equal(await server.stop(), 0);
  }
});

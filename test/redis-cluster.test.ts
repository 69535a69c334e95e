// Issue 12, item 5: mles nodes on a sharded Redis Cluster (--redis-cluster) act as one service.
// Channels spread over the shards; each member gets every other member's messages exactly once,
// in one order on every node; and a slot moving to another shard (MOVED, ASK) or a shard's
// failover loses nothing a member received, nor doubles it.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type RunningServer } from './helpers/server.js';
import { TestClient } from './helpers/client.js';
import { requireRedisCluster, startRedisCluster, type RunningRedisCluster } from './helpers/redis-cluster.js';

const T = { timeout: 90_000 };
const clusters: RunningRedisCluster[] = [];
const servers: RunningServer[] = [];

after(async () => {
  await Promise.all(servers.map((s) => s.stop('SIGKILL')));
  await Promise.all(clusters.map((c) => c.stop()));
});

async function nodesOn(cluster: RunningRedisCluster, n: number): Promise<RunningServer[]> {
  const seeds = cluster.urls.flatMap((url) => ['--redis-cluster', url]);
  const started = await Promise.all(Array.from({ length: n }, () => startServer([...seeds, '--history', 'memory', '--limit', '2000'])));
  servers.push(...started);
  return started;
}

async function waitForText(client: TestClient, text: string): Promise<void> {
  while (!client.texts().includes(text)) await client.waitFor(client.received.length + 1);
}

/** Messages a member received apart from join frames, checked to hold no copy. */
function live(client: TestClient): string[] {
  const messages = client.texts().filter((text) => !text.startsWith('{'));
  assert.equal(new Set(messages).size, messages.length, 'no message delivered twice');
  return messages;
}

async function waitForLive(client: TestClient, n: number): Promise<string[]> {
  while (live(client).length < n) await client.waitFor(client.received.length + 1);
  return live(client);
}

/** Members on every node of `channel`, joined for sure: each has the others' probes. */
async function membersOf(nodes: RunningServer[], channel: string): Promise<TestClient[]> {
  const members = await Promise.all(nodes.map((node, i) => TestClient.join(node.url, `m${i}-${channel}`, channel)));
  for (const [i, member] of members.entries()) member.send(`probe ${i}`);
  for (const [i, member] of members.entries()) {
    for (const j of members.keys()) if (j !== i) await waitForText(member, `probe ${j}`);
  }
  return members;
}

/** Publishers p0..pk on the nodes send `from..to`; every member then has them all. */
function send(publishers: TestClient[], from: number, to: number): void {
  for (let i = from; i < to; i++) for (const [p, publisher] of publishers.entries()) publisher.send(`p${p} ${i}`);
}

/** Every member got every publisher's messages once, in the publisher's order, and all in one order. */
async function assertOneOrder(members: TestClient[], publishers: number, count: number): Promise<void> {
  const received = await Promise.all(members.map((m) => waitForLive(m, publishers * count + members.length - 1)));
  const stream = received.map((messages) => messages.filter((m) => !m.startsWith('probe')));
  for (const [i, messages] of stream.entries()) {
    assert.equal(messages.length, publishers * count, `member ${i} got each message once`);
    assert.deepEqual(messages, stream[0], `member ${i} got them in the same order as member 0`);
  }
  for (let p = 0; p < publishers; p++) {
    assert.deepEqual(stream[0]!.filter((m) => m.startsWith(`p${p} `)), Array.from({ length: count }, (_, i) => `p${p} ${i}`));
  }
}

test('3 nodes on a 3-master Redis Cluster: channels on every shard, exactly once, one order, shared history', T, async (t) => {
  if (!requireRedisCluster(t)) return;
  const cluster = await startRedisCluster();
  clusters.push(cluster);
  const nodes = await nodesOn(cluster, 3);
  const masters = await cluster.masters();
  assert.equal(masters.length, 3);
  for (const master of masters) {
    // A channel whose keys (and sharded stream) live on this master.
    const channel = await cluster.nameOn(master, 'shard-');
    assert.equal(await cluster.slotOwner(`mles:{${channel}}:seq`), master);
    const members = await membersOf(nodes, channel);
    const publishers = await Promise.all(nodes.slice(0, 2).map((node, i) => TestClient.join(node.url, `p${i}-${channel}`, channel)));
    send(publishers, 0, 100);
    await assertOneOrder(members, 2, 100);
    // A newcomer on the third node gets the whole history, then the live stream.
    const newcomer = await TestClient.join(nodes[2]!.url, `late-${channel}`, channel);
    publishers[0]!.send('after');
    await waitForText(newcomer, 'after');
    const heard = live(newcomer).filter((m) => !m.startsWith('probe'));
    assert.equal(heard.length, 201, 'history (200) then the live message, each once');
    await Promise.all([...members, ...publishers, newcomer].map((c) => c.close()));
  }
  // The duplicate rule holds across nodes on the cluster.
  const first = await TestClient.join(nodes[0]!.url, 'twin', 'dup');
  await first.waitFor(0);
  const second = await TestClient.join(nodes[1]!.url, 'twin', 'dup');
  assert.deepEqual(await second.closed, { code: 4409, reason: 'uid already joined' });
  await first.close();
});

test('a slot moving to another shard mid-traffic (ASK, then MOVED) loses nothing and doubles nothing', T, async (t) => {
  if (!requireRedisCluster(t)) return;
  const cluster = await startRedisCluster();
  clusters.push(cluster);
  const nodes = await nodesOn(cluster, 2);
  const masters = await cluster.masters();
  const channel = await cluster.nameOn(masters[0]!, 'moving-');
  const slot = cluster.slotOf(`mles:{${channel}}:seq`);
  const members = await membersOf(nodes, channel);
  const publishers = await Promise.all(nodes.map((node, i) => TestClient.join(node.url, `p${i}`, channel)));
  send(publishers, 0, 100);
  const migration = await cluster.beginSlotMigration(slot, masters[1]!);
  send(publishers, 100, 150); // while the slot is marked migrating: still on the source
  await migration.migrateKeys();
  send(publishers, 150, 200); // keys on the target, slot not handed over: ASK
  await migration.finish();
  send(publishers, 200, 300); // after the hand-over: MOVED, then the new owner
  await assertOneOrder(members, 2, 300);
  assert.equal(await cluster.slotOwner(slot), masters[1]);
  await Promise.all([...members, ...publishers].map((c) => c.close()));
});

test('a shard failing over to its replica mid-traffic loses nothing a member received', T, async (t) => {
  if (!requireRedisCluster(t)) return;
  const cluster = await startRedisCluster({ replicas: true });
  clusters.push(cluster);
  const nodes = await nodesOn(cluster, 2);
  const masters = await cluster.masters();
  const channel = await cluster.nameOn(masters[0]!, 'failing-');
  const members = await membersOf(nodes, channel);
  const publishers = await Promise.all(nodes.map((node, i) => TestClient.join(node.url, `p${i}`, channel)));
  send(publishers, 0, 100);
  const promoted = await cluster.failover(masters[0]!);
  send(publishers, 100, 200);
  await assertOneOrder(members, 2, 200);
  assert.equal(await cluster.slotOwner(`mles:{${channel}}:seq`), promoted);
  // History on the promoted master holds every message once.
  const reader = await TestClient.join(nodes[0]!.url, 'reader', channel);
  publishers[1]!.send('end');
  await waitForText(reader, 'end');
  assert.equal(live(reader).filter((m) => /^p\d /.test(m)).length, 400);
  await Promise.all([...members, ...publishers, reader].map((c) => c.close()));
});

test('a shard down without a replica: the other shards\' channels carry on; its channels are served per node, and once it is back (empty) nothing a member received is lost', { timeout: 150_000 }, async (t) => {
  if (!requireRedisCluster(t)) return;
  const cluster = await startRedisCluster({ requireFullCoverage: false, nodeTimeoutMs: 1000 });
  clusters.push(cluster);
  const nodes = await nodesOn(cluster, 2);
  const masters = await cluster.masters();
  const [down, up] = [await cluster.nameOn(masters[0]!, 'down-'), await cluster.nameOn(masters[1]!, 'up-')];
  const downMembers = await membersOf(nodes, down);
  const upMembers = await membersOf(nodes, up);
  const downPublishers = await Promise.all(nodes.map((node, i) => TestClient.join(node.url, `p${i}`, down)));
  const upPublishers = await Promise.all(nodes.map((node, i) => TestClient.join(node.url, `p${i}`, up)));
  send(downPublishers, 0, 50);
  send(upPublishers, 0, 50);
  await Promise.all(downMembers.map((m) => waitForLive(m, 2 * 50 + 1)));
  await cluster.kill(masters[0]!);
  send(upPublishers, 50, 100);
  send(downPublishers, 50, 100);
  await assertOneOrder(upMembers, 2, 100);
  // Meanwhile each node serves the shard's channel to its own members.
  for (const [i, member] of downMembers.entries()) await waitForText(member, `p${i} 99`);
  await cluster.restart(masters[0]!);
  await cluster.waitHealthy();
  send(downPublishers, 100, 150);
  for (const member of downMembers) for (const p of [0, 1]) await waitForText(member, `p${p} 149`);
  for (const [i, member] of downMembers.entries()) {
    const heard = live(member).filter((m) => !m.startsWith('probe'));
    for (const p of [0, 1]) {
      const own = heard.filter((m) => m.startsWith(`p${p} `));
      const expected = Array.from({ length: 150 }, (_, n) => `p${p} ${n}`);
      // Another node's messages of the outage come when it is back, after what this member saw meanwhile.
      assert.deepEqual([...own].sort(), [...expected].sort(), `member ${i} got each of p${p}'s messages once`);
      if (p === i) assert.deepEqual(own, expected, `member ${i} got its own node's p${p} in order`);
    }
  }
  // History holds every message once: what each node served alone is appended when the shard is back.
  const reader = await TestClient.join(nodes[0]!.url, 'reader', down);
  downPublishers[0]!.send('end');
  await waitForText(reader, 'end');
  const history = live(reader).filter((m) => /^p\d /.test(m));
  for (const p of [0, 1]) {
    assert.deepEqual(history.filter((m) => m.startsWith(`p${p} `)), Array.from({ length: 150 }, (_, n) => `p${p} ${n}`), `history keeps p${p}'s messages once, in order`);
  }
  await Promise.all([...downMembers, ...upMembers, ...downPublishers, ...upPublishers, reader].map((c) => c.close()));
});

// Contract (issue 12, item 5): how mles's Redis use (per-channel keys under one hash tag, a Lua
// script that appends and publishes, one subscriber following channels) behaves on a real
// sharded Redis Cluster with ioredis 6. The Redis Cluster broker relies on these findings; an
// ioredis or Redis upgrade that changes them fails here, loudly.
//
// Findings (Redis 7.0, ioredis 6.0.0):
// - Sharded pub/sub: `new Cluster(seeds, { shardedSubscribers: true })`, then
//   `cluster.ssubscribe(ch)` (channels of ONE slot per call, else it rejects "Possible CROSSSLOT").
//   Messages arrive on the Cluster as 'smessageBuffer' (channel: Buffer, message: Buffer) and
//   'smessage' (strings; converted only while it has listeners). No 'messageBuffer' for shard
//   channels. The group keeps one extra connection per master, opened only once that master
//   owns a subscribed channel; one Cluster can both run commands and ssubscribe.
// - A script may SPUBLISH to a shard channel in its own slot: `mles:{c}:live` next to
//   `mles:{c}:seq|history` works (INCRBY, RPUSH, SPUBLISH in one EVAL); another slot's channel
//   fails with "Script attempted to access a non local key". SPUBLISH's reply counts only the
//   receivers on the node that ran it (and its replicas' clients are not counted).
// - defineCommand scripts: ioredis sends EVAL the first time on each socket, then EVALSHA, and on
//   NOSCRIPT resends as EVAL: new nodes, failovers and restarts need no SCRIPT LOAD.
// - Slot migration (IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE):
//   * while the slot's keys are all on the source, scripts run there and subscribers get them;
//   * while they are split, a multi-key script gets TRYAGAIN; ioredis retries it after
//     retryDelayOnTryAgain (100 ms) on a RANDOM node (which answers MOVED back to the source),
//     until maxRedirections (16, ~1.6 s), then rejects with "Too many Cluster redirections.
//     Last error: ReplyError: TRYAGAIN ..." (or "... MOVED ..."): a failed append to retry;
//   * once they are all on the target, the source answers ASK and ioredis runs the script on the
//     target (transparently): it succeeds, but its SPUBLISH reaches nobody (subscribers are still
//     on the source): the message is in history only. Live streams must detect the sequence gap.
//   * on SETSLOT NODE the source sends its subscribers an unsolicited `sunsubscribe`; ioredis
//     treats it as MOVED: refreshes the slot map, re-sends SSUBSCRIBE on the new owner and emits
//     'subscribersReady' on the Cluster. Nothing tells the application that a subscription was
//     dropped; 'subscribersReady' (after any topology change) is the only hook, and ioredis
//     does not report a failed re-subscribe (debug log only).
//   * ioredis refreshes from a random node: if that node has not heard of the move yet, nothing
//     changes until the next refresh. The default cluster options do NOT refresh periodically
//     (slotsRefreshInterval is undefined, though its doc says 5000): set it as a safety net.
// - Failover (CLUSTER FAILOVER on the replica): the subscriber connection to the old master is
//   closed, ioredis emits '-subscriber', refreshes, subscribes on the new master and emits
//   'subscribersReady' within ~20 ms; commands and scripts follow MOVED transparently.
// - A master down without replica: every command to its slots rejects (with
//   enableOfflineQueue: false) after maxRedirections retries ("Connection is closed." at first,
//   "CLUSTERDOWN The cluster is down" once the others have marked it failed); other slots work.
//   The sharded subscriber for it reconnects in a tight loop (~every 25 ms), emitting 'error'
//   ("Connection is closed.") on the Cluster each time - an 'error' listener is required - plus
//   'nodeError', '-subscriber' and 'subscribersReady'. After the node is back, the subscription
//   is restored. Pool connections report 'node error' (with a space).
// - Retries: maxRetriesPerRequest in redisOptions does not bound cluster-level retries; a command
//   fails after maxRedirections x retryDelayOnFailover/ClusterDown/TryAgain. Set those delays
//   to 0 (or maxRedirections low) to fail fast.
// - Options that matter: enableOfflineQueue: false (else commands wait for a ready cluster; the
//   sharded subscribers always queue, whatever redisOptions says); scaleReads: 'master' (the
//   default; replicas lag, and scripts go to masters anyway); natMap when nodes announce
//   addresses clients cannot reach (CLUSTER SLOTS gives the nodes' own view; here 127.0.0.1);
//   slotsRefreshTimeout (1000 ms default) bounds each CLUSTER SLOTS during refreshes.
// - Sharded pub/sub is lossy around topology changes (the ASK window, the re-subscribe gap after
//   a move or failover, a shard's outage): a node must compare each batch's first sequence
//   number with the last it saw, and treat 'subscribersReady'/'-subscriber' as "maybe missed
//   something", then read the history.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import { Cluster, type ClusterOptions } from 'ioredis';
import { hasProgram } from './helpers/programs.js';
import { requireRedisCluster, startRedisCluster, type RunningRedisCluster } from './helpers/redis-cluster.js';

const T = { timeout: 30_000 };

/** Appends to a channel's history and publishes the entry with its sequence number. */
const PUBLISH = `
local seq = redis.call('INCRBY', KEYS[1], 1)
redis.call('RPUSH', KEYS[2], ARGV[2])
local receivers = redis.call('SPUBLISH', ARGV[1], seq .. ' ' .. ARGV[2])
return { seq, receivers }
`;

type ScriptCluster = Cluster & { probePublish(seq: string, history: string, live: string, entry: string | Buffer): Promise<[number, number]> };

const keysOf = (channel: string): { seq: string; history: string; live: string } => ({
  seq: `mles:{${channel}}:seq`,
  history: `mles:{${channel}}:history`,
  live: `mles:{${channel}}:live`,
});

const clients: Cluster[] = [];

/** The recipe: sharded subscribers, fail fast while a node is away, periodic slot refresh. */
function connect(cluster: RunningRedisCluster, overrides: ClusterOptions = {}): ScriptCluster {
  const client = new Cluster(cluster.seeds, {
    shardedSubscribers: true,
    enableOfflineQueue: false,
    slotsRefreshInterval: 2000,
    redisOptions: { maxRetriesPerRequest: 0 },
    ...overrides,
  }) as ScriptCluster;
  client.defineCommand('probePublish', { numberOfKeys: 2, lua: PUBLISH });
  client.on('error', () => {}); // the sharded subscribers' reconnect failures
  clients.push(client);
  return client;
}

async function ready(client: Cluster): Promise<void> {
  if (client.status !== 'ready') await once(client, 'ready');
}

function publish(client: ScriptCluster, channel: string, entry: string | Buffer): Promise<[number, number]> {
  const { seq, history, live } = keysOf(channel);
  return client.probePublish(seq, history, live, entry);
}

/** Every shard message a client receives, by channel, with an event per arrival. */
class Inbox extends EventEmitter {
  readonly byChannel = new Map<string, Buffer[]>();
  constructor(client: Cluster) {
    super();
    client.on('smessageBuffer', (channel: Buffer, message: Buffer) => {
      const name = channel.toString();
      const list = this.byChannel.get(name) ?? [];
      list.push(message);
      this.byChannel.set(name, list);
      this.emit('message');
    });
  }

  texts(live: string): string[] {
    return (this.byChannel.get(live) ?? []).map((m) => m.toString());
  }

  /** Resolves once `live` has received `count` messages in all. */
  async waitFor(live: string, count: number): Promise<string[]> {
    while (this.texts(live).length < count) await once(this, 'message');
    return this.texts(live);
  }
}

/** Resolves once the master at `port` has `count` subscribers of `live` (ioredis re-subscribes asynchronously). */
async function waitSubscribers(cluster: RunningRedisCluster, port: number, live: string, count = 1): Promise<void> {
  for (;;) {
    const [, n] = (await cluster.command(port, 'PUBSUB', 'SHARDNUMSUB', live)) as [string, number];
    if (n === count) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

let cluster: RunningRedisCluster | undefined;

before(async () => {
  if (!hasProgram('redis-server') || !hasProgram('redis-cli')) return;
  cluster = await startRedisCluster();
});

after(async () => {
  for (const client of clients) client.disconnect();
  await cluster?.stop();
});

test('slotOf agrees with CLUSTER KEYSLOT, hash tags included', T, async (t) => {
  if (!requireRedisCluster(t)) return;
  const port = cluster!.nodes[0]!.port;
  for (const key of ['chan', 'mles:{chan}:seq', 'mles:{chan}:live:3', '{}x', 'a{}b{c}', '{{x}}', 'ünïcode', '']) {
    assert.equal(cluster!.slotOf(key), await cluster!.command(port, 'CLUSTER', 'KEYSLOT', key), key);
  }
  assert.equal(cluster!.slotOf('mles:{chan}:seq'), cluster!.slotOf('mles:{chan}:live'));
});

test('a script INCRBYs, RPUSHes and SPUBLISHes in its slot; ssubscribe receives it as smessage and smessageBuffer', T, async (t) => {
  if (!requireRedisCluster(t)) return;
  const client = connect(cluster!); // one Cluster both runs scripts and subscribes
  await ready(client);
  const { live, history } = keysOf('alpha');
  const strings: Array<[string, string]> = [];
  client.on('smessage', (channel: string, message: string) => strings.push([channel, message]));
  const inbox = new Inbox(client);
  assert.equal(await client.ssubscribe(live), 1);

  assert.deepEqual(await publish(client, 'alpha', 'one'), [1, 1]);
  const binary = Buffer.from([0, 1, 0xfe, 0xff, 0x0a]);
  assert.deepEqual(await publish(client, 'alpha', binary), [2, 1]);
  await inbox.waitFor(live, 2);
  const [first, second] = inbox.byChannel.get(live)!;
  assert.equal(first!.toString(), '1 one');
  assert.ok(second!.equals(Buffer.concat([Buffer.from('2 '), binary])), 'smessageBuffer is binary-safe');
  assert.deepEqual(strings[0], [live, '1 one']);
  assert.deepEqual(await client.lrangeBuffer(history, 0, -1), [Buffer.from('one'), binary]);

  // The shard channel must be in the script's slot.
  const other = keysOf('beta');
  assert.notEqual(cluster!.slotOf(other.live), cluster!.slotOf(live));
  await assert.rejects(client.probePublish(keysOf('alpha').seq, history, other.live, 'x'), /non local key/);
  // Channels of different slots in one ssubscribe call are refused by ioredis itself.
  await assert.rejects(client.ssubscribe(live, other.live), /CROSSSLOT/);
});

test('one subscriber receives channels of all three masters', T, async (t) => {
  if (!requireRedisCluster(t)) return;
  const publisher = connect(cluster!);
  const subscriber = connect(cluster!);
  await Promise.all([ready(publisher), ready(subscriber)]);
  const masters = await cluster!.masters();
  assert.equal(masters.length, 3);
  const channels = await Promise.all(masters.map((port) => cluster!.nameOn(port, 'spread')));
  const inbox = new Inbox(subscriber);
  for (const channel of channels) await subscriber.ssubscribe(keysOf(channel).live);
  for (const [i, channel] of channels.entries()) {
    assert.equal(await cluster!.slotOwner(keysOf(channel).live), masters[i]);
    assert.deepEqual(await publish(publisher, channel, `to ${channel}`), [1, 1]);
  }
  for (const channel of channels) assert.deepEqual(await inbox.waitFor(keysOf(channel).live, 1), [`1 to ${channel}`]);
  // One sharded subscriber connection per master.
  for (const [i, channel] of channels.entries()) await waitSubscribers(cluster!, masters[i]!, keysOf(channel).live);
});

test('slot migration: ASK, TRYAGAIN, a message lost to the live stream, and re-subscription on the new owner', T, async (t) => {
  if (!requireRedisCluster(t)) return;
  const publisher = connect(cluster!, { maxRedirections: 4 }); // TRYAGAIN gives up after ~0.3 s
  const subscriber = connect(cluster!);
  await Promise.all([ready(publisher), ready(subscriber)]);
  const channel = 'moving';
  const { seq, history, live } = keysOf(channel);
  const inbox = new Inbox(subscriber);
  await subscriber.ssubscribe(live);
  assert.deepEqual(await publish(publisher, channel, 'before'), [1, 1]);
  await inbox.waitFor(live, 1);

  const slot = cluster!.slotOf(live);
  const from = await cluster!.slotOwner(slot);
  const to = (await cluster!.masters()).find((p) => p !== from)!;
  const migration = await cluster!.beginSlotMigration(slot, to);

  // MIGRATING, keys still on the source: business as usual.
  assert.deepEqual(await publish(publisher, channel, 'migrating'), [2, 1]);
  await inbox.waitFor(live, 2);

  // Keys split between the nodes: the source answers a multi-key script with TRYAGAIN; ioredis
  // retries on a random node (which may answer MOVED back to the source) until it gives up.
  await migration.migrateKeys([seq]);
  await assert.rejects(cluster!.command(from, 'EVAL', PUBLISH, 2, seq, history, live, 'split'), /^ReplyError: TRYAGAIN|TRYAGAIN/);
  await assert.rejects(publish(publisher, channel, 'split'), /Too many Cluster redirections\. Last error: ReplyError: (TRYAGAIN|MOVED)/);

  // All keys on the target: ASK, the script runs there, but its SPUBLISH reaches nobody.
  await migration.migrateKeys();
  assert.deepEqual(await publish(publisher, channel, 'asked'), [3, 0]);
  assert.equal(await publisher.get(seq), '3');

  // Slot handed over: Redis drops the source's subscription, ioredis re-subscribes on the target.
  const resubscribed = once(subscriber, 'subscribersReady');
  await migration.finish();
  await resubscribed;
  await waitSubscribers(cluster!, to, live);
  await waitSubscribers(cluster!, from, live, 0);
  assert.deepEqual(await publish(publisher, channel, 'after'), [4, 1]);
  // The live stream skipped 3: only the history has it.
  assert.deepEqual(await inbox.waitFor(live, 3), ['1 before', '2 migrating', '4 after']);
  assert.deepEqual(await publisher.lrange(history, 0, -1), ['before', 'migrating', 'asked', 'after']);

  // And back again, in one go: still subscribed afterwards.
  await cluster!.moveSlot(slot, from);
  await waitSubscribers(cluster!, from, live);
  assert.deepEqual(await publish(publisher, channel, 'home'), [5, 1]);
  assert.deepEqual((await inbox.waitFor(live, 4)).at(-1), '5 home');
});

test('a master killed without replica: its slots fail fast, the rest works, and the subscription comes back after restart', T, async (t) => {
  if (!requireRedisCluster(t)) return;
  // No retries on a lost connection or CLUSTERDOWN: commands fail at once.
  const publisher = connect(cluster!, { retryDelayOnFailover: 0, retryDelayOnClusterDown: 0 });
  const subscriber = connect(cluster!);
  await Promise.all([ready(publisher), ready(subscriber)]);
  const masters = await cluster!.masters();
  const victim = masters[2]!;
  const channel = await cluster!.nameOn(victim, 'crash');
  const survivor = await cluster!.nameOn(masters[0]!, 'crash');
  const { live } = keysOf(channel);
  const inbox = new Inbox(subscriber);
  await subscriber.ssubscribe(live);
  assert.deepEqual(await publish(publisher, channel, 'before'), [1, 1]);
  await inbox.waitFor(live, 1);

  const errors: Error[] = [];
  subscriber.on('error', (error: Error) => errors.push(error));
  await cluster!.kill(victim);
  await assert.rejects(publish(publisher, channel, 'lost'), /Connection is closed|CLUSTERDOWN|ECONNREFUSED/);
  // The other shards answer until the cluster declares the node failed (cluster-node-timeout).
  assert.deepEqual(await publish(publisher, survivor, 'fine'), [1, 0]);
  while (errors.length === 0) await once(subscriber, 'error'); // the sharded subscriber's reconnect attempts
  assert.match(errors[0]!.message, /Connection is closed|ECONNREFUSED/);

  await cluster!.restart(victim);
  await waitSubscribers(cluster!, victim, live);
  // The restarted master lost its data (no persistence): the sequence starts again.
  assert.deepEqual(await publish(publisher, channel, 'after'), [1, 1]);
  assert.deepEqual(await inbox.waitFor(live, 2), ['1 before', '1 after']);
});

test('with replicas: CLUSTER FAILOVER and a killed master move subscription and scripts to the new master', { timeout: 60_000 }, async (t) => {
  if (!requireRedisCluster(t)) return;
  const replicated = await startRedisCluster({ replicas: true });
  const publisher = connect(replicated);
  const subscriber = connect(replicated);
  t.after(async () => {
    publisher.disconnect();
    subscriber.disconnect();
    await replicated.stop();
  });
  await Promise.all([ready(publisher), ready(subscriber)]);
  const channel = 'failing';
  const { live, history } = keysOf(channel);
  const inbox = new Inbox(subscriber);
  await subscriber.ssubscribe(live);
  assert.deepEqual(await publish(publisher, channel, 'one'), [1, 1]);
  await inbox.waitFor(live, 1);

  const oldMaster = await replicated.slotOwner(live);
  const resubscribed = once(subscriber, 'subscribersReady');
  const newMaster = await replicated.failover(oldMaster);
  assert.notEqual(newMaster, oldMaster);
  assert.equal(await replicated.slotOwner(live), newMaster);
  await resubscribed;
  await waitSubscribers(replicated, newMaster, live);
  assert.deepEqual(await publish(publisher, channel, 'two'), [2, 1]);
  await inbox.waitFor(live, 2);

  // A crash: the replica (the old master) takes over after cluster-node-timeout.
  await replicated.kill(newMaster);
  await replicated.waitHealthy();
  assert.equal(await replicated.slotOwner(live), oldMaster);
  await waitSubscribers(replicated, oldMaster, live);
  assert.deepEqual(await publish(publisher, channel, 'three'), [3, 1]);
  assert.deepEqual(await inbox.waitFor(live, 3), ['1 one', '2 two', '3 three']);
  assert.deepEqual(await publisher.lrange(history, 0, -1), ['one', 'two', 'three']);
});

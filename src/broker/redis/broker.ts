// The Redis broker: every node delivers a channel from its one Redis-sequenced stream, so all
// nodes deliver it in the same order, and history is shared (issue 8, issue 12).
//
// A message goes to Redis in its channel's batch of the turn (PUBLISH_SCRIPT) and comes back on
// the stream with its seq, like every other node's. A join's script reads the history and
// appends the join frame at seq joinSeq; the joiner is admitted when the stream reaches joinSeq
// and gets, after that history, what the stream brought beyond it meanwhile. A node that sees a
// gap in the seqs (its subscription was lost) fetches what it missed from history first.
//
// While Redis is unreachable the node serves its own members from what it holds: joins get its
// mirror of the history, messages reach its members at once and wait in the channel's outbox.
// When Redis returns, the node puts back any history Redis lost, fetches what it missed, and
// appends the outbox (acknowledged by the append's reply, so nothing is appended twice).

import type { Logger } from 'pino';
import { ELSEWHERE, type Broker, type BrokerChannel, type ChannelSink, type Sender } from '../../hub/broker.js';
import { ownedMessage, type Message, type MaybePromise } from '../../store/store.js';
import { BatchKind, JOIN_ORIGIN, type Batch, type SequencedMessage } from './envelope.js';
import { RedisEngine, type OutgoingMessage } from './engine.js';
import { decodeEntry, encodeEntry, isJoinEntry } from './scripts.js';
import { RedisSessions } from './sessions.js';
import { RedisHistory } from './history.js';

export interface RedisBrokerOptions {
  /** One Redis server's URL, or a Redis Cluster's seed nodes. */
  redis: { url: string } | { cluster: string[] };
  limit: number;
  /** History payload bytes kept per channel (--history-bytes); 0: no byte cap. */
  historyBytes: number;
  /** A channel idle this long loses its history. */
  expirySeconds: number;
  /** How long a dead node's sessions block their (uid, channel, auth) [default 30 s]. */
  sessionTtlMs?: number;
  /** What this node's messages waiting for Redis may cost (see EngineOptions.maxQueued). */
  maxQueued: number;
  log: Logger;
}

/** Cluster health, for logs and metrics. */
export interface BrokerHealth {
  /** 1 while this node is part of the cluster, 0 while it serves its members on its own. */
  connected: number;
  /** Times this node lost Redis. */
  outages: number;
  /** Times this node found a gap in a channel's seqs and fetched what it missed. */
  catchUps: number;
  /** Messages refused because what waited for Redis was at its bound (--max-buffered). */
  refused: number;
}

/** How soon a channel whose shard is away tries to rejoin while the rest of Redis is up. */
const REJOIN_RETRY_MS = 250;

/** `sent` marks a seq this node's members all have already (an outage replay, a join frame). */
const NOBODY = -2;

export class RedisBroker implements Broker {
  readonly health: BrokerHealth = { connected: 0, outages: 0, catchUps: 0, refused: 0 };
  readonly sessions: RedisSessions;
  readonly history: RedisHistory;
  readonly engine: RedisEngine;
  readonly log: Logger;
  readonly limit: number;
  private readonly channels = new Map<string, RedisChannel>();
  /** True once the node has caught Redis up after connecting: messages then go through Redis. */
  online = false;
  private onceOnline: () => void = () => {};
  /** Channels that could not catch up at the last stream back (undefined: none yet). */
  private lastCatchUpFailures: number | undefined;

  constructor(options: RedisBrokerOptions) {
    this.log = options.log;
    this.limit = options.limit;
    const sessionTtlMs = options.sessionTtlMs ?? 30_000;
    this.engine = new RedisEngine({ ...options, sessionTtlMs }, {
      onBatch: (name, batch) => this.channels.get(name)?.receive(batch),
      onDisconnect: (name, uid) => this.channels.get(name)?.sink.disconnect(uid),
      onAppended: (name, stored, kind, first, count) => this.channels.get(name)?.appended(stored, kind, first, count),
      onAppendFailed: (name, items, kind) => this.channels.get(name)?.appendFailed(items, kind),
      onUp: () => void this.recover(),
      onDown: () => this.lost(),
      onStreamLost: () => this.streamLost(),
      onStreamBack: () => void this.streamBack(),
    });
    this.sessions = new RedisSessions(this.engine, sessionTtlMs);
    this.history = new RedisHistory(this.engine);
  }

  /**
   * Connects to Redis and joins the cluster; false if Redis does not answer within `timeoutMs`
   * (a node that never reached its cluster refuses to start rather than run alone by mistake).
   */
  async start(timeoutMs = 5_000): Promise<boolean> {
    const online = new Promise<void>((resolve) => (this.onceOnline = resolve));
    if (!(await this.engine.start(timeoutMs))) return false;
    await online;
    return true;
  }

  open(name: string, sink: ChannelSink): BrokerChannel {
    const channel = new RedisChannel(name, sink, this);
    this.channels.set(name, channel);
    if (this.online) void channel.subscribe().catch(() => {});
    return channel;
  }

  disconnect(channel: string, uid: string): Promise<void> {
    return this.engine.disconnect(channel, uid);
  }

  forget(channel: RedisChannel): void {
    if (this.channels.get(channel.name) !== channel) return;
    this.channels.delete(channel.name);
    if (channel.subscribed && this.engine.isUp) this.engine.unsubscribe(channel.name);
  }

  private lost(): void {
    this.online = false;
    this.health.connected = 0;
    this.health.outages++;
    for (const channel of this.channels.values()) channel.unfollow();
    this.log.warn('redis unreachable: serving local members only until it answers');
  }

  /**
   * Subscribes to every channel's stream again, each on its own: on a Redis Cluster one shard may
   * be away, and its channels must not hold up the others'. Resolves once Redis acknowledged all
   * (rejects if any failed; those channels are served alone meanwhile, see RedisChannel.follow).
   */
  private async followAll(channels: RedisChannel[]): Promise<void> {
    const results = await Promise.allSettled(channels.map((channel) => channel.subscribe()));
    const failed = results.find((result) => result.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
  }

  private streamLost(): void {
    this.lastCatchUpFailures = undefined;
    for (const channel of this.channels.values()) channel.streamLost();
    this.log.warn('redis subscription lost: catching up from history when it returns');
  }

  /**
   * The subscriber is back: follow every channel that lost its subscription again, then fetch
   * what the stream missed. Logged when the outcome changes (on a Redis Cluster with a shard
   * away this comes every few seconds).
   */
  private async streamBack(): Promise<void> {
    const channels = [...this.channels.values()];
    const caughtUp = await Promise.allSettled(channels.map(async (channel) => {
      if (!channel.subscribed) await channel.subscribe();
      await channel.catchUp();
    }));
    const failed = caughtUp.filter((result) => result.status === 'rejected').length;
    if (failed === this.lastCatchUpFailures) return;
    this.lastCatchUpFailures = failed;
    if (failed === 0) this.log.info({ channels: channels.length }, 'redis subscription back: caught up');
    else this.log.warn({ channels: channels.length, failed }, 'redis subscription back, but some channels could not catch up: served alone until they rejoin');
  }

  /**
   * Redis answers (again): resubscribe, reclaim sessions, put back lost history, fetch what was
   * missed and append what was served locally meanwhile; then messages go through Redis again.
   */
  private async recover(): Promise<void> {
    const channels = [...this.channels.values()];
    try {
      await this.followAll(channels);
      await this.sessions.reclaim();
      await Promise.all(channels.map((c) => this.engine.reseed(c.name, c.lastSeq ?? 0, c.mirroredEntries())));
      await Promise.all(channels.map((c) => c.catchUp()));
    } catch (error) {
      this.log.warn({ err: error }, 'rejoining the cluster failed; retrying when redis answers');
      return;
    }
    if (!this.engine.isUp) return;
    for (const channel of this.channels.values()) {
      // Channels first opened during the reconnection need their stream too.
      if (!channel.subscribed) void channel.subscribe().catch(() => {});
      channel.replayOutbox().catch(() => {}); // kept for the next reconnection
    }
    this.online = true;
    this.health.connected = 1;
    this.log.info({ node: this.engine.nodeId, redisOutages: this.health.outages }, 'joined the cluster');
    this.onceOnline();
  }

  async close(): Promise<void> {
    this.sessions.close();
    await this.engine.close();
  }
}

/** A join whose script has not answered, or whose seq the stream has not reached yet. */
interface PendingJoin {
  readonly joiner: Sender;
  joinSeq: number | undefined;
  history: Message[];
  /** Stream messages, not the joiner's own, that may follow the join: for it once admitted. */
  readonly later: SequencedMessage[];
}

interface Mirrored {
  seq: number;
  message: Message;
  join: boolean;
}

class RedisChannel implements BrokerChannel {
  /** The highest seq this node has taken from the stream; undefined until it knows one. */
  lastSeq: number | undefined;
  /** Messages served locally while Redis was away, oldest first, not yet in Redis. */
  private readonly outbox: OutgoingMessage[] = [];
  private readonly pending = new Set<PendingJoin>();
  /** Messages on their way to Redis. */
  private inflight = 0;
  /** True while the outbox's replay is on its way. */
  private replaying = false;
  /**
   * True while the channel's shard is away but the rest of Redis answers (a Redis Cluster shard
   * down without a replica): the channel is served on this node alone, as in an outage, until
   * rejoin() succeeds; `retry` schedules the next attempt.
   */
  private alone = false;
  private retry: NodeJS.Timeout | undefined;
  /** This node's stored messages the stream has not brought yet: seq -> sender (for fetches). */
  private readonly sent = new Map<number, number>();
  /** While a fetch runs, the stream's batches wait here. */
  private waiting: Batch[] | undefined;
  /** The subscription to the channel's stream, once asked for; `ready` once Redis acknowledged it. */
  private subscription: Promise<void> | undefined;
  private ready = false;
  /** Joins and messages that arrived before the subscription was ready, in arrival order. */
  private backlog: Array<{ run: () => void; fail: () => void }> = [];
  /** What Redis holds, as far as this node knows: its newest entries with their seq. */
  private mirror: Mirrored[] = [];

  constructor(readonly name: string, readonly sink: ChannelSink, private readonly broker: RedisBroker) {}

  get busy(): boolean {
    return this.pending.size > 0 || this.inflight > 0 || this.outbox.length > 0 || this.backlog.length > 0
      || this.waiting !== undefined;
  }

  get subscribed(): boolean {
    return this.subscription !== undefined;
  }

  join(joiner: Sender, frame: Message | undefined): void {
    if (!this.broker.online || this.alone) return this.joinLocally(joiner, frame);
    const { guard } = joiner; // as it is now: the session drops it once its claim is won
    const join: PendingJoin = { joiner, joinSeq: undefined, history: [], later: [] };
    this.pending.add(join);
    const local = (): void => {
      this.pending.delete(join);
      this.joinLocally(joiner, frame);
      this.goAlone();
    };
    this.whenReady(() => {
      this.broker.engine.join(this.name, frame, guard).then((result) => {
        if (!result) {
          // Its claim was lost (a duplicate): nothing was stored; the hub closes the member.
          this.pending.delete(join);
          return this.settleIfIdle();
        }
        join.joinSeq = result.seq;
        join.history = result.history.map(decodeEntry);
        this.resync(result.seq, result.history, join.history, frame);
        // Knowing no seq yet, the stream starts at the join's own entry.
        this.lastSeq ??= frame ? result.seq - 1 : result.seq;
        this.admitReady();
        this.settleIfIdle();
      }, local);
    }, local);
  }

  publish(from: Sender, message: Message): MaybePromise<void> {
    const item: OutgoingMessage = from.guard ? { origin: String(from.id), message, guard: from.guard } : { origin: String(from.id), message };
    if (!this.broker.online || this.alone) return this.serveLocally(item, from.id);
    if (!this.ready) {
      this.inflight++;
      return new Promise<void>((resolve) => this.backlog.push({
        run: () => {
          this.inflight--;
          resolve(this.publish(from, message));
        },
        fail: () => {
          this.inflight--;
          resolve(this.serveLocally(item, from.id));
        },
      }));
    }
    if (!this.broker.engine.hasRoomFor(message.data.length)) return this.refuse(from);
    this.inflight++;
    return this.broker.engine.publish(this.name, item);
  }

  /**
   * Redis takes messages slower than this node's members send them, and what waits for it is at
   * its bound: this one is not stored and goes to no one, and its sender is told (1011).
   */
  private refuse(from: Sender): Promise<void> {
    this.broker.health.refused++;
    const error = new Error('too much waiting for Redis: message not stored');
    // Not from inside publish: the sink's answer may call back into this channel.
    queueMicrotask(() => this.sink.notStored(from, error));
    const refused = Promise.reject(error);
    refused.catch(() => {}); // a member's publish is not awaited: notStored tells it
    return refused;
  }

  close(): void {
    clearTimeout(this.retry);
    this.broker.forget(this);
  }

  /** A batch from the stream. */
  receive(batch: Batch): void {
    if (this.waiting) {
      this.waiting.push(batch);
      return;
    }
    const own = batch.node === this.broker.engine.nodeId;
    for (const [i, sequenced] of batch.messages.entries()) {
      if (this.lastSeq !== undefined && sequenced.seq > this.lastSeq + 1) {
        // A gap: the subscription lost something. Fetch it, then go on with the rest.
        this.broker.health.catchUps++;
        this.waiting = [{ ...batch, messages: batch.messages.slice(i) }];
        this.catchUp().catch(() => {}); // Redis went away: recovery fetches again
        return;
      }
      const from = sequenced.origin === JOIN_ORIGIN || (own && batch.kind === BatchKind.replay)
        ? NOBODY
        : own ? Number(sequenced.origin) : ELSEWHERE;
      this.apply(sequenced, from);
    }
    this.admitReady();
    this.settleIfIdle();
  }

  /** Fetches what history holds after lastSeq and applies it before the stream goes on. */
  async catchUp(): Promise<void> {
    this.waiting ??= [];
    try {
      if (this.lastSeq === undefined) return;
      const { last, missed } = await this.broker.engine.fetch(this.name, this.lastSeq);
      const expected = last - this.lastSeq;
      if (expected > missed.length) {
        this.broker.log.warn({ channel: this.name, lost: expected - missed.length }, 'history no longer holds what this node missed');
      }
      for (const sequenced of missed) {
        const from = sequenced.origin === JOIN_ORIGIN ? NOBODY : this.sent.get(sequenced.seq) ?? ELSEWHERE;
        this.apply(sequenced, from);
      }
    } finally {
      const waiting = this.waiting ?? [];
      this.waiting = undefined;
      for (const batch of waiting) this.receive(batch);
      this.admitReady();
      this.settleIfIdle();
    }
  }

  /** Takes one sequenced message: delivers it, unless `from` is NOBODY, and remembers it. */
  private apply(sequenced: SequencedMessage, from: number): void {
    if (this.lastSeq !== undefined && sequenced.seq <= this.lastSeq) return;
    this.lastSeq = sequenced.seq;
    this.sent.delete(sequenced.seq);
    // The mirror lasts: its own bytes, not a view into the whole batch it came in.
    this.remember({ seq: sequenced.seq, message: ownedMessage(sequenced.message), join: sequenced.origin === JOIN_ORIGIN });
    if (from === NOBODY) return;
    this.sink.deliver(sequenced.message, from);
    for (const join of this.pending) {
      if (join.joiner.id !== from) join.later.push(sequenced);
    }
  }

  /** Admits every pending join the stream has reached, with what came after it meanwhile. */
  private admitReady(): void {
    if (this.lastSeq === undefined) return;
    for (const join of this.pending) {
      if (join.joinSeq === undefined || join.joinSeq > this.lastSeq) continue;
      this.pending.delete(join);
      const after = join.later.filter((m) => m.seq > join.joinSeq!).map((m) => m.message);
      this.sink.admit(join.joiner, after.length > 0 ? join.history.concat(after) : join.history);
    }
  }

  appended(stored: OutgoingMessage[], kind: BatchKind, first: number, count: number): void {
    for (const [i, item] of stored.entries()) {
      const seq = first + i;
      if (this.lastSeq !== undefined && seq <= this.lastSeq) continue;
      this.sent.set(seq, kind === BatchKind.replay || item.origin === JOIN_ORIGIN ? NOBODY : Number(item.origin));
    }
    if (kind === BatchKind.replay) this.outbox.splice(0, count);
    else this.inflight -= count;
    this.settleIfIdle();
  }

  appendFailed(items: OutgoingMessage[], kind: BatchKind): void {
    // A failed replay stays in the outbox: for the next reconnection, or the channel's rejoin.
    if (kind === BatchKind.live) {
      this.inflight -= items.length;
      for (const item of items) this.serveLocally(item, Number(item.origin));
    }
    this.goAlone();
    this.settleIfIdle();
  }

  /**
   * Appends what was served locally (see RedisBroker.recover); one replay at a time, as its
   * acknowledgement takes the outbox's first items.
   */
  replayOutbox(): Promise<void> {
    if (this.outbox.length === 0 || this.replaying) return Promise.resolve();
    this.replaying = true;
    return this.broker.engine.replay(this.name, this.outbox.slice()).finally(() => {
      this.replaying = false;
    });
  }

  /**
   * An append failed although Redis answers (after the engine's retries: a shard down without
   * a replica): serve the channel here alone, rather than wait 5 s per batch, and rejoin soon.
   */
  private goAlone(): void {
    if (!this.broker.online) return; // the whole of Redis is away: its recovery rejoins every channel
    if (!this.alone) this.broker.log.warn({ channel: this.name }, 'channel served by this node alone: its redis shard does not answer');
    this.alone = true;
    if (this.retry) return;
    this.retry = setTimeout(() => {
      this.retry = undefined;
      void this.rejoin();
    }, REJOIN_RETRY_MS);
    this.retry.unref();
  }

  /**
   * The channel's shard answers again: as after an outage (RedisBroker.recover), put back the
   * history it lost if it restarted empty, fetch what other nodes stored meanwhile, append the
   * outbox; only then do messages go through Redis again.
   */
  private async rejoin(): Promise<void> {
    if (!this.broker.online || !this.alone) return;
    try {
      if (!this.subscription) await this.subscribe();
      await this.broker.engine.reseed(this.name, this.lastSeq ?? 0, this.mirroredEntries());
      await this.catchUp();
      // What members send meanwhile is served locally and goes with the next replay.
      while (this.outbox.length > 0) {
        if (this.replaying) throw new Error('a replay is on its way'); // try again later
        await this.replayOutbox();
      }
    } catch (error) {
      this.broker.log.debug({ err: error, channel: this.name }, 'channel not back on its redis shard yet');
      return this.goAlone();
    }
    this.alone = false;
    this.broker.log.info({ channel: this.name }, 'channel back on its redis shard');
  }

  /** The part of the history Redis already had, for putting it back after Redis lost it. */
  mirroredEntries(): Buffer[] {
    return this.mirror.slice(-this.broker.limit).map((m) => encodeEntry(m.message, m.join));
  }

  /** Joins a member without Redis: it gets what this node holds and is admitted at once. */
  private joinLocally(joiner: Sender, frame: Message | undefined): void {
    const held = this.mirror.map((m) => m.message).concat(this.outbox.map((o) => o.message));
    if (frame) this.keepForRedis({ origin: JOIN_ORIGIN, message: frame });
    this.sink.admit(joiner, held.slice(-this.broker.limit));
  }

  /** Delivers a message without Redis to the other local members, and keeps it for Redis. */
  private serveLocally(item: OutgoingMessage, from: number): void {
    this.keepForRedis(item);
    this.sink.deliver(item.message, from);
  }

  private keepForRedis(item: OutgoingMessage): void {
    // Only the newest `limit` can matter for history (trimmed in bulk: O(1) per message); not
    // while a replay is on its way, whose acknowledgement takes the outbox's first items.
    const { limit } = this.broker;
    if (this.outbox.length >= 2 * limit && !this.replaying) this.outbox.splice(0, this.outbox.length - limit + 1);
    this.outbox.push(item);
  }

  private settleIfIdle(): void {
    if (!this.busy) this.sink.settled();
  }

  /**
   * Subscribes to the channel's stream and follows it: once acknowledged, the backlog runs in
   * order (or fails in order). The result settles with the subscription.
   */
  subscribe(): Promise<void> {
    const subscription = this.broker.engine.subscribe([this.name]);
    this.follow(subscription);
    return subscription;
  }

  private follow(subscription: Promise<void>): void {
    this.subscription = subscription;
    this.ready = false;
    const drain = (each: (item: RedisChannel['backlog'][number]) => void): void => {
      if (this.subscription !== subscription) return; // superseded after an outage
      for (const item of this.backlog.splice(0)) each(item);
      this.settleIfIdle();
    };
    subscription.then(
      () => {
        if (this.subscription === subscription) this.ready = true;
        drain((item) => item.run());
      },
      () => {
        if (this.subscription !== subscription) return;
        this.subscription = undefined;
        // Redis took commands but not this subscription (its shard is away): served alone.
        this.goAlone();
        drain((item) => item.fail());
      },
    );
  }

  /** The subscriber went away, commands did not: what is queued waits for the next subscription. */
  streamLost(): void {
    this.subscription = undefined;
    this.ready = false;
  }

  /** Forgets the subscription (Redis went away); queued actions are served locally. */
  unfollow(): void {
    this.subscription = undefined;
    this.ready = false;
    // The whole outage's recovery brings the channel back, shard or not.
    this.alone = false;
    clearTimeout(this.retry);
    this.retry = undefined;
    for (const item of this.backlog.splice(0)) item.fail();
  }

  /** Runs `run` now if the stream is ready, else after everything queued before it. */
  private whenReady(run: () => void, fail: () => void): void {
    if (this.ready) run();
    else this.backlog.push({ run, fail });
  }

  /**
   * Replaces the mirror with the history a join read, up to its frame (if any) at `seq`, keeping
   * later stream entries.
   */
  private resync(seq: number, entries: Buffer[], history: Message[], frame: Message | undefined): void {
    const later = this.mirror.filter((m) => m.seq > seq);
    const start = seq - entries.length + (frame ? 0 : 1);
    const snapshot: Mirrored[] = entries.map((entry, i) => ({ seq: start + i, message: history[i]!, join: isJoinEntry(entry) }));
    if (frame) snapshot.push({ seq, message: frame, join: true });
    this.mirror = snapshot.concat(later);
    this.trim();
  }

  private remember(mirrored: Mirrored): void {
    if (this.mirror.length > 0 && this.mirror[this.mirror.length - 1]!.seq >= mirrored.seq) return;
    this.mirror.push(mirrored);
    this.trim();
  }

  private trim(): void {
    const { limit } = this.broker;
    if (this.mirror.length > 2 * limit) this.mirror = this.mirror.slice(-limit);
  }
}

// The hub of a cluster node: the same `join(member, join)` the network layer calls on a single
// node, with channels, history and the duplicate rule shared through Redis. Every message,
// including those of this node's own members, is delivered from the channel's Redis-sequenced
// stream, so every node delivers a channel in the same order.
//
// While Redis is unreachable the node keeps serving its own members from what it holds: joins
// get the node's mirror of the history, messages reach the node's members at once and wait in
// the channel's outbox. When Redis returns, the node puts back any history Redis lost, appends
// the outbox (other nodes' members then receive those messages late) and refreshes its sessions.

import type { Logger } from 'pino';
import { Hub, DAY_MS, type Session } from '../hub/hub.js';
import type { Member } from '../hub/member.js';
import { Close, type CloseReason } from '../protocol/close-codes.js';
import { sessionKey, type Join } from '../protocol/join.js';
import type { Message } from '../store/store.js';
import { MemoryStore } from '../store/memory.js';
import { ClusterChannel, type LocalMember, type PendingJoin } from './cluster-channel.js';
import { BatchKind, type Batch } from './envelope.js';
import { RedisEngine, type OutgoingMessage } from './redis-engine.js';
import { ClusterSessions, type Claim } from './sessions.js';
import { sessionKeyOf } from './scripts.js';

export interface ClusterHubOptions {
  redisUrl: string;
  limit: number;
  /** History payload bytes kept per channel (--history-bytes); 0: no byte cap. */
  historyBytes: number;
  log: Logger;
  /** How long a dead node's sessions block their (uid, channel, auth) [default 30 s]. */
  sessionTtlMs?: number;
  /** A channel idle this long loses its history [default 30 days]. */
  idleExpiryMs?: number;
}

/** Cluster health, for logs and metrics. */
export interface ClusterStats {
  /** 1 while this node is part of the cluster, 0 while it serves its members on its own. */
  connected: number;
  /** Times this node lost Redis. */
  outages: number;
}

export class ClusterHub extends Hub {
  readonly cluster: ClusterStats = { connected: 0, outages: 0 };
  private readonly clusterChannels = new Map<string, ClusterChannel>();
  private readonly engine: RedisEngine;
  private readonly claims: ClusterSessions;
  private readonly log: Logger;
  private readonly limit: number;
  /** True once the node has caught Redis up after connecting: messages then go through Redis. */
  private online = false;
  private nextMemberId = 0;
  private onceOnline: () => void = () => {};

  constructor(options: ClusterHubOptions) {
    // History lives in Redis (and in each channel's mirror); the base hub's store holds nothing.
    super({ store: new MemoryStore(1) });
    this.log = options.log;
    this.limit = options.limit;
    const sessionTtlMs = options.sessionTtlMs ?? 30_000;
    this.engine = new RedisEngine({
      url: options.redisUrl,
      limit: options.limit,
      historyBytes: options.historyBytes,
      expirySeconds: Math.ceil((options.idleExpiryMs ?? 30 * DAY_MS) / 1000),
      sessionTtlMs,
      log: options.log,
    }, {
      onBatch: (name, batch) => this.received(name, batch),
      onPublishFailed: (channel, items, kind) => this.publishFailed(channel, items, kind),
      onUp: () => void this.recover(),
      onDown: () => this.lost(),
    });
    this.claims = new ClusterSessions(this.engine, sessionTtlMs);
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

  override get channelCount(): number {
    return this.clusterChannels.size;
  }

  override get sessionCount(): number {
    return this.claims.size;
  }

  /** Like Hub.join; a duplicate joined on another node is closed with 4409 once Redis says so. */
  override join(member: Member, join: Join): Session | CloseReason {
    const triplet = sessionKey(join);
    const id = String(++this.nextMemberId);
    const claim = this.claims.add(triplet, sessionKeyOf(join.channel, triplet), `${this.engine.nodeId}:${id}`);
    if (!claim) {
      this.stats.duplicates++;
      return Close.duplicate;
    }
    const channel = this.clusterChannelFor(join.channel);
    const local: LocalMember = { member, id, stitchSeq: undefined };
    const frame: Message = { data: join.text, binary: false };
    // Until its join script is sent, the member's frames queue behind it in the channel's
    // backlog (spec section 2); while it is in flight they carry a guard, so they count only if
    // the join is accepted.
    let dispatched = false;
    let guard: OutgoingMessage['guard'];
    let settled = false;
    let left = false;
    const release = (): void => {
      // The member's last messages may still wait for this turn's batch; they carry its session
      // as their guard, so they must reach Redis before the session is released.
      this.engine.flushChannel(join.channel);
      this.claims.drop(triplet, claim);
      this.dropIfIdle(channel);
    };
    const settle = (): void => {
      settled = true;
      guard = undefined;
      if (left) release();
    };
    const joinedLocally = (): void => {
      dispatched = true;
      channel.admitLocally(local, frame);
      this.stats.joins++;
      settle();
    };
    if (this.online) {
      const sent = (): void => {
        dispatched = true;
        guard = { key: claim.key, token: claim.token };
      };
      this.joinCluster(channel, local, claim, triplet, frame, sent).then(
        (accepted) => {
          if (accepted) {
            this.stats.joins++;
            return settle();
          }
          this.stats.duplicates++;
          settle();
          left = true;
          release();
          member.close(Close.duplicate);
        },
        // Redis went away during the join: serve it locally like any join during an outage.
        joinedLocally,
      );
    } else {
      joinedLocally();
    }
    return {
      channel: join.channel,
      publish: (message) => {
        this.stats.messagesIn++;
        if (dispatched) return this.send(channel, local, message, guard);
        // Runs after the join's own step, so `guard` is set by then (or the join went local).
        const send = (): void => this.send(channel, local, message, guard);
        channel.whenReady(send, send);
      },
      leave: () => {
        if (left) return;
        left = true;
        channel.leave(member);
        if (settled) release();
      },
    };
  }

  /**
   * Subscribes (waiting for the acknowledgement) unless the node already follows the channel,
   * then runs the join script, calling `sent` as soon as it is on its way; false for a duplicate.
   */
  private joinCluster(
    channel: ClusterChannel, local: LocalMember, claim: Claim, triplet: string, frame: Message, sent: () => void,
  ): Promise<boolean> {
    const pending: PendingJoin = { local, buffered: [] };
    channel.pending.add(pending);
    if (!channel.subscribed) channel.follow(this.engine.subscribe([channel.name]));
    return new Promise<boolean>((resolve, reject) => {
      channel.whenReady(() => {
        const joining = this.engine.join(channel.name, triplet, claim.token, frame);
        sent();
        joining.then((result) => {
          if (result) {
            claim.inRedis = true;
            channel.admit(pending, result.seq, result.history, frame);
          }
          resolve(result !== null);
        }, reject);
      }, reject);
    }).finally(() => {
      channel.pending.delete(pending);
    });
  }

  private send(channel: ClusterChannel, local: LocalMember, message: Message, guard: OutgoingMessage['guard']): void {
    const item: OutgoingMessage = guard ? { origin: local.id, message, guard } : { origin: local.id, message };
    if (this.online) this.engine.publish(channel.name, item);
    else channel.serveLocally(item);
  }

  private received(name: string, batch: Batch): void {
    const channel = this.clusterChannels.get(name);
    if (!channel) return;
    channel.receive(batch, this.engine.nodeId);
    this.dropIfIdle(channel); // its outbox may just have reached Redis
  }

  private publishFailed(name: string, items: OutgoingMessage[], kind: BatchKind): void {
    // A failed replay stays in the outbox for the next reconnection.
    if (kind === BatchKind.replay) return;
    const channel = this.clusterChannelFor(name);
    for (const item of items) channel.serveLocally(item);
  }

  private lost(): void {
    this.online = false;
    this.cluster.connected = 0;
    this.cluster.outages++;
    for (const channel of this.clusterChannels.values()) channel.unfollow();
    this.log.warn('redis unreachable: serving local members only until it answers');
  }

  /**
   * Redis answers (again): resubscribe, reclaim sessions, put back lost history and append what
   * was served locally meanwhile; then messages go through Redis again.
   */
  private async recover(): Promise<void> {
    const channels = [...this.clusterChannels.values()];
    try {
      const subscribed = this.engine.subscribe(channels.map((c) => c.name));
      for (const channel of channels) channel.follow(subscribed);
      await subscribed;
      await this.claims.reclaim();
      await Promise.all(channels.map((c) => this.engine.reseed(c.name, c.lastSeq, c.mirroredHistory())));
    } catch (error) {
      this.log.warn({ err: error }, 'rejoining the cluster failed; retrying when redis answers');
      return;
    }
    if (!this.engine.isUp) return;
    for (const channel of this.clusterChannels.values()) {
      // Channels first joined during the reconnection need their stream too.
      if (!channel.subscribed) channel.follow(this.engine.subscribe([channel.name]));
      if (channel.outbox.length > 0) this.engine.replay(channel.name, channel.outbox.slice());
    }
    this.online = true;
    this.cluster.connected = 1;
    this.log.info({ node: this.engine.nodeId, redisOutages: this.cluster.outages }, 'joined the cluster');
    this.onceOnline();
  }

  private clusterChannelFor(name: string): ClusterChannel {
    let channel = this.clusterChannels.get(name);
    if (!channel) {
      channel = new ClusterChannel(name, this.limit, this.stats);
      this.clusterChannels.set(name, channel);
    }
    return channel;
  }

  private dropIfIdle(channel: ClusterChannel): void {
    if (!channel.idle || this.clusterChannels.get(channel.name) !== channel) return;
    this.clusterChannels.delete(channel.name);
    if (channel.subscribed && this.engine.isUp) this.engine.unsubscribe(channel.name);
  }

  /** Redis expires idle channels itself (EXPIRE on every append). */
  override async expireIdle(): Promise<string[]> {
    return [];
  }

  override attachLink(): Session {
    throw new Error('peer links are not available in cluster mode');
  }

  async close(): Promise<void> {
    this.claims.close();
    await this.engine.close();
  }
}

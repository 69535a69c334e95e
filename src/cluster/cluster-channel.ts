// One channel as a cluster node sees it: its local members, the joins waiting for Redis, and a
// mirror of the channel's recent history, which serves joins while Redis is away and puts the
// history back if Redis lost it.
//
// Every node delivers a channel's messages from the one Redis-sequenced stream, so all nodes
// deliver them in the same order. A newcomer's replay comes from the join script, which also
// returns the join's sequence number: the stream's messages up to it are in that replay, so the
// newcomer gets only later ones (stitching replay and live stream without gaps or repeats).

import type { Member } from '../hub/member.js';
import type { Message } from '../store/store.js';
import { JOIN_ORIGIN, BatchKind, type Batch, type SequencedMessage } from './envelope.js';
import type { OutgoingMessage } from './redis-engine.js';
import { decodeEntry } from './scripts.js';

export interface LocalMember {
  readonly member: Member;
  /** Unique on this node; published with each message so no node echoes it to its sender. */
  readonly id: string;
  /** Stream messages up to this seq are in the member's replay; undefined once past them. */
  stitchSeq: number | undefined;
}

/** A join whose script has not answered yet: stream messages wait for it here. */
export interface PendingJoin {
  readonly local: LocalMember;
  readonly buffered: SequencedMessage[];
}

interface Mirrored {
  seq: number;
  message: Message;
}

export class ClusterChannel {
  readonly members = new Map<Member, LocalMember>();
  readonly pending = new Set<PendingJoin>();
  /** Messages served locally while Redis was away, oldest first, not yet in Redis. */
  readonly outbox: OutgoingMessage[] = [];
  /** The highest sequence number this node has seen on the channel. */
  lastSeq = 0;
  /** The subscription to the channel's stream, once asked for; `ready` once Redis acknowledged it. */
  private subscription: Promise<void> | undefined;
  ready = false;
  /** Joins and messages that arrived before the subscription was ready, in arrival order. */
  private backlog: Array<{ run: () => void; fail: (error: unknown) => void }> = [];
  /** What Redis holds, as far as this node knows: its newest entries with their seq. */
  private mirror: Mirrored[] = [];

  constructor(
    readonly name: string,
    private readonly limit: number,
    private readonly stats: { deliveries: number },
  ) {}

  get idle(): boolean {
    return this.members.size === 0 && this.pending.size === 0 && this.outbox.length === 0 && this.backlog.length === 0;
  }

  /** The history a newcomer gets while Redis is away: the mirror, then what was served locally. */
  localHistory(): Message[] {
    const held = this.mirror.map((m) => m.message).concat(this.outbox.map((o) => o.message));
    return held.slice(-this.limit);
  }

  /** The part of the history Redis already had, for putting it back after Redis lost it. */
  mirroredHistory(): Message[] {
    return this.mirror.slice(-this.limit).map((m) => m.message);
  }

  /** Handles a batch from the stream; `self` is this node's id. */
  receive(batch: Batch, self: string): void {
    const own = batch.node === self;
    for (const sequenced of batch.messages) {
      if (sequenced.seq > this.lastSeq) this.lastSeq = sequenced.seq;
      this.remember(sequenced.seq, sequenced.message);
      // This node's own outage messages: its members had them already; now Redis has them too.
      if (own && batch.kind === BatchKind.replay) {
        this.outbox.shift();
        continue;
      }
      if (sequenced.origin === JOIN_ORIGIN) continue;
      const sender = own ? sequenced.origin : undefined;
      for (const local of this.members.values()) this.deliverSequenced(local, sequenced, sender);
      for (const join of this.pending) if (join.local.id !== sender) join.buffered.push(sequenced);
    }
  }

  private deliverSequenced(local: LocalMember, sequenced: SequencedMessage, sender: string | undefined): void {
    if (local.stitchSeq !== undefined) {
      if (sequenced.seq <= local.stitchSeq) return;
      local.stitchSeq = undefined; // the stream is in seq order: every later message is new to it
    }
    if (local.id === sender) return;
    local.member.deliver(sequenced.message);
    this.stats.deliveries++;
  }

  /**
   * The join script answered: the newcomer gets the history, then the buffered stream messages
   * after its join, and becomes a member.
   */
  admit(join: PendingJoin, joinSeq: number, history: Buffer[], frame: Message): void {
    this.pending.delete(join);
    this.resync(joinSeq, history.map(decodeEntry).concat(frame));
    const { local } = join;
    if (!local.member.open) return;
    local.member.replay(history.map(decodeEntry));
    local.stitchSeq = joinSeq;
    for (const sequenced of join.buffered) this.deliverSequenced(local, sequenced, undefined);
    this.members.set(local.member, local);
  }

  /** Joins a member without Redis: it gets what this node holds and is a member at once. */
  admitLocally(local: LocalMember, frame: Message): void {
    if (!local.member.open) return;
    for (const message of this.localHistory()) local.member.deliver(message);
    this.outbox.push({ origin: JOIN_ORIGIN, message: frame });
    this.members.set(local.member, local);
  }

  /** Delivers a message without Redis to every other local member, and keeps it for Redis. */
  serveLocally(item: OutgoingMessage): void {
    // Only the newest `limit` can matter for history (trimmed in bulk, so a long outage costs O(1) per message).
    if (this.outbox.length >= 2 * this.limit) this.outbox.splice(0, this.outbox.length - this.limit + 1);
    this.outbox.push(item);
    if (item.origin === JOIN_ORIGIN) return;
    for (const local of this.members.values()) {
      if (local.id === item.origin) continue;
      local.member.deliver(item.message);
      this.stats.deliveries++;
    }
  }

  get subscribed(): boolean {
    return this.subscription !== undefined;
  }

  /** Follows a subscription: once acknowledged, the backlog runs in order (or fails in order). */
  follow(subscription: Promise<void>): void {
    this.subscription = subscription;
    this.ready = false;
    const drain = (each: (item: ClusterChannel['backlog'][number]) => void): void => {
      if (this.subscription !== subscription) return; // superseded after an outage
      for (const item of this.backlog.splice(0)) each(item);
    };
    subscription.then(
      () => {
        if (this.subscription === subscription) this.ready = true;
        drain((item) => item.run());
      },
      (error: unknown) => {
        drain((item) => item.fail(error));
        if (this.subscription === subscription) this.subscription = undefined;
      },
    );
  }

  /** Forgets the subscription (Redis went away); queued actions fail when it rejects. */
  unfollow(): void {
    this.subscription = undefined;
    this.ready = false;
    for (const item of this.backlog.splice(0)) item.fail(new Error('redis unreachable'));
  }

  /** Runs `run` now if the stream is ready, else after everything queued before it. */
  whenReady(run: () => void, fail: (error: unknown) => void): void {
    if (this.ready) run();
    else this.backlog.push({ run, fail });
  }

  leave(member: Member): void {
    this.members.delete(member);
  }

  /** Replaces the mirror with a full history snapshot taken at `seq`, keeping later stream messages. */
  private resync(seq: number, snapshot: Message[]): void {
    const later = this.mirror.filter((m) => m.seq > seq);
    const start = seq - snapshot.length + 1;
    this.mirror = snapshot.map((message, i) => ({ seq: start + i, message })).concat(later);
    if (seq > this.lastSeq) this.lastSeq = seq;
    this.trim();
  }

  private remember(seq: number, message: Message): void {
    if (this.mirror.length > 0 && this.mirror[this.mirror.length - 1]!.seq >= seq) return;
    this.mirror.push({ seq, message });
    this.trim();
  }

  private trim(): void {
    if (this.mirror.length > 2 * this.limit) this.mirror = this.mirror.slice(-this.limit);
  }
}

// One channel: its members, the joins on their way, and its fan-out. The order of what happens
// on the channel is its broker's (src/broker/): the channel takes deliveries and admissions in
// that order, so every mode shares this one membership state machine.

import type { Member } from './member.js';
import { ELSEWHERE, type Broker, type BrokerChannel, type ChannelSink, type Sender } from './broker.js';
import { Close } from '../protocol/close-codes.js';
import type { Message, MaybePromise } from '../store/store.js';
import { DedupSet } from '../protocol/dedup.js';
import { siphash24Key } from '../protocol/siphash.js';

/** A member's place in a channel: the sender id its broker knows, and the member itself. */
export interface Joined extends Sender {
  readonly member: Member;
}

/** What the hub hears from its channels (one object for all of them). */
export interface ChannelEvents {
  /** Nobody holds the channel and its broker has nothing queued: the hub may forget it. */
  idle(channel: Channel): void;
  /** The number of joined people (peer links not counted) changed. */
  users(channel: Channel, count: number): void;
  /** A store call failed; `context` says which. */
  storeFailed(error: unknown, context: string): void;
}

export class Channel implements ChannelSink {
  readonly members = new Set<Joined>();
  readonly stream: BrokerChannel;
  /** Joins sequenced but not admitted; one that leaves meanwhile must never be admitted. */
  private readonly joining = new Set<Joined>();
  /** Sessions and links that have not left yet, admitted or not. */
  private holders = 0;
  private users = 0;
  /**
   * Hashes of what this channel stored, kept once peers are involved: a message reaching this
   * server both over its own link and over a neighbour's link to it is stored once (spec 8).
   */
  private stored: DedupSet | undefined;

  constructor(
    readonly name: string,
    broker: Broker,
    private readonly stats: { deliveries: number },
    private readonly events: ChannelEvents,
  ) {
    this.stream = broker.open(name, this);
  }

  /** How many people (not peer links) are joined now. */
  get userCount(): number {
    return this.users;
  }

  /** A session or link starts to hold the channel (until it leaves). */
  hold(): void {
    this.holders++;
  }

  /** Sequences `joined`'s join; it is admitted when the broker says, unless it left by then. */
  join(joined: Joined, frame: Message | undefined): void {
    this.joining.add(joined);
    this.stream.join(joined, frame);
  }

  /** Adds a peer link as a member at once: it gets later messages, not the replay. */
  attach(link: Joined): void {
    this.members.add(link);
  }

  /** A join that must not be admitted any more (its member left), though it still holds the channel. */
  withdraw(joined: Joined): void {
    this.joining.delete(joined);
  }

  leave(joined: Joined): void {
    this.joining.delete(joined);
    if (this.members.delete(joined) && !joined.member.peer) this.events.users(this, --this.users);
    this.holders--;
    this.checkIdle();
  }

  /**
   * Starts remembering what this channel stores, seeded with its history, so that repeats
   * arriving from peers can be dropped.
   */
  trackStored(history: MaybePromise<Message[]>, capacity: number): void {
    if (this.stored) return;
    const stored = new DedupSet(capacity);
    this.stored = stored;
    const seed = (messages: Message[]): void => {
      for (const message of messages) stored.add(siphash24Key(message.data));
    };
    Promise.resolve(history).then(seed, () => {});
  }

  /**
   * Whether to store and fan out `message` from `from`: repeats of what this channel already
   * stored are dropped when they come from a peer. People's messages are always taken (a
   * client may send the same payload twice), and remembered.
   */
  accepts(from: Joined, message: Message): boolean {
    if (!this.stored) return true;
    return this.stored.add(siphash24Key(message.data)) || !from.member.peer;
  }

  /** Lets the hub forget this channel if nobody holds it and its broker has nothing queued. */
  checkIdle(): void {
    if (this.holders === 0 && !this.stream.busy) this.events.idle(this);
  }

  deliver(message: Message, from: number): void {
    let deliveries = 0;
    for (const joined of this.members) {
      if (joined.id !== from) {
        joined.member.deliver(message);
        deliveries++;
      }
    }
    this.stats.deliveries += deliveries;
    // Another node stored it: a peer's copy of it must be dropped here too.
    if (from === ELSEWHERE && this.stored) this.stored.add(siphash24Key(message.data));
  }

  admit(joiner: Sender, history: readonly Message[]): void {
    const joined = joiner as Joined; // the broker hands back what the channel gave it
    if (!this.joining.delete(joined) || !joined.member.open) return;
    joined.member.replay(history);
    this.members.add(joined);
    if (!joined.member.peer) this.events.users(this, ++this.users);
  }

  settled(): void {
    this.checkIdle();
  }

  /** Closes every person joined or joining as `uid` (several if with different auth); how many. */
  disconnect(uid: string): number {
    let closed = 0;
    for (const joined of [...this.members, ...this.joining]) {
      if (joined.member.peer || joined.member.uid !== uid) continue;
      joined.member.close(Close.operator);
      closed++;
    }
    return closed;
  }

  joinFailed(joiner: Sender, error: unknown): void {
    const joined = joiner as Joined;
    this.joining.delete(joined);
    this.events.storeFailed(error, `join ${this.name}`);
    joined.member.close(Close.historyUnavailable);
  }

  notStored(from: Sender, error: unknown): void {
    this.events.storeFailed(error, `append ${this.name}`);
    // A message that could not be stored went to no one; its sender must know.
    (from as Joined).member.close(Close.notStored);
  }
}

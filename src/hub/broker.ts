// What varies between a single node and a cluster, as the hub sees it (issue 12). The hub owns
// channels, membership, join replay, fan-out and the duplicate rule; a broker sequences and
// carries each channel's messages and joins, and a session registry holds the duplicate rule's
// sessions. Implementations live in src/broker/ (local, Redis); they know no sockets.

import type { Message, MaybePromise } from '../store/store.js';

/** A member as a broker sees it: an id unique on this node, nothing else. */
export interface Sender {
  readonly id: number;
  /**
   * Set while the member's session claim is on its way: a broker that sequences the member's
   * messages before the answer stores them only if the claim was won.
   */
  readonly guard?: Guard | undefined;
}

/** `from` of a delivery that no member on this node sent (another node, an outage replay). */
export const ELSEWHERE = 0;

/**
 * What a broker hands one channel of the hub, in the channel's one order. The broker calls these
 * and nothing else; they never call back into the broker synchronously.
 */
export interface ChannelSink {
  /** A message to fan out to every member but the one with id `from`. */
  deliver(message: Message, from: number): void;
  /** `joiner`'s join takes effect here: it gets `history`, then every later delivery. */
  admit(joiner: Sender, history: readonly Message[]): void;
  /** `joiner`'s history could not be read or its join frame not stored. */
  joinFailed(joiner: Sender, error: unknown): void;
  /** `from`'s message could not be stored: it went to no one. */
  notStored(from: Sender, error: unknown): void;
  /** The broker has nothing queued for the channel any more: the hub may forget it. */
  settled(): void;
  /** An operator disconnects `uid` from the channel (asked on another node). */
  disconnect(uid: string): void;
}

/** One channel's stream in a broker, opened when the hub first needs the channel. */
export interface BrokerChannel {
  /**
   * Sequences a join: once the history before it is read and `frame` (unless undefined: a proven
   * peer link's join) is stored, the sink admits `joiner`. With the joiner's `guard`, only if its
   * claim was won; otherwise nothing is stored and no one admitted.
   */
  join(joiner: Sender, frame: Message | undefined): void;
  /** Sequences a message; the sink delivers it once stored. The result settles when it is stored. */
  publish(from: Sender, message: Message): MaybePromise<void>;
  /** True while joins or messages wait in the broker: the channel must not be forgotten yet. */
  readonly busy: boolean;
  /** The hub forgot the channel (nobody left, nothing queued): stop following it. */
  close(): void;
}

export interface Broker {
  open(channel: string, sink: ChannelSink): BrokerChannel;
  /**
   * Asks every other node to disconnect `uid` from `channel` (their sinks' disconnect); absent
   * on a single node, where the hub is every member's.
   */
  disconnect?(channel: string, uid: string): Promise<void>;
  close(): Promise<void>;
}

/**
 * A session claim on its way (in Redis: a key that must hold a token): a join sequenced with it
 * counts only if the claim was won, so the join keeps its place in the channel's order without
 * waiting for the claim's answer.
 */
export interface Guard {
  readonly key: string;
  readonly token: string;
  /** The claim's answer once known: a join sent after that needs no check (its key may be gone). */
  readonly won: boolean | undefined;
}

/** A claim the registry answers later, with the guard a broker can check meanwhile. */
export interface PendingClaim {
  readonly won: Promise<boolean>;
  readonly guard: Guard;
}

/**
 * The duplicate rule's sessions: one (uid, channel, auth) joined at a time, on every node. A
 * person's session (claimed with its uid) is also who is online, for the API and presence.
 */
export interface SessionRegistry {
  /** Takes `key` for a new session (a person's, online as `uid`); false (now or later) if it is joined already. */
  claim(key: string, channel: string, uid?: string): boolean | PendingClaim;
  /** Frees a claimed key at once. */
  release(key: string): void;
  /** Sessions claimed on this node. */
  readonly size: number;
  /** Who is online on every node; absent where this node's hub sees every member itself. */
  readonly presence?: Presence;
  close(): void;
}

/** Who is online across a cluster: people's sessions (not peer links), on any live node. */
export interface Presence {
  /** The uid of every person's session joined to `channel`, one per session. */
  members(channel: string): Promise<string[]>;
  /** Every channel with someone joined, with its number of sessions. */
  channels(): Promise<Array<{ channel: string; members: number }>>;
}

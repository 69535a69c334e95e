// The hub: channels, the duplicate-session rule, and history expiry. It is transport-free:
// members come from the network layer, history goes through a HistoryStore.

import { Channel } from './channel.js';
import type { Member } from './member.js';
import { Close, type CloseReason } from '../protocol/close-codes.js';
import { sessionKey, type Join } from '../protocol/join.js';
import { provesPeer } from '../protocol/peer-proof.js';
import type { HistoryStore, MaybePromise, Message } from '../store/store.js';

export const DAY_MS = 24 * 60 * 60 * 1000;

/** Runs a store call; a synchronous throw becomes a rejection, which the channel pipeline handles. */
function attempt<T>(call: () => MaybePromise<T>): MaybePromise<T> {
  try {
    return call();
  } catch (error) {
    return Promise.reject(error);
  }
}

export interface HubOptions {
  store: HistoryStore;
  /** Milliseconds since the epoch; injectable so tests can move time. */
  now?: () => number;
  /** A channel idle for this long loses its history (spec section 3: 30 days). */
  idleExpiryMs?: number;
  onError?: (error: unknown, context: string) => void;
  /** How many stored payloads a peer-linked channel remembers to drop repeats. */
  dedupCapacity?: number;
  /** MLES_PEER_KEY: a `peer` join proven with it is not stored in history. */
  peerKey?: string | undefined;
}

/** Counters for logs and metrics; plain numbers so reading them costs nothing. */
export interface HubStats {
  joins: number;
  duplicates: number;
  messagesIn: number;
  deliveries: number;
  storeErrors: number;
  /** Messages from peers dropped because this server had already stored them. */
  peerRepeats: number;
}

/** What a joined member holds to publish and leave. */
export interface Session {
  readonly channel: string;
  publish(message: Message): void;
  leave(): void;
}

export class Hub {
  readonly store: HistoryStore;
  readonly stats: HubStats = {
    joins: 0, duplicates: 0, messagesIn: 0, deliveries: 0, storeErrors: 0, peerRepeats: 0,
  };
  private readonly channels = new Map<string, Channel>();
  private readonly sessions = new Set<string>();
  private readonly now: () => number;
  private readonly idleExpiryMs: number;
  private readonly onError: (error: unknown, context: string) => void;
  private readonly dedupCapacity: number;
  private readonly peerKey: string | undefined;
  /** Told when a channel's number of joined people changes (peer links follow it). */
  onUsersChanged: (channel: string, users: number) => void = () => {};

  constructor(options: HubOptions) {
    this.store = options.store;
    this.now = options.now ?? Date.now;
    this.idleExpiryMs = options.idleExpiryMs ?? 30 * DAY_MS;
    this.onError = options.onError ?? (() => {});
    this.dedupCapacity = options.dedupCapacity ?? 4096;
    this.peerKey = options.peerKey;
  }

  get channelCount(): number {
    return this.channels.size;
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  /**
   * Joins `member` to the channel named in `join`, or returns why it is refused. On success the
   * member receives the channel's history and then every later message of the others.
   */
  join(member: Member, join: Join): Session | CloseReason {
    const key = sessionKey(join);
    if (this.sessions.has(key)) {
      this.stats.duplicates++;
      return Close.duplicate;
    }
    this.sessions.add(key);
    this.stats.joins++;
    const channel = this.channelFor(join.channel);
    const history = attempt(() => this.store.read(join.channel));
    // A peer link's join frame is plumbing, not a person joining, but anyone can claim `peer`:
    // only a join proven with MLES_PEER_KEY stays out of history, or a lurker would be unseen.
    const stored = provesPeer(join, this.peerKey)
      ? undefined
      : attempt(() => this.store.append(join.channel, { data: join.text, binary: false }, this.now()));
    // Repeats from a claimed peer are dropped, proof or not: that keeps rings without a peer key
    // exactly-once, and costs a person who claims it only its own repeated payloads.
    if (join.peer) channel.trackStored(history, this.dedupCapacity);
    channel.join(member, history, stored, (error) => {
      this.storeFailed(error, `join ${join.channel}`);
      member.close(Close.historyUnavailable);
    });
    return this.session(channel, member, key);
  }

  /**
   * Makes this server's own link to a peer a member of `channelName`: it receives every later
   * message, and what it publishes is stored and fanned out unless the channel already has it.
   */
  attachLink(link: Member, channelName: string): Session {
    const channel = this.channelFor(channelName);
    channel.trackStored(attempt(() => this.store.read(channelName)), this.dedupCapacity);
    channel.attach(link);
    return this.session(channel, link, undefined);
  }

  private session(channel: Channel, member: Member, key: string | undefined): Session {
    return new MemberSession(this, channel, member, key);
  }

  /**
   * A member's message, on behalf of its session: stored, then fanned out in channel order.
   * Returns the store's append (nothing for a dropped peer repeat), for a caller that must know
   * when the message is stored.
   */
  publishFrom(channel: Channel, member: Member, message: Message): MaybePromise<void> {
    this.stats.messagesIn++;
    if (!channel.admit(member, message)) {
      this.stats.peerRepeats++;
      return;
    }
    // attempt() inlined: this runs for every message, and a closure per message is not free.
    let stored: MaybePromise<void>;
    try {
      stored = this.store.append(channel.name, message, this.now());
    } catch (error) {
      stored = Promise.reject(error);
    }
    channel.publish(member, message, stored);
    return stored;
  }

  /**
   * Publishes `message` on `channelName` from the server itself (the HTTP API), exactly as a
   * member's message: stored, then delivered to every member, in channel order. Resolves once it
   * is stored; rejects if the store failed, and then it went to no one.
   */
  publish(channelName: string, message: Message): Promise<void> {
    const channel = this.channelFor(channelName);
    const stored = this.publishFrom(channel, SERVER_SENDER, message);
    // A channel nobody is joined to was created just for this message: let the hub forget it
    // (with a queued append, the channel does so itself once the append settles).
    channel.checkIdle();
    return Promise.resolve(stored);
  }

  /** Channels with someone joined now, each with how many people (peer links not counted). */
  channelsOnline(): Array<{ channel: string; members: number }> {
    const online: Array<{ channel: string; members: number }> = [];
    for (const [name, channel] of this.channels) {
      if (channel.userCount > 0) online.push({ channel: name, members: channel.userCount });
    }
    return online;
  }

  /** The people joined to `channelName` now: not peer links, nor joins still waiting for history. */
  membersOf(channelName: string): Member[] {
    return [...(this.channels.get(channelName)?.members ?? [])].filter((member) => !member.peer);
  }

  /**
   * Closes every person joined to `channelName` as `uid` (several if they joined with different
   * auth) with `reason`; returns how many were closed.
   */
  disconnect(channelName: string, uid: string, reason: CloseReason): number {
    const matching = this.membersOf(channelName).filter((member) => member.uid === uid);
    for (const member of matching) member.close(reason);
    return matching.length;
  }

  /** Ends a session: its (uid, channel, auth) is free again at once. */
  release(channel: Channel, member: Member, key: string | undefined): void {
    if (key !== undefined) this.sessions.delete(key);
    channel.leave(member);
  }


  /** Drops the history of channels idle for longer than the expiry (run daily). */
  async expireIdle(): Promise<string[]> {
    const before = this.now() - this.idleExpiryMs;
    return this.store.expire(before, (name) => this.channels.has(name));
  }

  private channelFor(name: string): Channel {
    let channel = this.channels.get(name);
    if (!channel) {
      const created = new Channel(
        name,
        this.stats,
        () => {
          if (this.channels.get(name) === created) this.channels.delete(name);
        },
        (users) => this.onUsersChanged(name, users),
        (error) => this.storeFailed(error, `append ${name}`),
      );
      channel = created;
      this.channels.set(name, channel);
    }
    return channel;
  }

  private storeFailed(error: unknown, context: string): void {
    this.stats.storeErrors++;
    this.onError(error, context);
  }
}

/**
 * The sender of the server's own messages: never a member, so every member gets them; a store
 * failure is reported to the caller of Hub.publish, not through close().
 */
const SERVER_SENDER: Member = {
  uid: 'mles-server',
  open: true,
  deliver: () => {},
  replay: () => {},
  close: () => {},
};

/** A member's handle on its channel; a class rather than closures, as there is one per client. */
class MemberSession implements Session {
  private left = false;

  constructor(
    private readonly hub: Hub,
    private readonly target: Channel,
    private readonly member: Member,
    private readonly key: string | undefined,
  ) {}

  get channel(): string {
    return this.target.name;
  }

  publish(message: Message): void {
    this.hub.publishFrom(this.target, this.member, message);
  }

  leave(): void {
    if (this.left) return;
    this.left = true;
    this.hub.release(this.target, this.member, this.key);
  }
}

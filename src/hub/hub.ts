// The hub: channels, membership, join replay, fan-out and the duplicate-session rule, once for
// every mode. It is transport-free: members come from the network layer; a broker sequences and
// carries each channel (src/broker/), a session registry holds the duplicate rule, and history
// is read through the store.

import { Channel, type ChannelEvents, type Joined } from './channel.js';
import type { Broker, Guard, SessionRegistry } from './broker.js';
import type { Member } from './member.js';
import { Close, type CloseReason } from '../protocol/close-codes.js';
import { sessionKey, type Join } from '../protocol/join.js';
import { provesPeer } from '../protocol/peer-proof.js';
import { LocalBroker, LocalSessions } from '../broker/local.js';
import { ownedMessage, type HistoryStore, type HistoryView, type MaybePromise, type Message } from '../store/store.js';

export const DAY_MS = 24 * 60 * 60 * 1000;

/** A single node's store (its local broker appends to it), or a broker with its history. */
export type HubOptions = HubSettings & (
  | { store: HistoryStore; broker?: undefined }
  | { store: HistoryView; broker: Broker }
);

export interface HubSettings {
  /** The duplicate rule's sessions; this node's alone unless given. */
  sessions?: SessionRegistry;
  /** Milliseconds since the epoch; injectable so tests can move time. */
  now?: () => number;
  /** A channel idle for this long loses its history (spec section 3: 30 days). */
  idleExpiryMs?: number;
  onError?: (error: unknown, context: string) => void;
  /** How many stored payloads a peer-linked channel remembers to drop repeats. */
  dedupCapacity?: number;
  /** MLES_PEER_KEY: a `peer` join proven with it is not stored in history. */
  peerKey?: string | undefined;
  /**
   * How a message the hub keeps (history, members' queues) gets memory of its own, apart from
   * the read it arrived in: ownedMessage unless given. The server's copies it straight into the
   * WebSocket frame its deliveries send (src/net/frame.ts).
   */
  ownMessage?: (message: Message) => Message;
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
  /** Where history is read (the API, peer links) and expired. */
  readonly store: HistoryView;
  readonly stats: HubStats = {
    joins: 0, duplicates: 0, messagesIn: 0, deliveries: 0, storeErrors: 0, peerRepeats: 0,
  };
  private readonly broker: Broker;
  private readonly sessions: SessionRegistry;
  private readonly channels = new Map<string, Channel>();
  private readonly now: () => number;
  private readonly idleExpiryMs: number;
  private readonly onError: (error: unknown, context: string) => void;
  private readonly dedupCapacity: number;
  private readonly peerKey: string | undefined;
  private readonly ownMessage: (message: Message) => Message;
  private readonly channelEvents: ChannelEvents;
  private lastSenderId = 0;
  /** Told when a channel's number of joined people changes (peer links follow it). */
  onUsersChanged: (channel: string, users: number) => void = () => {};

  constructor(options: HubOptions) {
    this.store = options.store;
    this.now = options.now ?? Date.now;
    this.broker = options.broker ?? new LocalBroker(options.store as HistoryStore, this.now);
    this.sessions = options.sessions ?? new LocalSessions();
    this.idleExpiryMs = options.idleExpiryMs ?? 30 * DAY_MS;
    this.onError = options.onError ?? (() => {});
    this.dedupCapacity = options.dedupCapacity ?? 4096;
    this.peerKey = options.peerKey;
    this.ownMessage = options.ownMessage ?? ownedMessage;
    this.channelEvents = {
      idle: (channel) => {
        if (this.channels.get(channel.name) !== channel) return;
        this.channels.delete(channel.name);
        channel.stream.close();
      },
      users: (channel, users) => this.onUsersChanged(channel.name, users),
      storeFailed: (error, context) => this.storeFailed(error, context),
    };
  }

  get channelCount(): number {
    return this.channels.size;
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  /**
   * Joins `member` to the channel named in `join`, or returns why it is refused. On success the
   * member receives the channel's history and then every later message of the others. A
   * duplicate found only later (on another node) is closed with the same reason.
   */
  join(member: Member, join: Join): Session | CloseReason {
    const key = sessionKey(join);
    const claimed = this.sessions.claim(key, join.channel, join.peer ? undefined : join.uid);
    if (claimed === false) {
      this.stats.duplicates++;
      return Close.duplicate;
    }
    const channel = this.channelFor(join.channel);
    // A peer link's join frame is plumbing, not a person joining, but anyone can claim `peer`:
    // only a join proven with MLES_PEER_KEY stays out of history, or a lurker would be unseen.
    const frame = provesPeer(join, this.peerKey) ? undefined : this.ownMessage({ data: join.text, binary: false });
    // Repeats from a claimed peer are dropped, proof or not: that keeps rings without a peer key
    // exactly-once, and costs a person who claims it only its own repeated payloads.
    if (join.peer) channel.trackStored(this.readHistory(join.channel), this.dedupCapacity);
    // The join and what the member sends keep their place in the channel now, guarded while the
    // claim is on its way.
    const session = new MemberSession(this, channel, member, ++this.lastSenderId, key, claimed === true ? undefined : claimed.guard);
    channel.join(session, frame);
    if (claimed === true) session.start();
    else {
      claimed.won.then(
        (won) => (won ? session.start() : session.refuse(Close.duplicate)),
        () => session.refuse(Close.historyUnavailable),
      );
    }
    return session;
  }

  /**
   * Makes this server's own link to a peer a member of `channelName`: it receives every later
   * message, and what it publishes is stored and fanned out unless the channel already has it.
   */
  attachLink(link: Member, channelName: string): Session {
    const channel = this.channelFor(channelName);
    channel.trackStored(this.readHistory(channelName), this.dedupCapacity);
    const session = new MemberSession(this, channel, link, ++this.lastSenderId, undefined, undefined);
    channel.attach(session);
    return session;
  }

  /**
   * Takes the right to link `channelName` to the outside (`kind`: peers, an MQTT broker), through
   * the duplicate rule's registry: on a cluster one node at a time holds a channel's links of a
   * kind, so each message crosses once.
   */
  claimLinks(channelName: string, kind: LinkKind = 'links'): MaybePromise<boolean> {
    const claimed = this.sessions.claim(linksKey(channelName, kind), channelName);
    return typeof claimed === 'boolean' ? claimed : claimed.won;
  }

  releaseLinks(channelName: string, kind: LinkKind = 'links'): void {
    this.sessions.release(linksKey(channelName, kind));
  }

  /**
   * A message from `from`, on behalf of its session: stored, then fanned out in channel order.
   * Returns the broker's publish (nothing for a dropped peer repeat), for a caller that must
   * know when the message is stored.
   */
  publishFrom(channel: Channel, from: Joined, message: Message): MaybePromise<void> {
    this.stats.messagesIn++;
    if (!channel.accepts(from, message)) {
      this.stats.peerRepeats++;
      return;
    }
    // Kept in history and in slow members' queues: its own bytes, not its socket read's.
    return channel.stream.publish(from, this.ownMessage(message));
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

  /**
   * Channels with someone joined now, each with how many people's sessions (peer links not
   * counted), on every node.
   */
  async channelsOnline(): Promise<Array<{ channel: string; members: number }>> {
    if (this.sessions.presence) return this.sessions.presence.channels();
    const online: Array<{ channel: string; members: number }> = [];
    for (const [name, channel] of this.channels) {
      if (channel.userCount > 0) online.push({ channel: name, members: channel.userCount });
    }
    return online;
  }

  /**
   * Who is online on `channelName`: the uid of every person's session, on every node (not peer
   * links; on a single node, not joins still waiting for their history either).
   */
  async online(channelName: string): Promise<string[]> {
    if (this.sessions.presence) return this.sessions.presence.members(channelName);
    const uids: string[] = [];
    for (const joined of this.channels.get(channelName)?.members ?? []) {
      if (!joined.member.peer) uids.push(joined.member.uid);
    }
    return uids;
  }

  /**
   * Closes every person joined to `channelName` as `uid` (several if they joined with different
   * auth), on every node, as an operator's doing; returns how many sessions that was.
   */
  async disconnect(channelName: string, uid: string): Promise<number> {
    const presence = this.sessions.presence;
    const anywhere = presence ? (await presence.members(channelName)).filter((online) => online === uid).length : 0;
    const here = this.channels.get(channelName)?.disconnect(uid) ?? 0;
    if (anywhere > here) await this.broker.disconnect?.(channelName, uid);
    return Math.max(here, anywhere);
  }

  /** Ends a session: its (uid, channel, auth) is free again at once. */
  release(channel: Channel, joined: Joined, key: string | undefined): void {
    channel.leave(joined);
    if (key !== undefined) this.sessions.release(key);
  }

  /** Drops the history of channels idle for longer than the expiry (run daily). */
  async expireIdle(): Promise<string[]> {
    const before = this.now() - this.idleExpiryMs;
    return this.store.expire(before, (name) => this.channels.has(name));
  }

  /** Stops the broker and the session registry (the store is the caller's). */
  async close(): Promise<void> {
    this.sessions.close();
    await this.broker.close();
  }

  /** A store read; a synchronous throw becomes a rejection. */
  private readHistory(channel: string): MaybePromise<Message[]> {
    try {
      return this.store.read(channel);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  private channelFor(name: string): Channel {
    let channel = this.channels.get(name);
    if (!channel) {
      channel = new Channel(name, this.broker, this.stats, this.channelEvents);
      this.channels.set(name, channel);
    }
    return channel;
  }

  /** Counts and reports a store failure (also for the Redis broker's errors). */
  storeFailed(error: unknown, context: string): void {
    this.stats.storeErrors++;
    this.onError(error, context);
  }
}

/** What a channel is linked to: peers (the historic registry key's name), or an MQTT broker. */
export type LinkKind = 'links' | 'mqtt';

/** The registry key of a channel's links of a kind: no session key (a JSON triplet) looks like it. */
function linksKey(channel: string, kind: LinkKind): string {
  return JSON.stringify([kind, channel]);
}

/**
 * The sender of the server's own messages: never a member, so every member gets them; a store
 * failure is reported to the caller of Hub.publish, not through close().
 */
const SERVER_SENDER: Joined = {
  id: -1,
  member: { uid: 'mles-server', open: true, deliver: () => {}, replay: () => {}, close: () => {} },
};

/**
 * A member's handle on its channel; a class rather than closures, as there is one per client.
 * Until the registry has answered for its session (on another node's Redis, say), what the
 * member sends is sequenced with the claim's guard, so nothing of a refused duplicate is stored.
 */
class MemberSession implements Session, Joined {
  private left = false;

  constructor(
    private readonly hub: Hub,
    private readonly target: Channel,
    readonly member: Member,
    readonly id: number,
    private readonly key: string | undefined,
    /** Set while the registry is still deciding (see Sender.guard). */
    public guard: Guard | undefined,
  ) {
    target.hold();
  }

  get channel(): string {
    return this.target.name;
  }

  /** The session is this member's. */
  start(): void {
    this.guard = undefined;
    this.hub.stats.joins++;
    if (this.left) this.hub.release(this.target, this, this.key);
  }

  /** The registry said no (a duplicate elsewhere): nothing the member sent counts. */
  refuse(reason: CloseReason): void {
    // Not claimed, so nothing to release in the registry; marked first, as close() calls leave().
    this.left = true;
    if (reason === Close.duplicate) this.hub.stats.duplicates++;
    this.member.close(reason);
    this.target.leave(this);
  }

  publish(message: Message): void {
    this.hub.publishFrom(this.target, this, message);
  }

  leave(): void {
    if (this.left) return;
    this.left = true;
    if (this.guard === undefined) return this.hub.release(this.target, this, this.key);
    // While claiming: never admitted now; start() or refuse() lets go once the registry answers.
    this.target.withdraw(this);
  }
}

// The MQTT bridge (issue 15, spec section 8, docs/mqtt.md): channel C mirrors topic <prefix>C
// on one broker, both ways. The node that holds a channel's "mqtt" link claim (src/link/link-claim.ts;
// on a single node, always this one) bridges it: its link member of the channel publishes what the
// channel's others send, and it alone publishes into the channel what the broker delivers on the
// topic. A channel nobody is joined to is taken by the node holding the cluster's inbox claim when
// the broker delivers something for it, and let go a while after, so history keeps it.
//
// Exactly once, without losing repeated payloads (docs/mqtt.md, "Exactly once"): the broker's echo
// of our publications is dropped by No Local and by the mark every publication carries (MQTT 5
// user property mles-bridge); our own injections coming back through the channel are counted out
// on the link; the FIFO sets of section 8 only catch copies that came round a loop of servers.

import { createHash } from 'node:crypto';
import { isUtf8 } from 'node:buffer';
import cluster from 'node:cluster';
import os from 'node:os';
import type { Logger } from 'pino';
import { connect, Store, type IClientOptions, type IConnackPacket, type IPublishPacket, type MqttClient } from 'mqtt';
import { maskPassword } from '../config.js';
import { DedupSet, DEDUP_CAPACITY } from '../protocol/dedup.js';
import { siphash24Key, siphash24Words } from '../protocol/siphash.js';
import type { Hub, Session } from '../hub/hub.js';
import type { Member } from '../hub/member.js';
import { MESSAGE_OVERHEAD, type Message } from '../store/store.js';
import { LinkClaim } from './link-claim.js';
import { channelFor, subscriptionFor, topicFor } from './mqtt-topics.js';

export interface MqttBridgeOptions {
  /** The broker, as --mqtt: credentials and ?clientId=/?protocolVersion= in the URL. */
  url: string;
  prefix: string;
  /** The MQTT client id unless the URL names one; it names the broker's session for the bridge. */
  clientId: string;
  /**
   * The mark on every publication (user property mles-bridge): what carries it is never taken in.
   * A cluster's nodes share one (clusterBridgeId); a single server's is its client id.
   */
  bridgeId: string | undefined;
  /** What the queue towards the broker may cost (bytes + MESSAGE_OVERHEAD each); beyond, the oldest unsent go. */
  maxBuffered: number;
  /** Larger messages from the broker are dropped, as a member's larger frame would be refused. */
  maxMessageSize: number;
  backoffMinMs: number;
  backoffMaxMs: number;
  /** How long the broker keeps the bridge's session (and queues its messages) while it is away. */
  sessionExpirySeconds: number;
  /** At shutdown, how long queued messages may take to reach the broker. */
  closeGraceMs: number;
  /** How often a node with users asks again for a channel another node bridges. */
  retryMs: number;
  /** A channel without users here is held this long after its last message from the broker. */
  holdMs: number;
}

export const defaultMqttTuning = {
  backoffMinMs: 200,
  backoffMaxMs: 30_000,
  sessionExpirySeconds: 3_600,
  closeGraceMs: 2_000,
  retryMs: 1_000,
  holdMs: 30_000,
} as const satisfies Partial<MqttBridgeOptions>;

/**
 * The client id unless the URL names one: host and port, as the peer uid (src/link/peers.ts),
 * and the worker with --workers (its processes share the port; each needs its own session).
 */
export function defaultMqttClientId(port: number, hostname = os.hostname()): string {
  const worker = cluster.isWorker ? `-w${cluster.worker!.id}` : '';
  return `mles-${hostname.replace(/[^A-Za-z0-9.-]/g, '_')}-${port}${worker}`;
}

/**
 * A cluster's mark, the same on every node: from where it keeps its data (the Redis servers, with
 * database or namespace; never the credentials), so two clusters on one broker differ.
 */
export function clusterBridgeId(redisUrls: string[]): string {
  const places = redisUrls.map((text) => {
    const url = new URL(text);
    return `${url.hostname}:${url.port || '6379'}/${url.pathname.slice(1) || '0'}`;
  });
  return `mles-${createHash('sha256').update([...new Set(places)].sort().join(' ')).digest('hex').slice(0, 16)}`;
}

/** The MQTT 5 user property that names the bridge (or cluster) that published a message. */
export const BRIDGE_PROPERTY = 'mles-bridge';

/** Why the bridge dropped a message, for the mles_mqtt_dropped_total metric. */
export type MqttDropReason = 'queue_full' | 'not_acknowledged' | 'not_stored' | 'too_large' | 'topic' | 'retained';

/** Plain counters, read by the metrics' collect callbacks. */
export interface MqttBridgeStats {
  /** 1 while connected and subscribed, else 0. */
  connected: number;
  /** Times an established connection to the broker was lost. */
  outages: number;
  /** Messages from the broker published into channels. */
  messagesIn: number;
  /** Messages from channels the broker acknowledged. */
  messagesOut: number;
  /** Messages from the broker not taken in: the bridge's own publications, copies come round a loop. */
  duplicates: number;
  dropped: Map<MqttDropReason, number>;
  /** Messages waiting for the broker or for its acknowledgement. */
  queued: number;
}

interface Outgoing {
  topic: string;
  message: Message;
  cost: number;
}

/** At most this many publications wait for their acknowledgement at once (fewer if the broker says so). */
const MAX_IN_FLIGHT = 64;
/** A connection that lasted this long was a good one: the next outage starts from the shortest backoff. */
const STABLE_MS = 5_000;
/** Channels and topics whose refusal was logged (bounded, so odd names cannot grow it). */
const WARNED_CAPACITY = 10_000;

/** A 16-byte SipHash key per channel: the same payload in two channels is two messages. */
function channelKey(channel: string): Uint8Array {
  return createHash('sha256').update(channel).digest().subarray(0, 16);
}

/** A payload's entry in the FIFO sets: its channel-keyed SipHash (DedupSet hashes these 8 bytes). */
function fifoEntry(key: Uint8Array, payload: Uint8Array): Buffer {
  const [lo, hi] = siphash24Words(payload, key);
  const entry = Buffer.allocUnsafe(8);
  entry.writeUInt32LE(lo >>> 0, 0);
  entry.writeUInt32LE(hi >>> 0, 4);
  return entry;
}

/** Who published a message from the broker, by its mles-bridge property (none: not an mles bridge). */
function markOf(packet: IPublishPacket): string | undefined {
  const mark = packet.properties?.userProperties?.[BRIDGE_PROPERTY];
  return Array.isArray(mark) ? mark[0] : mark;
}

/**
 * Payload hashes with a count each: a payload seen three times is there three times. Beyond
 * `capacity` distinct payloads the oldest is forgotten (a Map keeps insertion order).
 */
class PayloadCounts {
  private readonly counts = new Map<number, number>();

  constructor(private readonly capacity = Infinity) {}

  add(payload: Uint8Array): void {
    const hash = siphash24Key(payload);
    this.counts.set(hash, (this.counts.get(hash) ?? 0) + 1);
    if (this.counts.size > this.capacity) this.counts.delete(this.counts.keys().next().value!);
  }

  /** Whether `payload` is there; if so, counted out once. */
  take(payload: Uint8Array): boolean {
    const hash = siphash24Key(payload);
    const count = this.counts.get(hash);
    if (count === undefined) return false;
    if (count === 1) this.counts.delete(hash);
    else this.counts.set(hash, count - 1);
    return true;
  }
}

/** How many of a link's recent publications a device's identical message may be matched with. */
const SENT_CAPACITY = 1_024;

/** A channel this node bridges, or wants to (it has users, or the broker sent something for it). */
interface Bridged {
  readonly claim: LinkClaim;
  /** The channel's link member while this node holds the claim (or asks for it the first time). */
  link: ChannelLink | undefined;
  /** People joined here. */
  users: number;
  /** When the bridge last took a message in for the channel: a channel without users is held a while after. */
  lastIn: number;
  idle: NodeJS.Timeout | undefined;
}

/** The broker for logs: scheme, host and port, never the credentials. */
function brokerName(url: URL): string {
  return `${url.protocol}//${url.host}`;
}

export class MqttBridge {
  readonly stats: MqttBridgeStats = {
    connected: 0, outages: 0, messagesIn: 0, messagesOut: 0, duplicates: 0, dropped: new Map(), queued: 0,
  };
  private readonly client: MqttClient;
  private readonly broker: string;
  private readonly clientId: string;
  private readonly bridgeId: string;
  private readonly protocolVersion: 4 | 5;
  /**
   * Section 8's loop guard for what comes by way of another mles bridge, all channels together
   * (keyed per channel): what this bridge published, and what it took in (see receive()).
   */
  private readonly published = new DedupSet(DEDUP_CAPACITY);
  private readonly takenIn = new DedupSet(DEDUP_CAPACITY);
  private readonly warned = new DedupSet(WARNED_CAPACITY);
  private readonly channels = new Map<string, Bridged>();
  /** Whoever holds it takes in messages for channels no node bridges (on a single node: this one). */
  private readonly inbox: LinkClaim;
  /** Towards the broker, oldest first: unsent from `head` on. */
  private queue: Outgoing[] = [];
  private head = 0;
  private queueCost = 0;
  private inFlight = 0;
  private window = MAX_IN_FLIGHT;
  private droppedThisOutage = 0;
  private backoffMs: number;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private connectedAt = 0;
  /** The outage's first failure is a warning; the retries after it are debug lines. */
  private failing = false;
  private closing = false;
  private drained: (() => void) | undefined;

  constructor(
    private readonly hub: Hub,
    private readonly options: MqttBridgeOptions,
    private readonly log: Logger,
  ) {
    const url = new URL(options.url);
    this.broker = brokerName(url);
    this.clientId = url.searchParams.get('clientId') ?? options.clientId;
    this.bridgeId = options.bridgeId ?? this.clientId;
    this.protocolVersion = url.searchParams.get('protocolVersion') === '4' ? 4 : 5;
    this.backoffMs = options.backoffMinMs;
    // The empty name is no channel's (channel names are not empty).
    this.inbox = new LinkClaim(hub, '', 'mqtt', options.retryMs, () => {
      this.log.info({ broker: this.broker }, 'MQTT bridge takes in messages for channels no node bridges');
    }, log);
    this.inbox.follow();
    // Credentials go as options, not in the URL: MQTT.js splits user:password at the last colon.
    const bare = `${url.protocol}//${url.host}${url.pathname}`;
    const stores = { incomingStore: new Store(), outgoingStore: new Store() };
    const clientOptions: IClientOptions = {
      ...stores,
      clientId: this.clientId,
      protocolVersion: this.protocolVersion,
      ...(url.username ? { username: decodeURIComponent(url.username) } : {}),
      ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
      // A session that outlives the connection: what is published while the bridge is away is
      // queued by the broker for it, and unacknowledged publications are resent on reconnect.
      clean: false,
      ...(this.protocolVersion === 5 ? {
        properties: {
          sessionExpiryInterval: options.sessionExpirySeconds,
          // The broker does not send what the bridge would drop anyway.
          maximumPacketSize: Math.min(options.maxMessageSize + 70_000, 268_435_455),
        },
      } : {}),
      reconnectPeriod: 0, // reconnects are ours, with backoff
      resubscribe: false, // subscribes on every connect itself (below)
      connectTimeout: 10_000,
      keepalive: 30,
      queueQoSZero: false,
    };
    this.client = connect(bare, clientOptions);
    // Taking a message in is acknowledged only once it is stored, and MQTT.js reads the next
    // packet only then: the broker's flow control paces what it sends, order stays the broker's.
    this.client.handleMessage = (packet, done) => void this.receive(packet, () => done());
    this.client.on('connect', (connack) => this.connected(connack));
    this.client.on('error', (error) => this.failed(error));
    this.client.on('close', () => this.lost(stores));
    this.client.on('disconnect', (packet) => {
      this.log.warn({ broker: this.broker, reasonCode: packet.reasonCode, reason: packet.properties?.reasonString }, 'MQTT broker disconnected the bridge');
    });
  }

  /** The hub's notice that a channel's count of local users changed: bridge it while it has users. */
  usersChanged(channel: string, users: number): void {
    if (this.closing) return;
    let bridged = this.channels.get(channel);
    if (users > 0) {
      if (!bridged) {
        const target = topicFor(this.options.prefix, channel);
        if ('refused' in target) return this.warnOnce(`channel ${channel}`, { channel, why: target.refused }, 'channel not bridged to MQTT');
        bridged = this.want(channel, target.topic);
        // A member at once, holding what the channel delivers until the claim's first answer (on
        // a cluster a round trip to Redis): won, it is bridged, so a first user's first messages
        // are; lost, dropped, as another node bridges them.
        bridged.link = new ChannelLink(this, channel, target.topic);
      }
      clearTimeout(bridged.idle);
      if (bridged.users === 0) bridged.claim.follow(); // the first user: ask until it holds
      bridged.users = users;
    } else if (bridged) {
      bridged.users = 0;
      this.idle(bridged);
    }
  }

  /** Lets go of every channel and the inbox; what is queued gets `closeGraceMs` to reach the broker. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    clearTimeout(this.reconnectTimer);
    for (const bridged of [...this.channels.values()]) this.letGo(bridged);
    this.inbox.release();
    if (this.stats.queued > 0 && this.client.connected) {
      await new Promise<void>((resolve) => {
        this.drained = resolve;
        setTimeout(resolve, this.options.closeGraceMs).unref();
      });
    }
    if (this.stats.queued > 0) this.log.warn({ broker: this.broker, messages: this.stats.queued }, 'MQTT bridge stopped with messages not bridged');
    // Not waiting for the broker's acknowledgements: the grace is over or nothing is in flight.
    const force = this.stats.queued > 0 || !this.client.connected;
    await new Promise<void>((resolve) => this.client.end(force, {}, () => resolve()));
    this.stats.connected = 0;
  }

  /** A channel message for the broker (not one this bridge took in: the link counted those out). */
  send(link: ChannelLink, message: Message): void {
    this.published.check(fifoEntry(link.key, message.data));
    link.sent.add(message.data);
    const cost = message.data.length + MESSAGE_OVERHEAD;
    this.queue.push({ topic: link.topic, message, cost });
    this.queueCost += cost;
    this.stats.queued++;
    // Full: the oldest unsent make room (the newest is kept even if it alone is over).
    while (this.queueCost > this.options.maxBuffered && this.queue.length - this.head > 1) {
      const oldest = this.queue[this.head++]!;
      this.queueCost -= oldest.cost;
      this.stats.queued--;
      this.drop('queue_full');
      if (this.droppedThisOutage++ === 0) {
        this.log.warn({ broker: this.broker, maxBuffered: this.options.maxBuffered }, 'MQTT queue full: dropping the oldest unsent messages');
      }
    }
    this.pump();
  }

  /** Hands queued messages to MQTT.js while connected, at most `window` unacknowledged. */
  private pump(): void {
    while (this.client.connected && this.inFlight < this.window && this.head < this.queue.length) {
      const item = this.queue[this.head]!;
      this.queue[this.head++] = undefined as unknown as Outgoing; // the queue no longer holds it
      this.inFlight++;
      const properties = this.protocolVersion === 5
        ? { userProperties: { [BRIDGE_PROPERTY]: this.bridgeId }, ...(item.message.binary ? {} : { payloadFormatIndicator: true }) }
        : undefined;
      this.client.publish(item.topic, item.message.data, { qos: 1, retain: false, ...(properties ? { properties } : {}) }, (error) => {
        this.inFlight--;
        this.queueCost -= item.cost;
        this.stats.queued--;
        if (error) {
          this.drop('not_acknowledged');
          this.warnOnce(`refused ${item.topic}`, { topic: item.topic, error: error.message }, 'MQTT broker did not take a publication (logged once per topic)');
        } else {
          this.stats.messagesOut++;
        }
        if (this.stats.queued === 0) this.drained?.();
        this.pump();
      });
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }

  /** A message the broker delivered on our subscription; `done` acknowledges it. */
  private async receive(packet: IPublishPacket, done: () => void): Promise<void> {
    // Retained messages are the topic's state, sent again on every subscribe: not new messages.
    // (The subscription asks for none; an MQTT 3.1.1 broker sends them anyway.)
    if (packet.retain) {
      this.drop('retained');
      return done();
    }
    const topic = packet.topic;
    const target = channelFor(this.options.prefix, topic);
    if ('refused' in target) {
      this.drop('topic');
      this.warnOnce(`topic ${topic}`, { topic, why: target.refused }, 'MQTT topic not bridged to a channel');
      return done();
    }
    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
    if (payload.length > this.options.maxMessageSize) {
      this.drop('too_large');
      this.warnOnce(`large ${topic}`, { topic, bytes: payload.length, maxMessageSize: this.options.maxMessageSize }, 'MQTT message over --max-message-size not bridged (logged once per topic)');
      return done();
    }
    // Our own publication, back by a way No Local does not cover (another node of the cluster,
    // a broker without it, a bridge between brokers).
    const mark = markOf(packet);
    if (mark === this.bridgeId) {
      this.stats.duplicates++;
      return done();
    }
    const { channel } = target;
    const bridged = await this.holder(channel, topic);
    if (!bridged) return done(); // another node bridges the channel and takes it in
    const link = bridged.link!;
    // Section 8's loop guard. A message by way of another mles bridge (its mark; with MQTT 3.1.1
    // any: there are no marks), or the broker's redelivery (DUP), is dropped if its bytes went
    // either way here recently: it came round a loop. A device's message (no mark) is new however
    // often its bytes repeat, unless it is the same message that reached this server by a peer
    // link first and was published from there: each of our publications on the topic may take
    // one such message out.
    const entry = fifoEntry(link.key, payload);
    const relayed = mark !== undefined || packet.dup || this.protocolVersion === 4;
    const repeat = relayed ? this.published.has(entry) || this.takenIn.has(entry) : link.sent.take(payload);
    if (repeat) {
      this.stats.duplicates++;
      return done();
    }
    this.takenIn.check(entry);
    // A copy: the parser's buffer may hold more than this payload, and history keeps it long.
    const message: Message = { data: Buffer.from(payload), binary: !isUtf8(payload) };
    link.injected.add(message.data);
    let stored: Promise<void>;
    try {
      stored = this.hub.publish(channel, message);
    } catch (error) {
      stored = Promise.reject(error);
    }
    stored.then(
      () => {
        this.stats.messagesIn++;
        bridged.lastIn = Date.now();
        if (bridged.users === 0) this.idle(bridged);
        done();
      },
      (error: unknown) => {
        // It went to no one, the link included. Acknowledged all the same: the hub has refused
        // it, a redelivery would not fare better.
        link.injected.take(message.data);
        this.drop('not_stored');
        this.log.error({ err: error, channel }, 'MQTT message not stored; it is lost');
        done();
      },
    );
  }

  /**
   * The channel, held by this node with its link, if this node is to take in its messages: it
   * holds the channel's claim, or it holds the inbox and the channel's claim is free. Undefined if
   * another node bridges the channel (that node got the same message and takes it in).
   */
  private async holder(channel: string, topic: string): Promise<Bridged | undefined> {
    while (!this.closing) {
      let bridged = this.channels.get(channel);
      if (bridged?.claim.holds) return bridged;
      // Not holding it: ask, if its users' claim is on its way (the answer decides) or as the inbox.
      if (!bridged && !this.inbox.holds) return undefined;
      if (bridged && !bridged.claim.asking && !this.inbox.holds) return undefined;
      bridged ??= this.want(channel, topic);
      const held = await bridged.claim.ask();
      if (held) continue; // held now, unless let go meanwhile: look again
      if (this.channels.get(channel) !== bridged) continue; // let go meanwhile: ask anew
      if (bridged.users === 0) this.letGo(bridged);
      return undefined;
    }
    return undefined;
  }

  /** Starts following a channel's claim: while this node holds it, the channel's link is a member. */
  private want(channel: string, topic: string): Bridged {
    const bridged: Bridged = {
      claim: new LinkClaim(this.hub, channel, 'mqtt', this.options.retryMs, () => {
        bridged.link ??= new ChannelLink(this, channel, topic);
        bridged.link.live();
        this.log.debug({ channel }, 'MQTT bridge holds the channel');
        // Taken for a message from the broker: held from now, as if it had just taken one in.
        if (bridged.users === 0) bridged.lastIn = Date.now();
      }, this.log, () => {
        bridged.link?.close();
        bridged.link = undefined;
      }),
      link: undefined,
      users: 0,
      lastIn: 0,
      idle: undefined,
    };
    this.channels.set(channel, bridged);
    return bridged;
  }

  /** A channel without users here: let go of it once `holdMs` have passed since it last took a message in. */
  private idle(bridged: Bridged): void {
    clearTimeout(bridged.idle);
    const left = bridged.lastIn + this.options.holdMs - Date.now();
    if (!bridged.claim.holds || left <= 0) return this.letGo(bridged);
    bridged.idle = setTimeout(() => this.idle(bridged), left);
    bridged.idle.unref();
  }

  /** Stops bridging a channel here: another node (or a later user) takes it. */
  private letGo(bridged: Bridged): void {
    clearTimeout(bridged.idle);
    if (this.channels.get(bridged.claim.channel) === bridged) this.channels.delete(bridged.claim.channel);
    if (bridged.claim.holds) this.log.debug({ channel: bridged.claim.channel }, 'MQTT bridge lets go of the channel');
    bridged.link?.close();
    bridged.claim.release();
  }

  private connected(connack: IConnackPacket): void {
    this.connectedAt = Date.now();
    this.window = Math.min(MAX_IN_FLIGHT, connack.properties?.receiveMaximum ?? MAX_IN_FLIGHT);
    const subscription = subscriptionFor(this.options.prefix);
    // No Local: the broker does not send our own publications back. Retain handling 2: no
    // retained messages on subscribing. Subscribing again on a resumed session changes nothing.
    this.client.subscribe(subscription, { qos: 1, nl: true, rh: 2, rap: false }, (error, granted) => {
      if (!this.client.connected) return; // lost before the answer: the next connect subscribes again
      const code = granted?.[0]?.qos;
      if (error || code === undefined || code >= 0x80) {
        this.log.error({ broker: this.broker, subscription, err: error, reasonCode: code }, 'MQTT subscription refused: nothing is bridged from the broker');
      }
      this.stats.connected = 1;
      this.failing = false;
      const recovered = this.droppedThisOutage;
      this.droppedThisOutage = 0;
      this.log.info({
        broker: this.broker, clientId: this.clientId, subscription, protocolVersion: this.protocolVersion,
        sessionPresent: connack.sessionPresent, queued: this.stats.queued, ...(recovered > 0 ? { dropped: recovered } : {}),
      }, 'MQTT bridge connected');
    });
    this.pump();
  }

  private failed(error: Error & { code?: string | number }): void {
    if (this.closing) return;
    if (error.code === 132 || error.code === 1) {
      this.log.error({ broker: this.broker }, 'MQTT broker does not speak MQTT 5: add ?protocolVersion=4 to --mqtt');
    }
    const fields = { broker: this.broker, error: maskPassword(error.message), code: error.code };
    if (this.failing) this.log.debug(fields, 'MQTT connection attempt failed');
    else this.log.warn(fields, 'MQTT connection failed; retrying');
    this.failing = true;
  }

  private lost(stores: { incomingStore: Store; outgoingStore: Store }): void {
    const wasUp = this.stats.connected === 1;
    this.stats.connected = 0;
    if (this.closing) return;
    if (wasUp) {
      this.stats.outages++;
      this.failing = true; // a failing reconnect after this is not news
      this.log.warn({ broker: this.broker, queued: this.stats.queued }, 'MQTT broker connection lost; reconnecting');
    }
    const stable = wasUp && Date.now() - this.connectedAt >= STABLE_MS;
    this.backoffMs = stable ? this.options.backoffMinMs : Math.min(this.backoffMs * 2, this.options.backoffMaxMs);
    const delay = this.backoffMs * (0.5 + Math.random() / 2);
    clearTimeout(this.reconnectTimer);
    // The same stores: what was in flight is sent again, with its acknowledgement callback.
    this.reconnectTimer = setTimeout(() => this.client.reconnect(stores), delay);
  }

  private drop(reason: MqttDropReason): void {
    this.stats.dropped.set(reason, (this.stats.dropped.get(reason) ?? 0) + 1);
  }

  private warnOnce(what: string, fields: Record<string, unknown>, message: string): void {
    if (this.warned.add(siphash24Key(Buffer.from(what)))) this.log.warn(fields, message);
  }

  /** Attaches a link member for its channel (called by ChannelLink). */
  attach(link: ChannelLink): Session {
    return this.hub.attachLink(link, link.channel);
  }
}

/**
 * The bridge's member in one channel, while this node bridges it: what the channel's others send
 * goes to the broker, but for what the bridge itself published into the channel.
 */
class ChannelLink implements Member {
  readonly peer = true;
  readonly uid = 'mles-mqtt-bridge';
  open = true;
  readonly key: Uint8Array;
  private readonly session: Session;
  /**
   * The bridge's own injections on their way back through the channel: counted, not a set, so a
   * payload the broker sent three times is counted out three times, and a member's message with
   * the same bytes is still a message.
   */
  readonly injected = new PayloadCounts(DEDUP_CAPACITY);
  /** What the bridge published from this channel lately (see MqttBridge.receive). */
  readonly sent = new PayloadCounts(SENT_CAPACITY);
  /** What the channel delivered before the bridge took the channel (see MqttBridge.usersChanged). */
  private held: Message[] | undefined = [];

  constructor(
    private readonly bridge: MqttBridge,
    readonly channel: string,
    readonly topic: string,
  ) {
    this.key = channelKey(channel);
    this.session = bridge.attach(this);
  }

  /** The bridge holds the channel: what was held back goes, and what follows. */
  live(): void {
    const held = this.held ?? [];
    this.held = undefined;
    for (const message of held) this.bridge.send(this, message);
  }

  deliver(message: Message): void {
    if (this.injected.take(message.data)) return;
    if (this.held) this.held.push(message);
    else this.bridge.send(this, message);
  }

  /** Attached, not joined: the hub never replays history to a link. */
  replay(): void {}

  close(): void {
    if (!this.open) return;
    this.open = false;
    this.session.leave();
  }
}

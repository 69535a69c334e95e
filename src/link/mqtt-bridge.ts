// The MQTT bridge (issue 15, spec section 8, docs/mqtt.md): channel C mirrors topic <prefix>C
// on one broker, both ways. Local messages reach the broker through a link member of every
// channel that has people in it; what the broker delivers on <prefix># is published into its
// channel (stored and fanned out), whether or not anyone is joined, so history keeps it.
//
// Exactly once: one FIFO set of payload hashes (per channel, as the reference proxy's) holds
// what went either way; a payload in it is neither published nor taken in again. That drops the
// broker's echo of our own publications (also without MQTT 5 No Local), our own injections
// coming back through the channel, and copies that come round a loop of servers.

import { createHash } from 'node:crypto';
import { isUtf8 } from 'node:buffer';
import os from 'node:os';
import type { Logger } from 'pino';
import { connect, Store, type IClientOptions, type IConnackPacket, type IPublishPacket, type MqttClient } from 'mqtt';
import { maskPassword } from '../config.js';
import { DedupSet, DEDUP_CAPACITY } from '../protocol/dedup.js';
import { siphash24Key, siphash24Words } from '../protocol/siphash.js';
import type { Hub, Session } from '../hub/hub.js';
import type { Member } from '../hub/member.js';
import { MESSAGE_OVERHEAD, type Message } from '../store/store.js';
import { channelFor, subscriptionFor, topicFor } from './mqtt-topics.js';

export interface MqttBridgeOptions {
  /** The broker, as --mqtt: credentials and ?clientId=/?protocolVersion= in the URL. */
  url: string;
  prefix: string;
  /** The MQTT client id unless the URL names one; it names the broker's session for the bridge. */
  clientId: string;
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
}

export const defaultMqttTuning = {
  backoffMinMs: 200,
  backoffMaxMs: 30_000,
  sessionExpirySeconds: 3_600,
  closeGraceMs: 2_000,
} as const satisfies Partial<MqttBridgeOptions>;

/** The client id unless the URL names one: host and port, as the peer uid (src/link/peers.ts). */
export function defaultMqttClientId(port: number, hostname = os.hostname()): string {
  return `mles-${hostname.replace(/[^A-Za-z0-9.-]/g, '_')}-${port}`;
}

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
  /** Payloads not bridged because they already went one way or the other (echoes, loops). */
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

function payloadKey(key: Uint8Array, payload: Uint8Array): number {
  const [lo, hi] = siphash24Words(payload, key);
  return (hi & 0x1fffff) * 0x100000000 + lo; // 53 bits, as siphash24Key
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
  private readonly protocolVersion: 4 | 5;
  /** Hashes of the payloads that went to or came from the broker, all channels (keyed per channel). */
  private readonly seen = new DedupSet(DEDUP_CAPACITY);
  private readonly warned = new DedupSet(WARNED_CAPACITY);
  private readonly links = new Map<string, ChannelLink>();
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
    this.protocolVersion = url.searchParams.get('protocolVersion') === '4' ? 4 : 5;
    this.backoffMs = options.backoffMinMs;
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
    this.client.handleMessage = (packet, done) => this.receive(packet, () => done());
    this.client.on('connect', (connack) => this.connected(connack));
    this.client.on('error', (error) => this.failed(error));
    this.client.on('close', () => this.lost(stores));
    this.client.on('disconnect', (packet) => {
      this.log.warn({ broker: this.broker, reasonCode: packet.reasonCode, reason: packet.properties?.reasonString }, 'MQTT broker disconnected the bridge');
    });
  }

  /** The hub's notice that a channel's count of local users changed: link it while it has users. */
  usersChanged(channel: string, users: number): void {
    if (this.closing) return;
    const link = this.links.get(channel);
    if (users > 0 && !link) {
      const target = topicFor(this.options.prefix, channel);
      if ('refused' in target) return this.warnOnce(`channel ${channel}`, { channel, why: target.refused }, 'channel not bridged to MQTT');
      this.links.set(channel, new ChannelLink(this, channel, target.topic));
    } else if (users === 0 && link) {
      this.links.delete(channel);
      link.close();
    }
  }

  /** Links leave their channels; what is queued gets `closeGraceMs` to reach the broker. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    clearTimeout(this.reconnectTimer);
    for (const link of this.links.values()) link.close();
    this.links.clear();
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

  /** A local message on `link`'s channel, unless it came from the broker or went there already. */
  send(link: ChannelLink, message: Message): void {
    if (!this.seen.add(payloadKey(link.key, message.data))) return;
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
      const properties = this.protocolVersion === 5 && !item.message.binary ? { payloadFormatIndicator: true } : undefined;
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
  private receive(packet: IPublishPacket, done: () => void): void {
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
    const { channel } = target;
    if (!this.seen.add(payloadKey(this.links.get(channel)?.key ?? channelKey(channel), payload))) {
      this.stats.duplicates++;
      return done();
    }
    // A copy: the parser's buffer may hold more than this payload, and history keeps it long.
    const message: Message = { data: Buffer.from(payload), binary: !isUtf8(payload) };
    let stored: Promise<void>;
    try {
      stored = this.hub.publish(channel, message);
    } catch (error) {
      stored = Promise.reject(error);
    }
    stored.then(
      () => {
        this.stats.messagesIn++;
        done();
      },
      (error: unknown) => {
        // Acknowledged all the same: the hub has refused it, a redelivery would not fare better.
        this.drop('not_stored');
        this.log.error({ err: error, channel }, 'MQTT message not stored; it is lost');
        done();
      },
    );
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

  /** A link has left its channel (also when the hub closed it): a later user links it anew. */
  forget(link: ChannelLink): void {
    if (this.links.get(link.channel) === link) this.links.delete(link.channel);
  }
}

/** The bridge's member in one channel: what the channel's others send goes to the broker. */
class ChannelLink implements Member {
  readonly peer = true;
  readonly uid = 'mles-mqtt-bridge';
  open = true;
  readonly key: Uint8Array;
  private readonly session: Session;

  constructor(
    private readonly bridge: MqttBridge,
    readonly channel: string,
    readonly topic: string,
  ) {
    this.key = channelKey(channel);
    this.session = bridge.attach(this);
  }

  deliver(message: Message): void {
    this.bridge.send(this, message);
  }

  /** Attached, not joined: the hub never replays history to a link. */
  replay(): void {}

  close(): void {
    if (!this.open) return;
    this.open = false;
    this.session.leave();
    this.bridge.forget(this);
  }
}

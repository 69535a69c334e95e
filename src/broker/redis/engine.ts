// What the Redis broker does with Redis, over either transport (one server, or a Redis Cluster):
// the scripts, and a channel's messages batched per event-loop turn into one script call
// (capped in count and bytes). It reports when Redis goes and comes back.

import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { ClusterTransport, ServerTransport, type Transport } from './transport.js';
import type { Message } from '../../store/store.js';
import { parseBatch, batchHeader, sequenceEntries, BatchKind, JOIN_ORIGIN, type Batch, type SequencedMessage } from './envelope.js';
import {
  KeySpace, type ChannelKeys, encodeEntry, MAX_BATCH,
  PUBLISH_SCRIPT, JOIN_SCRIPT, FETCH_SCRIPT, RELEASE_SCRIPT, RESEED_SCRIPT,
} from './scripts.js';

/** A batch is sent once it holds this many payload bytes, even within one turn. */
export const MAX_BATCH_BYTES = 4 * 1024 * 1024;

export interface EngineOptions {
  /** One Redis server's URL, or a Redis Cluster's seed nodes. */
  redis: { url: string } | { cluster: string[] };
  /** History kept per channel (--limit). */
  limit: number;
  /** History payload bytes kept per channel (--history-bytes); 0: no byte cap. */
  historyBytes: number;
  /** A channel idle this long loses its history (spec section 3: 30 days). */
  expirySeconds: number;
  /** A session key lives this long unless its node refreshes it. */
  sessionTtlMs: number;
  log: Logger;
}

export interface EngineEvents {
  /** A batch of sequenced messages arrived on a channel's stream. */
  onBatch(channel: string, batch: Batch): void;
  /** A batch was appended: its messages took the seqs from `first` on. */
  onAppended(channel: string, items: OutgoingMessage[], kind: BatchKind, first: number): void;
  /** A batch could not be appended (Redis went away). */
  onAppendFailed(channel: string, items: OutgoingMessage[], kind: BatchKind): void;
  /** Redis takes commands and the stream works (at start, and again after an outage). */
  onUp(): void;
  /** The command connection was lost: the node is on its own until onUp. */
  onDown(): void;
  /** Only the subscriber was lost: messages still reach Redis, the stream is missed until onStreamBack. */
  onStreamLost(): void;
  /** Subscriptions are back: follow the channels again and catch up. */
  onStreamBack(): void;
}

export interface OutgoingMessage {
  /** The sending member's id on this node, or JOIN_ORIGIN. */
  origin: string;
  message: Message;
}

export interface JoinResult {
  seq: number;
  history: Buffer[];
}

/** A channel's messages of this turn, and the one promise of their append. */
interface PendingBatch {
  items: OutgoingMessage[];
  bytes: number;
  stored: Promise<void> | undefined;
  settle: ((error?: unknown) => void) | undefined;
}

type Arg = string | Buffer | number;
interface ScriptCommands {
  mlesPublish(...args: Arg[]): Promise<number>;
  mlesJoinBuffer(...args: Arg[]): Promise<[number, Buffer[]] | null>;
  mlesFetchBuffer(...args: Arg[]): Promise<[number, Buffer[]]>;
  mlesRelease(...args: Arg[]): Promise<number>;
  mlesReseed(...args: Arg[]): Promise<number>;
}

export class RedisEngine {
  /** Names this node in published batches, so it can recognise its own replays. */
  readonly nodeId = randomBytes(6).toString('hex');
  private readonly transport: Transport;
  private readonly keySpace: KeySpace;
  private readonly commands: Transport['commands'] & ScriptCommands;
  private up = false;
  private readonly batches = new Map<string, PendingBatch>();
  private flushScheduled = false;
  private closed = false;

  constructor(private readonly options: EngineOptions, private readonly events: EngineEvents) {
    const name = `mles-${this.nodeId}`;
    const transportEvents = {
      onUp: () => {
        this.up = true;
        events.onUp();
      },
      onDown: () => {
        this.up = false;
        events.onDown();
      },
      onStreamLost: () => events.onStreamLost(),
      onStreamBack: () => events.onStreamBack(),
      onPayload: (live: Buffer, payload: Buffer) => this.received(live, payload),
    };
    this.transport = 'url' in options.redis
      ? new ServerTransport(options.redis.url, name, transportEvents, options.log)
      : new ClusterTransport(options.redis.cluster, name, transportEvents, options.log);
    this.commands = this.transport.commands as Transport['commands'] & ScriptCommands;
    this.keySpace = new KeySpace(this.transport.db, this.transport.namespace);
    this.commands.defineCommand('mlesPublish', { numberOfKeys: 3, lua: PUBLISH_SCRIPT });
    this.commands.defineCommand('mlesJoin', { numberOfKeys: 4, lua: JOIN_SCRIPT });
    this.commands.defineCommand('mlesFetch', { numberOfKeys: 2, lua: FETCH_SCRIPT });
    this.commands.defineCommand('mlesRelease', { numberOfKeys: 1, lua: RELEASE_SCRIPT });
    this.commands.defineCommand('mlesReseed', { numberOfKeys: 3, lua: RESEED_SCRIPT });
  }

  private received(live: Buffer, payload: Buffer): void {
    let batch: Batch;
    try {
      batch = parseBatch(payload);
    } catch (error) {
      this.options.log.error({ err: error }, 'unreadable cluster batch');
      return;
    }
    this.events.onBatch(this.keySpace.channelOfLive(live.toString('latin1')), batch);
  }

  private keys(channel: string): ChannelKeys {
    return this.keySpace.channel(channel);
  }

  /** The Redis key of a session of the duplicate rule. */
  sessionKey(channel: string, triplet: string): string {
    return this.keySpace.session(channel, triplet);
  }

  /** The arguments every script that adds to a history takes: limit, byte cap, expiry. */
  private caps(): [number, number, number] {
    return [this.options.limit, this.options.historyBytes, this.options.expirySeconds];
  }

  /** What a script that publishes takes after the caps: the command, the pub/sub channel, the header. */
  private stream(channel: string, kind: BatchKind): [string, string, string] {
    return [this.transport.publishCommand, this.keys(channel).live, batchHeader(this.nodeId, kind)];
  }

  /** Connects; false if Redis did not answer within `timeoutMs` (it keeps trying). */
  async start(timeoutMs: number): Promise<boolean> {
    const connecting = this.transport.connect().then(() => true, () => false);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
    try {
      return await Promise.race([connecting, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  get isUp(): boolean {
    return this.up;
  }

  /** Resolves once the subscriber receives the channels' streams. */
  async subscribe(channels: string[]): Promise<void> {
    await this.transport.subscribe(channels.map((c) => this.keys(c).live));
  }

  unsubscribe(channel: string): void {
    this.transport.unsubscribe(this.keys(channel).live).catch(() => {});
  }

  /** The atomic join (see JOIN_SCRIPT): the history before it and its seq; null if its guard failed. */
  async join(channel: string, frame: Message | undefined, guard: { key: string; token: string } | undefined): Promise<JoinResult | null> {
    this.flushChannel(channel); // this node's earlier messages on the channel come first
    const { seq, history, bytes } = this.keys(channel);
    const reply = await this.commands.mlesJoinBuffer(
      seq, history, bytes, guard?.key ?? seq, ...this.caps(), ...this.stream(channel, BatchKind.live),
      frame ? encodeEntry(frame, true) : '', guard?.token ?? '',
    );
    return reply === null ? null : { seq: Number(reply[0]), history: reply[1] };
  }

  /** The channel's last seq and what history holds after `since` (see FETCH_SCRIPT). */
  async fetch(channel: string, since: number): Promise<{ last: number; missed: SequencedMessage[] }> {
    this.flushChannel(channel);
    const { seq, history } = this.keys(channel);
    const [last, entries] = await this.commands.mlesFetchBuffer(seq, history, since);
    return { last: Number(last), missed: sequenceEntries(entries, Number(last)) };
  }

  /**
   * Queues a message; the channel's messages of this turn go to Redis in one script call. The
   * result, shared by the batch, settles once they are stored.
   */
  publish(channel: string, item: OutgoingMessage): Promise<void> {
    let batch = this.batches.get(channel);
    if (!batch) {
      batch = { items: [], bytes: 0, stored: undefined, settle: undefined };
      this.batches.set(channel, batch);
    }
    batch.items.push(item);
    batch.bytes += item.message.data.length;
    batch.stored ??= new Promise<void>((resolve, reject) => {
      batch.settle = (error) => (error === undefined ? resolve() : reject(error));
    });
    // Members' messages are not awaited: their failure is handled through onAppendFailed.
    batch.stored.catch(() => {});
    const stored = batch.stored;
    if (batch.items.length >= MAX_BATCH || batch.bytes >= MAX_BATCH_BYTES) this.flushChannel(channel);
    else if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
    return stored;
  }

  /** Appends messages served locally during an outage, marked so their node does not deliver them again. */
  replay(channel: string, items: OutgoingMessage[]): Promise<void> {
    const sent: Array<Promise<void>> = [];
    for (let start = 0; start < items.length;) {
      let end = start;
      for (let bytes = 0; end < items.length && end - start < MAX_BATCH && bytes < MAX_BATCH_BYTES; end++) {
        bytes += items[end]!.message.data.length;
      }
      sent.push(this.append(channel, items.slice(start, end), BatchKind.replay));
      start = end;
    }
    return Promise.all(sent).then(() => {});
  }

  /** Restores a channel's history if Redis lost it (see RESEED_SCRIPT). */
  async reseed(channel: string, lastSeq: number, entries: Buffer[]): Promise<number> {
    const { seq, history, bytes } = this.keys(channel);
    return this.commands.mlesReseed(seq, history, bytes, lastSeq, ...this.caps(), ...entries);
  }

  /** The channel's history entries, oldest first. */
  async read(channel: string): Promise<Buffer[]> {
    return this.commands.lrangeBuffer(this.keys(channel).history, 0, -1);
  }

  /** Drops the channel's history; its seq goes on, so no node takes it for a lost channel. */
  async clear(channel: string): Promise<void> {
    const { history, bytes } = this.keys(channel);
    this.flushChannel(channel);
    await this.commands.del(history, bytes);
  }

  /** Messages held in history across all channels (SCAN: for metrics, not the hot path). */
  async countMessages(): Promise<number> {
    let total = 0;
    for await (const keys of this.transport.scan(this.keySpace.histories)) {
      for (const count of await Promise.all(keys.map((key) => this.commands.llen(key)))) total += count;
    }
    return total;
  }

  /** Takes a session key for this node unless it is taken; false if it is. */
  async claimNew(key: string, token: string): Promise<boolean> {
    return (await this.commands.set(key, token, 'PX', this.options.sessionTtlMs, 'NX')) === 'OK';
  }

  /** (Re)claims session keys for this node, e.g. after an outage. */
  async claim(sessions: Array<{ key: string; token: string }>): Promise<void> {
    // One command each, not a pipeline: on a Redis Cluster the keys live on different shards.
    await Promise.all(sessions.map(({ key, token }) => this.commands.set(key, token, 'PX', this.options.sessionTtlMs)));
  }

  /** Extends the TTL of this node's live session keys. */
  async refresh(keys: string[]): Promise<void> {
    await Promise.all(keys.map((key) => this.commands.pexpire(key, this.options.sessionTtlMs)));
  }

  /** Releases a session key at once, unless another node has taken it meanwhile. */
  async release(key: string, token: string): Promise<void> {
    await this.commands.mlesRelease(key, token);
  }

  private flush(): void {
    this.flushScheduled = false;
    for (const channel of [...this.batches.keys()]) this.flushChannel(channel);
  }

  /** Sends the channel's queued messages now, ahead of any command sent after this call. */
  flushChannel(channel: string): void {
    const batch = this.batches.get(channel);
    if (!batch) return;
    this.batches.delete(channel);
    this.append(channel, batch.items, BatchKind.live).then(() => batch.settle!(), (error: unknown) => batch.settle!(error));
  }

  private append(channel: string, items: OutgoingMessage[], kind: BatchKind): Promise<void> {
    const { seq, history, bytes } = this.keys(channel);
    const args: Arg[] = [seq, history, bytes, ...this.caps(), ...this.stream(channel, kind)];
    for (const { origin, message } of items) args.push(origin, encodeEntry(message, origin === JOIN_ORIGIN));
    return this.commands.mlesPublish(...args).then(
      (first) => this.events.onAppended(channel, items, kind, Number(first)),
      (error: unknown) => {
        this.options.log.debug({ err: error, channel }, 'cluster append failed');
        this.events.onAppendFailed(channel, items, kind);
        throw error;
      },
    );
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.flush();
    await this.transport.close();
  }
}

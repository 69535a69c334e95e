// What the Redis broker does with Redis, over either transport (one server, or a Redis Cluster):
// the scripts, and a channel's messages batched per event-loop turn into one script call
// (capped in count and bytes). It reports when Redis goes and comes back.

import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { ClusterTransport, ServerTransport, type Transport } from './transport.js';
import type { Guard } from '../../hub/broker.js';
import { MESSAGE_OVERHEAD, type Message } from '../../store/store.js';
import {
  parseStream, batchHeader, disconnectSignal, sequenceEntries, BatchKind, JOIN_ORIGIN, type Batch, type Disconnect, type SequencedMessage,
} from './envelope.js';
import {
  KeySpace, type ChannelKeys, encodeEntry, MAX_BATCH,
  PUBLISH_SCRIPT, JOIN_SCRIPT, FETCH_SCRIPT, RELEASE_SCRIPT, RESEED_SCRIPT,
  CLAIM_SCRIPT, REFRESH_SCRIPT, PRESENCE_SCRIPT, SIGNAL_SCRIPT,
} from './scripts.js';

/**
 * A failed append, join or fetch is retried this long apart while Redis is up, for this long in
 * all (by the clock: one attempt on a Redis Cluster may itself take ioredis's redirections).
 */
const APPEND_RETRY_MS = 200;
const APPEND_RETRY_FOR_MS = 5_000;

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
  /**
   * What this node's messages on their way to Redis may cost in all (payload + MESSAGE_OVERHEAD
   * each, --max-buffered): while Redis takes them slower than members send, more are refused.
   */
  maxQueued: number;
  log: Logger;
}

export interface EngineEvents {
  /** A batch of sequenced messages arrived on a channel's stream. */
  onBatch(channel: string, batch: Batch): void;
  /** An operator disconnects a uid from a channel, on every node. */
  onDisconnect(channel: string, uid: string): void;
  /**
   * A batch of `count` messages was appended: `stored` (those whose guard held, all unless a
   * sender's claim was lost) took the seqs from `first` on.
   */
  onAppended(channel: string, stored: OutgoingMessage[], kind: BatchKind, first: number, count: number): void;
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
  /** The sender's claim while it was on its way (see Sender.guard). */
  guard?: Guard | undefined;
}

/** A session of the duplicate rule as Redis keeps it (see CLAIM_SCRIPT). */
export interface SessionEntry {
  readonly channel: string;
  readonly key: string;
  readonly token: string;
  /** Its presence entry, "<token> <uid>", for a person's session; '' for a link's. */
  readonly member: string;
}

export interface JoinResult {
  seq: number;
  history: Buffer[];
}

/** A channel's messages of this turn, and the one promise of their append. */
interface PendingBatch {
  items: OutgoingMessage[];
  /** Payload bytes. */
  bytes: number;
  stored: Promise<void> | undefined;
  settle: ((error?: unknown) => void) | undefined;
}

type Arg = string | Buffer | number;
interface ScriptCommands {
  mlesPublish(...args: Arg[]): Promise<[number, string]>;
  mlesJoinBuffer(...args: Arg[]): Promise<[number, Buffer[]] | null>;
  mlesFetchBuffer(...args: Arg[]): Promise<[number, Buffer[]]>;
  mlesRelease(...args: Arg[]): Promise<number>;
  mlesReseed(...args: Arg[]): Promise<number>;
  mlesClaim(...args: Arg[]): Promise<number>;
  mlesRefresh(...args: Arg[]): Promise<number>;
  mlesPresence(...args: Arg[]): Promise<string[]>;
  mlesSignal(...args: Arg[]): Promise<number>;
}

export class RedisEngine {
  /** Names this node in published batches, so it can recognise its own replays. */
  readonly nodeId = randomBytes(6).toString('hex');
  private readonly transport: Transport;
  private readonly keySpace: KeySpace;
  private readonly commands: Transport['commands'] & ScriptCommands;
  private up = false;
  private readonly batches = new Map<string, PendingBatch>();
  /** Channels with something on its way to Redis, with the batches and commands that wait behind it. */
  private readonly sending = new Map<string, Array<PendingBatch | (() => Promise<void>)>>();
  /** Told once no batch is on its way (for close). */
  private readonly drained: Array<() => void> = [];
  private flushScheduled = false;
  private closed = false;
  /** What the messages queued or on their way to Redis cost (see EngineOptions.maxQueued). */
  private queuedCost = 0;

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
    this.commands.defineCommand('mlesRelease', { numberOfKeys: 2, lua: RELEASE_SCRIPT });
    this.commands.defineCommand('mlesReseed', { numberOfKeys: 3, lua: RESEED_SCRIPT });
    this.commands.defineCommand('mlesClaim', { numberOfKeys: 2, lua: CLAIM_SCRIPT });
    this.commands.defineCommand('mlesRefresh', { lua: REFRESH_SCRIPT }); // the number of keys varies
    this.commands.defineCommand('mlesPresence', { numberOfKeys: 1, lua: PRESENCE_SCRIPT });
    this.commands.defineCommand('mlesSignal', { numberOfKeys: 1, lua: SIGNAL_SCRIPT });
  }

  private received(live: Buffer, payload: Buffer): void {
    let parsed: Batch | Disconnect;
    try {
      parsed = parseStream(payload);
    } catch (error) {
      this.options.log.error({ err: error }, 'unreadable cluster batch');
      return;
    }
    const channel = this.keySpace.channelOfLive(live.toString('latin1'));
    if (parsed.kind === 'd') this.events.onDisconnect(channel, parsed.uid);
    else this.events.onBatch(channel, parsed);
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
  async join(channel: string, frame: Message | undefined, guard: Guard | undefined): Promise<JoinResult | null> {
    // This node's earlier messages on the channel come first.
    return this.inOrder(channel, async () => {
      if (guard?.won === false) return null;
      // Once the claim is won its key may be released already (the member left): no check then.
      const check = guard?.won === true ? undefined : guard;
      const { seq, history, bytes } = this.keys(channel);
      const reply = await this.retried(() => this.commands.mlesJoinBuffer(
        seq, history, bytes, check?.key ?? seq, ...this.caps(), ...this.stream(channel, BatchKind.live),
        frame ? encodeEntry(frame, true) : '', check?.token ?? '',
      ));
      return reply === null ? null : { seq: Number(reply[0]), history: reply[1] };
    });
  }

  /** The channel's last seq and what history holds after `since` (see FETCH_SCRIPT). */
  async fetch(channel: string, since: number): Promise<{ last: number; missed: SequencedMessage[] }> {
    const [last, entries] = await this.inOrder(channel, () => {
      const { seq, history } = this.keys(channel);
      return this.retried(() => this.commands.mlesFetchBuffer(seq, history, since));
    });
    return { last: Number(last), missed: sequenceEntries(entries, Number(last)) };
  }

  /** True if a message of `size` bytes fits in what may wait for Redis now. */
  hasRoomFor(size: number): boolean {
    return this.queuedCost + size + MESSAGE_OVERHEAD <= this.options.maxQueued;
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
    this.queuedCost += item.message.data.length + MESSAGE_OVERHEAD;
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

  /** How many entries the channel's history holds. */
  async count(channel: string): Promise<number> {
    return this.commands.llen(this.keys(channel).history);
  }

  /** Drops the channel's history; its seq goes on, so no node takes it for a lost channel. */
  async clear(channel: string): Promise<void> {
    const { history, bytes } = this.keys(channel);
    await this.inOrder(channel, () => this.commands.del(history, bytes));
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
  async claimNew(session: SessionEntry): Promise<boolean> {
    // In the channel's order: a guarded join or message sent after it finds its answer.
    return (await this.inOrder(session.channel, () => this.claimCommand(session, '1'))) === 1;
  }

  /** (Re)claims session keys for this node, e.g. after an outage. */
  async claim(sessions: SessionEntry[]): Promise<void> {
    // One command each, not a pipeline: on a Redis Cluster the keys live on different shards.
    await Promise.all(sessions.map((session) => this.claimCommand(session, '0')));
  }

  private claimCommand(session: SessionEntry, nx: '0' | '1'): Promise<number> {
    const { presence } = this.keys(session.channel);
    return this.commands.mlesClaim(session.key, presence, session.token, this.options.sessionTtlMs, session.member, nx);
  }

  /** Extends the TTL of this node's live sessions (and their presence), one call per channel. */
  async refresh(sessions: SessionEntry[]): Promise<void> {
    const byChannel = new Map<string, SessionEntry[]>();
    for (const session of sessions) {
      const group = byChannel.get(session.channel);
      if (group) group.push(session);
      else byChannel.set(session.channel, [session]);
    }
    await Promise.all([...byChannel].map(([channel, group]) => this.commands.mlesRefresh(
      group.length + 1, this.keys(channel).presence, ...group.map((s) => s.key), this.options.sessionTtlMs, ...group.map((s) => s.member),
    )));
  }

  /** Releases a session key (and its presence) at once, unless another node has taken it meanwhile. */
  async release(session: SessionEntry): Promise<void> {
    await this.commands.mlesRelease(session.key, this.keys(session.channel).presence, session.token, session.member);
  }

  /** The presence entries ("<token> <uid>") of a channel's live sessions. */
  async presence(channel: string): Promise<string[]> {
    return this.commands.mlesPresence(this.keys(channel).presence);
  }

  /** Every channel with someone online, with its presence entries (SCAN: for the API, not the hot path). */
  async *presences(): AsyncGenerator<[string, string[]]> {
    for await (const keys of this.transport.scan(this.keySpace.presences)) {
      const channels = keys.map((key) => this.keySpace.channelOfPresence(key));
      const entries = await Promise.all(channels.map((channel) => this.presence(channel)));
      for (let i = 0; i < channels.length; i++) if (entries[i]!.length > 0) yield [channels[i]!, entries[i]!];
    }
  }

  /** Tells every node following the channel to disconnect `uid` from it. */
  async disconnect(channel: string, uid: string): Promise<void> {
    const { seq, live } = this.keys(channel);
    await this.commands.mlesSignal(seq, this.transport.publishCommand, live, disconnectSignal(this.nodeId, uid));
  }

  private flush(): void {
    this.flushScheduled = false;
    for (const channel of [...this.batches.keys()]) this.flushChannel(channel);
  }

  /**
   * Sends the channel's queued messages now, ahead of any command sent after this call; or, if
   * something of the channel is still on its way, right after it: one batch (or join, fetch,
   * clear) per channel in flight, so that a retried one (by ioredis or below) can never be
   * overtaken by a later one.
   */
  flushChannel(channel: string): void {
    const batch = this.batches.get(channel);
    if (!batch) return;
    this.batches.delete(channel);
    const behind = this.sending.get(channel);
    if (behind) return void behind.push(batch);
    this.sending.set(channel, [batch]);
    this.next(channel);
  }

  /**
   * Runs `command` after everything of the channel queued or on its way (at once if nothing is),
   * and what comes later after it: ioredis may reorder commands on a Redis Cluster (a redirect,
   * a connection still opening), so a channel has one command in flight at a time.
   */
  private inOrder<T>(channel: string, command: () => Promise<T>): Promise<T> {
    this.flushChannel(channel);
    return new Promise<T>((resolve, reject) => {
      const run = (): Promise<void> => command().then(resolve, reject);
      const behind = this.sending.get(channel);
      if (behind) return void behind.push(run);
      this.sending.set(channel, [run]);
      this.next(channel);
    });
  }

  /** Sends what waits first for the channel: a command, or as many batches as fit in one call. */
  private next(channel: string): void {
    const behind = this.sending.get(channel)!;
    const first = behind[0];
    if (first === undefined) {
      this.sending.delete(channel);
      if (this.sending.size === 0) for (const resolve of this.drained.splice(0)) resolve();
      return;
    }
    if (typeof first === 'function') {
      behind.shift();
      void first().finally(() => this.next(channel));
      return;
    }
    let take = 0;
    let count = 0;
    let bytes = 0;
    for (let entry = behind[0]; typeof entry === 'object'; entry = behind[take]) {
      if (take > 0 && (count + entry.items.length > MAX_BATCH || bytes + entry.bytes > MAX_BATCH_BYTES)) break;
      count += entry.items.length;
      bytes += entry.bytes;
      take++;
    }
    const batches = behind.splice(0, take) as PendingBatch[];
    const items = batches.length === 1 ? batches[0]!.items : batches.flatMap((b) => b.items);
    this.append(channel, items, BatchKind.live).then(
      () => batches.forEach((b) => b.settle!()),
      (error: unknown) => batches.forEach((b) => b.settle!(error)),
    ).finally(() => {
      this.queuedCost -= bytes + count * MESSAGE_OVERHEAD;
      this.next(channel);
    });
  }

  private append(channel: string, items: OutgoingMessage[], kind: BatchKind): Promise<void> {
    const { seq, history, bytes } = this.keys(channel);
    const args: Arg[] = [seq, history, bytes, ...this.caps(), ...this.stream(channel, kind)];
    // A guard is read now: once its claim is answered, the key may be gone (released) already.
    const sent: OutgoingMessage[] = [];
    for (const item of items) {
      const guard = item.guard?.won === undefined ? item.guard : undefined;
      if (item.guard?.won === false) continue;
      sent.push(item);
      args.push(item.origin, guard?.key ?? '', guard?.token ?? '', encodeEntry(item.message, item.origin === JOIN_ORIGIN));
    }
    return this.tryAppend(channel, sent, kind, args, items.length);
  }

  /**
   * Runs a batch's script. While Redis is up, a failure is retried (a shard failing over, a slot
   * half-way to another shard answers TRYAGAIN; the channel's later batches wait behind it);
   * only after that, or when Redis is down, the append has failed.
   */
  private tryAppend(channel: string, items: OutgoingMessage[], kind: BatchKind, args: Arg[], count: number): Promise<void> {
    const script = items.length === 0 ? Promise.resolve<[number, string]>([0, '']) : this.retried(() => this.commands.mlesPublish(...args));
    return script.then(
      ([first, kept]) => this.events.onAppended(channel, items.filter((_, i) => kept[i] === '1'), kind, Number(first), count),
      (error: unknown) => {
        this.options.log.debug({ err: error, channel }, 'cluster append failed');
        this.events.onAppendFailed(channel, items, kind);
        throw error;
      },
    );
  }

  /**
   * Runs `command`, again while Redis is up and it fails (a shard failing over, a slot half-way
   * to another shard answers TRYAGAIN, a shard's connection still opening); the channel's later
   * commands wait behind it. A command whose reply alone was lost may so run twice.
   */
  private async retried<T>(command: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + APPEND_RETRY_FOR_MS;
    for (;;) {
      try {
        return await command();
      } catch (error) {
        if (!this.up || this.closed || Date.now() >= deadline) throw error;
        await new Promise((resolve) => setTimeout(resolve, APPEND_RETRY_MS));
      }
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.flush();
    // Batches queued behind others go out as those return; then quit lets the last replies arrive.
    if (this.sending.size > 0) await new Promise<void>((resolve) => this.drained.push(resolve));
    await this.transport.close();
  }
}

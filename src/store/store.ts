// The history store interface the hub talks to. Implementations may be synchronous (memory)
// or asynchronous (SQLite with group commit, Redis); the hub handles both without reordering.

/** One message as it travels and is kept: its payload and the frame type it arrived in. */
export interface Message {
  readonly data: Buffer;
  readonly binary: boolean;
}

export type MaybePromise<T> = T | Promise<T>;

/**
 * What holding a message costs besides its payload: its share of the objects that keep it (the
 * Message, its Buffers, an array slot). Bounds that count messages by cost (a connection's
 * backlog, the SQLite read cache) add it per message, so tiny messages are not free.
 */
export const MESSAGE_OVERHEAD = 128;

/**
 * `message` with a payload that owns its memory. What a parser hands on (ws, mqtt-packet, a
 * Redis batch) is usually a view into the read that carried it, up to 64 KiB (or a 4 MiB batch):
 * kept in history, a view of 4 bytes would hold all of it, beyond what --history-bytes and
 * MESSAGE_OVERHEAD count. Copied into an exact-size buffer of its own (not the shared pool's
 * slab, which one long-lived message would keep alive too).
 */
export function ownedMessage(message: Message): Message {
  const { data } = message;
  if (data.byteLength === data.buffer.byteLength) return message;
  const own = Buffer.allocUnsafeSlow(data.length);
  data.copy(own);
  return { data: own, binary: message.binary };
}

/** How much history a store keeps per channel. */
export interface HistoryLimits {
  /** Messages kept (`--limit`). */
  readonly limit: number;
  /** Payload bytes kept (`--history-bytes`); 0: no byte cap. */
  readonly historyBytes: number;
}

/**
 * The one trimming rule of every store (the Redis broker's Lua in src/broker/redis/scripts.ts mirrors it):
 * a channel's oldest message goes while the channel holds more than `limit` messages, or more
 * than `historyBytes` payload bytes and more than one message. So the newest messages are kept,
 * and a single message larger than the byte cap is still kept, alone, as the newest: a newcomer
 * sees the channel's latest message even if it is a big one (it was within --max-message-size).
 */
export function overLimits(limits: HistoryLimits, count: number, bytes: number): boolean {
  return count > limits.limit || (limits.historyBytes > 0 && count > 1 && bytes > limits.historyBytes);
}

export interface HistoryStore {
  /**
   * Appends `message` to `channel`'s history, trimmed by overLimits, and marks the channel
   * active at `now`. Settles once the message is stored as durably as the store can; a failure
   * concerns this channel's appends only. A store applies appends and reads of one channel in
   * the order they are called.
   */
  append(channel: string, message: Message, now: number): MaybePromise<void>;
  /**
   * The channel's history, oldest first, including every append called before this read. The
   * Message objects may be shared with other readers and the store: never modify them.
   */
  read(channel: string): MaybePromise<Message[]>;
  /** How many messages `read` would return now, without reading them. */
  count(channel: string): MaybePromise<number>;
  /** Drops the history of every channel idle since before `before` for which `keep` is false. */
  expire(before: number, keep: (channel: string) => boolean): MaybePromise<string[]>;
  /**
   * Drops `channel`'s whole history, including every append called before this (the HTTP API's
   * DELETE .../history). Optional: a store without it cannot be cleared.
   */
  clear?(channel: string): MaybePromise<void>;
  /** Flushes pending writes and releases resources. */
  close(): Promise<void>;
  /** Messages held across all channels (for metrics; optional). */
  countMessages?(): MaybePromise<number>;
}

/** A history as its readers see it: where appends go through a broker (Redis), not the store. */
export type HistoryView = Omit<HistoryStore, 'append'>;

// The history store interface the hub talks to. Implementations may be synchronous (memory)
// or asynchronous (SQLite with group commit, Redis); the hub handles both without reordering.

/** One message as it travels and is kept: its payload and the frame type it arrived in. */
export interface Message {
  readonly data: Buffer;
  readonly binary: boolean;
}

export type MaybePromise<T> = T | Promise<T>;

export interface HistoryStore {
  /**
   * Appends `message` to `channel`'s history, keeping the newest `limit` messages, and marks the
   * channel active at `now`. Settles once the message is stored as durably as the store can.
   * A store applies appends and reads of one channel in the order they are called.
   */
  append(channel: string, message: Message, now: number): MaybePromise<void>;
  /** The channel's history, oldest first, including every append called before this read. */
  read(channel: string): MaybePromise<Message[]>;
  /** Drops the history of every channel idle since before `before` for which `keep` is false. */
  expire(before: number, keep: (channel: string) => boolean): MaybePromise<string[]>;
  /** Flushes pending writes and releases resources. */
  close(): Promise<void>;
  /** Messages held across all channels (for metrics; optional). */
  countMessages?(): MaybePromise<number>;
}

// One channel's history in memory: its messages, oldest first, and their payload total. The
// memory store keeps one per channel; the SQLite store keeps recently read channels' in its cache.

import { overLimits, type HistoryLimits, type Message } from './store.js';

export class History {
  /** The messages are items[head..]; a dropped slot is cleared at once, so its payload is freed. */
  private items: Array<Message | undefined> = [];
  private head = 0;
  /** Sum of the messages' payload bytes. */
  bytes = 0;

  get size(): number {
    return this.items.length - this.head;
  }

  push(message: Message): void {
    this.items.push(message);
    this.bytes += message.data.length;
  }

  /** Drops the oldest messages while the history is over `limits` (see overLimits). */
  trim(limits: HistoryLimits): void {
    while (overLimits(limits, this.size, this.bytes)) this.dropOldest();
  }

  dropOldest(): void {
    this.bytes -= this.items[this.head]!.data.length;
    this.items[this.head++] = undefined;
    // Compact once half the array is spent: O(1) per message amortised, and no unbounded prefix.
    if (this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }

  /** A new array of the same Message objects: readers share payloads, not the array. */
  toArray(): Message[] {
    return this.items.slice(this.head) as Message[];
  }
}

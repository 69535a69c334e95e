// In-memory history: a History per channel, trimmed by count and bytes. Fast and simple;
// forgets everything on restart.

import { History } from './history.js';
import type { HistoryLimits, HistoryStore, Message } from './store.js';

interface Kept {
  readonly history: History;
  lastActive: number;
}

export class MemoryStore implements HistoryStore {
  private readonly channels = new Map<string, Kept>();
  private readonly limits: HistoryLimits;

  /** Keeps the newest `limit` messages per channel, and at most `historyBytes` payload bytes (0 or absent: no byte cap). */
  constructor(limit: number, options: { historyBytes?: number } = {}) {
    this.limits = { limit, historyBytes: options.historyBytes ?? 0 };
  }

  append(channel: string, message: Message, now: number): void {
    let kept = this.channels.get(channel);
    if (!kept) {
      kept = { history: new History(), lastActive: now };
      this.channels.set(channel, kept);
    }
    kept.history.push(message);
    kept.history.trim(this.limits);
    kept.lastActive = now;
  }

  read(channel: string): Message[] {
    return this.channels.get(channel)?.history.toArray() ?? [];
  }

  count(channel: string): number {
    return this.channels.get(channel)?.history.size ?? 0;
  }

  expire(before: number, keep: (channel: string) => boolean): string[] {
    const dropped: string[] = [];
    for (const [name, kept] of this.channels) {
      if (kept.lastActive < before && !keep(name)) {
        this.channels.delete(name);
        dropped.push(name);
      }
    }
    return dropped;
  }

  clear(channel: string): void {
    this.channels.delete(channel);
  }

  countMessages(): number {
    let count = 0;
    for (const kept of this.channels.values()) count += kept.history.size;
    return count;
  }

  async close(): Promise<void> {
    this.channels.clear();
  }
}

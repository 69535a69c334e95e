// In-memory history: a ring buffer per channel. Fast and simple; forgets everything on restart.

import type { HistoryStore, Message } from './store.js';

class Ring {
  private readonly items: Message[] = [];
  private start = 0; // index of the oldest item once the ring is full
  lastActive = 0;

  constructor(private readonly limit: number) {}

  push(message: Message): void {
    if (this.items.length < this.limit) {
      this.items.push(message);
    } else {
      this.items[this.start] = message;
      this.start = (this.start + 1) % this.limit;
    }
  }

  get size(): number {
    return this.items.length;
  }

  toArray(): Message[] {
    return this.start === 0
      ? this.items.slice()
      : this.items.slice(this.start).concat(this.items.slice(0, this.start));
  }
}

export class MemoryStore implements HistoryStore {
  private readonly channels = new Map<string, Ring>();

  constructor(private readonly limit: number) {}

  append(channel: string, message: Message, now: number): void {
    let ring = this.channels.get(channel);
    if (!ring) {
      ring = new Ring(this.limit);
      this.channels.set(channel, ring);
    }
    ring.push(message);
    ring.lastActive = now;
  }

  read(channel: string): Message[] {
    return this.channels.get(channel)?.toArray() ?? [];
  }

  expire(before: number, keep: (channel: string) => boolean): string[] {
    const dropped: string[] = [];
    for (const [name, ring] of this.channels) {
      if (ring.lastActive < before && !keep(name)) {
        this.channels.delete(name);
        dropped.push(name);
      }
    }
    return dropped;
  }

  countMessages(): number {
    let count = 0;
    for (const ring of this.channels.values()) count += ring.size;
    return count;
  }

  async close(): Promise<void> {
    this.channels.clear();
  }
}

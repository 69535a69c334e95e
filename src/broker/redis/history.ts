// History as the Redis broker keeps it, for readers: the HTTP API, peer links, metrics. Appends
// go through the broker's scripts; Redis expires idle channels itself (EXPIRE on every append).

import type { HistoryView, Message } from '../../store/store.js';
import type { RedisEngine } from './engine.js';
import { decodeEntry } from './scripts.js';

export class RedisHistory implements HistoryView {
  constructor(private readonly engine: RedisEngine) {}

  async read(channel: string): Promise<Message[]> {
    return (await this.engine.read(channel)).map(decodeEntry);
  }

  count(channel: string): Promise<number> {
    return this.engine.count(channel);
  }

  expire(): string[] {
    return [];
  }

  clear(channel: string): Promise<void> {
    return this.engine.clear(channel);
  }

  countMessages(): Promise<number> {
    return this.engine.countMessages();
  }

  async close(): Promise<void> {}
}

// Compressed bodies of static files, kept in an LRU bounded in bytes (--compression-cache MB).
// An entry belongs to one file version, so an edited file is recompressed, never served stale.
// Concurrent misses for the same body share one compression.

import { LRUCache } from 'lru-cache';
import { compress, type Encoding } from './encoding.js';

/** Files larger than this are sent uncompressed: compressing them per request costs too much. */
export const MAX_COMPRESSED_FILE = 12 * 1024 * 1024;
/** Below this, coding overhead eats the saving. */
export const MIN_COMPRESSED_FILE = 256;

interface Entry {
  version: string;
  body: Buffer;
}

export interface CompressionStats {
  hits: number;
  /** Bodies compressed (a miss joined to a running compression is not counted again). */
  compressions: number;
}

export class CompressionCache {
  readonly stats: CompressionStats = { hits: 0, compressions: 0 };
  private readonly lru: LRUCache<string, Entry> | undefined;
  private readonly running = new Map<string, Promise<Buffer>>();

  /** `maxBytes` 0 disables caching (bodies are then compressed for every request). */
  constructor(
    readonly maxBytes: number,
    readonly maxFileBytes: number = MAX_COMPRESSED_FILE,
  ) {
    this.lru = maxBytes > 0
      ? new LRUCache<string, Entry>({ maxSize: maxBytes, sizeCalculation: (entry) => Math.max(1, entry.body.length) })
      : undefined;
  }

  /** Bytes of compressed bodies held now. */
  get size(): number {
    return this.lru?.calculatedSize ?? 0;
  }

  /** True if a file of `size` bytes is served compressed at all. */
  accepts(size: number): boolean {
    return size >= MIN_COMPRESSED_FILE && size <= this.maxFileBytes;
  }

  /**
   * The `encoding` body of version `version` of `file`, from the cache or compressed from
   * `read()` (called only on a miss).
   */
  async get(file: string, version: string, encoding: Encoding, read: () => Promise<Buffer>): Promise<Buffer> {
    const key = `${encoding}:${file}`;
    const cached = this.lru?.get(key);
    if (cached?.version === version) {
      this.stats.hits++;
      return cached.body;
    }
    const job = `${version}:${key}`;
    let pending = this.running.get(job);
    if (!pending) {
      this.stats.compressions++;
      pending = read().then((plain) => compress(encoding, plain));
      this.running.set(job, pending);
      pending.then(
        (body) => {
          this.running.delete(job);
          // A stale entry of this key is simply replaced: one version per file and encoding.
          this.lru?.set(key, { version, body });
        },
        () => this.running.delete(job),
      );
    }
    return pending;
  }
}

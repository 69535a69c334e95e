// A FIFO set of payload hashes, as the reference proxy keeps to break forwarding loops
// (spec section 8): remembers the last `capacity` hashes, forgetting the oldest first.

import { siphash24Key } from './siphash.js';

export const DEDUP_CAPACITY = 40_000;

export class DedupSet {
  private readonly seen = new Set<number>();
  private readonly order: number[] = []; // grows to capacity, then is overwritten in a ring
  private next = 0;

  constructor(private readonly capacity = DEDUP_CAPACITY) {}

  /** True if `payload` was seen before; otherwise remembers it and returns false. */
  check(payload: Uint8Array): boolean {
    return !this.add(siphash24Key(payload));
  }

  has(payload: Uint8Array): boolean {
    return this.seen.has(siphash24Key(payload));
  }

  /** Remembers a hash; false if it was already there. */
  add(hash: number): boolean {
    if (this.seen.has(hash)) return false;
    if (this.order.length < this.capacity) {
      this.order.push(hash);
    } else {
      this.seen.delete(this.order[this.next]!);
      this.order[this.next] = hash;
      this.next = (this.next + 1) % this.capacity;
    }
    this.seen.add(hash);
    return true;
  }

  get size(): number {
    return this.seen.size;
  }
}

// The cluster-wide duplicate rule's bookkeeping on one node: the (uid, channel, auth) triplets
// joined here, and their Redis keys, which this node keeps alive by refreshing their TTL. A key
// is released at once when its session closes; a dead node's keys expire within the TTL.

import type { RedisEngine } from './redis-engine.js';

export interface Claim {
  readonly key: string;
  /** Identifies the owning session, so a release never deletes another node's key. */
  readonly token: string;
  /** True once Redis holds the key for this session. */
  inRedis: boolean;
}

export class ClusterSessions {
  private readonly claims = new Map<string, Claim>();
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly engine: RedisEngine, ttlMs: number) {
    // Three refreshes per TTL: one lost to a slow turn or a blip still keeps the key alive.
    this.timer = setInterval(() => this.refresh(), Math.max(1, Math.floor(ttlMs / 3)));
    this.timer.unref();
  }

  get size(): number {
    return this.claims.size;
  }

  /** The claim for `triplet`, or undefined if it is already joined on this node. */
  add(triplet: string, key: string, token: string): Claim | undefined {
    if (this.claims.has(triplet)) return undefined;
    const claim: Claim = { key, token, inRedis: false };
    this.claims.set(triplet, claim);
    return claim;
  }

  /** Forgets a session; its Redis key is deleted now if Redis is reachable, else it expires. */
  drop(triplet: string, claim: Claim): void {
    if (this.claims.get(triplet) === claim) this.claims.delete(triplet);
    if (claim.inRedis && this.engine.isUp) this.engine.release(claim.key, claim.token).catch(() => {});
  }

  /** After an outage: writes every session joined here back to Redis. */
  async reclaim(): Promise<void> {
    const claims = [...this.claims.values()];
    await this.engine.claim(claims);
    for (const claim of claims) claim.inRedis = true;
  }

  private refresh(): void {
    if (!this.engine.isUp) return;
    const keys: string[] = [];
    for (const claim of this.claims.values()) if (claim.inRedis) keys.push(claim.key);
    this.engine.refresh(keys).catch(() => {});
  }

  close(): void {
    clearInterval(this.timer);
  }
}

// The cluster-wide duplicate rule: a (uid, channel, auth) joined anywhere holds a Redis key with
// a TTL, valued with its owner's token. This node keeps its keys alive by refreshing their TTL,
// deletes one at once when its session closes; a dead node's keys expire within the TTL. While
// Redis is away, sessions are this node's alone and written back when it returns.

import type { PendingClaim, SessionRegistry } from '../../hub/broker.js';
import type { RedisEngine } from './engine.js';

interface Claim {
  readonly key: string;
  /** Identifies the owning session, so a release never deletes another node's key. */
  readonly token: string;
  /** True once Redis holds the key for this session. */
  inRedis: boolean;
}

export class RedisSessions implements SessionRegistry {
  private readonly claims = new Map<string, Claim>();
  private readonly timer: NodeJS.Timeout;
  private lastToken = 0;

  constructor(private readonly engine: RedisEngine, ttlMs: number) {
    // Three refreshes per TTL: one lost to a slow turn or a blip still keeps the key alive.
    this.timer = setInterval(() => this.refresh(), Math.max(1, Math.floor(ttlMs / 3)));
    this.timer.unref();
  }

  get size(): number {
    return this.claims.size;
  }

  claim(triplet: string, channel: string): boolean | PendingClaim {
    if (this.claims.has(triplet)) return false;
    const claim: Claim = { key: this.engine.sessionKey(channel, triplet), token: `${this.engine.nodeId}:${++this.lastToken}`, inRedis: false };
    this.claims.set(triplet, claim);
    if (!this.engine.isUp) return true; // written back by reclaim() when Redis returns
    // Sent now, ahead of the join on the same connection: the join script finds the answer.
    const guard = { key: claim.key, token: claim.token, won: undefined as boolean | undefined };
    const won = this.engine.claimNew(channel, claim.key, claim.token).then(
      (free) => {
        guard.won = free;
        if (free) claim.inRedis = true;
        else if (this.claims.get(triplet) === claim) this.claims.delete(triplet);
        return free;
      },
      () => (guard.won = true), // Redis went away meanwhile: this node's alone, like any join in an outage
    );
    return { won, guard };
  }

  release(triplet: string): void {
    const claim = this.claims.get(triplet);
    if (!claim) return;
    this.claims.delete(triplet);
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

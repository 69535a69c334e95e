// The cluster-wide duplicate rule and presence: a (uid, channel, auth) joined anywhere holds a
// Redis key with a TTL, valued with its owner's token, and a person's session is listed in its
// channel's presence set with the same TTL. This node keeps its keys alive by refreshing them,
// deletes them at once when a session closes; a dead node's keys and entries expire within the
// TTL. While Redis is away, sessions are this node's alone and written back when it returns.

import type { PendingClaim, Presence, SessionRegistry } from '../../hub/broker.js';
import type { RedisEngine, SessionEntry } from './engine.js';

interface Claim extends SessionEntry {
  /** True once Redis holds the key for this session. */
  inRedis: boolean;
}

/** A presence entry's uid: what follows its token (tokens hold no space). */
function uidOf(entry: string): string {
  return entry.slice(entry.indexOf(' ') + 1);
}

export class RedisSessions implements SessionRegistry {
  private readonly claims = new Map<string, Claim>();
  private readonly timer: NodeJS.Timeout;
  private lastToken = 0;
  readonly presence: Presence;

  constructor(private readonly engine: RedisEngine, ttlMs: number) {
    // Three refreshes per TTL: one lost to a slow turn or a blip still keeps the key alive.
    this.timer = setInterval(() => this.refresh(), Math.max(1, Math.floor(ttlMs / 3)));
    this.timer.unref();
    const reachable = (): void => {
      if (!engine.isUp) throw new Error('redis unreachable: presence is not known');
    };
    this.presence = {
      members: async (channel) => {
        reachable();
        return (await engine.presence(channel)).map(uidOf);
      },
      channels: async () => {
        reachable();
        const online: Array<{ channel: string; members: number }> = [];
        for await (const [channel, entries] of engine.presences()) online.push({ channel, members: entries.length });
        return online;
      },
    };
  }

  get size(): number {
    return this.claims.size;
  }

  claim(triplet: string, channel: string, uid?: string): boolean | PendingClaim {
    if (this.claims.has(triplet)) return false;
    const token = `${this.engine.nodeId}:${++this.lastToken}`;
    const claim: Claim = {
      channel, key: this.engine.sessionKey(channel, triplet), token, member: uid === undefined ? '' : `${token} ${uid}`, inRedis: false,
    };
    this.claims.set(triplet, claim);
    if (!this.engine.isUp) return true; // written back by reclaim() when Redis returns
    // Sent now, ahead of the join on the same connection: the join script finds the answer.
    const guard = { key: claim.key, token: claim.token, won: undefined as boolean | undefined };
    const won = this.engine.claimNew(claim).then(
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
    if (claim.inRedis && this.engine.isUp) this.engine.release(claim).catch(() => {});
  }

  /** After an outage: writes every session joined here back to Redis. */
  async reclaim(): Promise<void> {
    const claims = [...this.claims.values()];
    await this.engine.claim(claims);
    for (const claim of claims) claim.inRedis = true;
  }

  private refresh(): void {
    if (!this.engine.isUp) return;
    const live: Claim[] = [];
    for (const claim of this.claims.values()) if (claim.inRedis) live.push(claim);
    this.engine.refresh(live).catch(() => {});
  }

  close(): void {
    clearInterval(this.timer);
  }
}

// --rate-limit N: each client IP may open at most N TCP connections per minute, counted across
// every listener that shares one limiter. Excess connections are dropped as soon as they are
// accepted, before any TLS handshake or HTTP parsing costs us anything.

import type { Server, Socket } from 'node:net';
import { LRUCache } from 'lru-cache';

const WINDOW_MS = 60_000;
/** Clients tracked at once; beyond this the least recently seen are forgotten (they start full again). */
const MAX_TRACKED = 100_000;

/** The address a client is counted under: IPv4-mapped IPv6 (::ffff:1.2.3.4) is its IPv4 address. */
export function clientKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return mapped ? mapped[1]! : address.toLowerCase();
}

interface Bucket {
  tokens: number;
  at: number;
}

/** A token bucket per client: N tokens, refilled at N per minute. */
export class ConnectionRateLimit {
  private readonly buckets: LRUCache<string, Bucket>;

  constructor(
    readonly perMinute: number,
    private readonly now: () => number = Date.now,
  ) {
    this.buckets = new LRUCache({ max: MAX_TRACKED });
  }

  /** Takes one token for `address`; false when its bucket is empty. */
  allow(address: string): boolean {
    const key = clientKey(address);
    const now = this.now();
    const bucket = this.buckets.get(key) ?? { tokens: this.perMinute, at: now };
    bucket.tokens = Math.min(this.perMinute, bucket.tokens + ((now - bucket.at) * this.perMinute) / WINDOW_MS);
    bucket.at = now;
    const allowed = bucket.tokens >= 1;
    if (allowed) bucket.tokens -= 1;
    this.buckets.set(key, bucket);
    return allowed;
  }
}

/**
 * Puts `limit` in front of `server`'s own connection handling (the TLS handshake for a TLS
 * server, the HTTP parser for a plain one): refused sockets are destroyed before those run.
 * Call it after the server is constructed and before it accepts connections.
 */
export function limitConnections(server: Server, limit: ConnectionRateLimit, onDrop: (address: string) => void): void {
  const handlers = server.listeners('connection') as Array<(socket: Socket) => void>;
  server.removeAllListeners('connection');
  server.on('connection', (socket: Socket) => {
    const address = socket.remoteAddress;
    if (address === undefined || !limit.allow(address)) {
      socket.destroy();
      onDrop(address ?? 'unknown');
      return;
    }
    for (const handler of handlers) handler.call(server, socket);
  });
}

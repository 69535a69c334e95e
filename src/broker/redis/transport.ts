// How a node reaches Redis: one server (two connections: commands in each sender's order, and a
// subscriber), or a sharded Redis Cluster (ioredis Cluster: commands go to each channel's shard,
// and live streams use sharded pub/sub, SPUBLISH/SSUBSCRIBE, which stays on that shard instead
// of being broadcast to every node of the cluster). The engine above is the same for both.

import { Cluster, Redis, type ClusterNode, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';

export interface TransportEvents {
  /** Commands and the stream work (at start, and again after an outage). */
  onUp(): void;
  /** Commands fail: the node is on its own until onUp. */
  onDown(): void;
  /** The stream may have missed something (a subscription was lost): wait for onStreamBack. */
  onStreamLost(): void;
  /** Subscriptions are (re-)established: follow the channels again and catch up. */
  onStreamBack(): void;
  /** A batch arrived on the live stream `live`. */
  onPayload(live: Buffer, payload: Buffer): void;
}

export interface Transport {
  /** Where scripts and commands go; for a cluster, each command to its key's shard. */
  readonly commands: Redis | Cluster;
  /** The pub/sub command the scripts publish with. */
  readonly publishCommand: 'PUBLISH' | 'SPUBLISH';
  /** The database number (pub/sub ignores databases: it keeps clusters on one Redis apart). */
  readonly db: number;
  /** On a Redis Cluster (database 0 only), the seed URL's database number, as a key namespace. */
  readonly namespace: number;
  connect(): Promise<void>;
  subscribe(lives: string[]): Promise<void>;
  unsubscribe(live: string): Promise<void>;
  /** Keys matching `pattern` on every server that holds data, a batch at a time. */
  scan(pattern: string): AsyncGenerator<string[]>;
  close(): Promise<void>;
}

const connectionOptions: RedisOptions = {
  // Fail fast while Redis is away: the hub then serves locally instead of queueing blindly.
  enableOfflineQueue: false,
  autoResendUnfulfilledCommands: false,
  autoResubscribe: false,
  maxRetriesPerRequest: 0,
  retryStrategy: (attempt) => Math.min(attempt * 100, 1000),
  lazyConnect: true,
};

async function* scanNode(node: Redis, pattern: string): AsyncGenerator<string[]> {
  let cursor = '0';
  do {
    const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) yield keys;
  } while (cursor !== '0');
}

async function quit(connection: Redis | Cluster): Promise<void> {
  // quit() lets pending replies (the last appends, releases) arrive first.
  await connection.quit().then(() => {}, () => connection.disconnect());
}

/** One Redis server. */
export class ServerTransport implements Transport {
  readonly commands: Redis;
  readonly publishCommand = 'PUBLISH';
  readonly namespace = 0;
  private readonly subscriber: Redis;
  private readonly ready = { commands: false, subscriber: false };
  private up = false;
  private streamLost = false;
  private closed = false;

  constructor(url: string, name: string, private readonly events: TransportEvents, private readonly log: Logger) {
    this.commands = new Redis(url, { ...connectionOptions, connectionName: name });
    this.subscriber = new Redis(url, { ...connectionOptions, connectionName: `${name}-sub` });
    this.watch(this.commands, 'commands');
    this.watch(this.subscriber, 'subscriber');
    this.subscriber.on('messageBuffer', (live: Buffer, payload: Buffer) => this.events.onPayload(live, payload));
  }

  get db(): number {
    return this.commands.options.db ?? 0;
  }

  async connect(): Promise<void> {
    await Promise.all([this.commands.connect(), this.subscriber.connect()]);
  }

  private watch(connection: Redis, name: keyof ServerTransport['ready']): void {
    connection.on('ready', () => {
      this.ready[name] = true;
      if (!this.up) {
        if (!this.ready.commands || !this.ready.subscriber) return;
        this.up = true;
        this.streamLost = false;
        this.events.onUp();
      } else if (name === 'subscriber' && this.streamLost) {
        this.streamLost = false;
        this.events.onStreamBack();
      }
    });
    connection.on('close', () => {
      this.ready[name] = false;
      if (this.closed || !this.up) return;
      if (name === 'commands') {
        this.up = false;
        this.events.onDown();
      } else if (!this.streamLost) {
        // Commands still go through: messages keep their one order; the stream is caught up later.
        this.streamLost = true;
        this.events.onStreamLost();
      }
    });
    // Connection errors repeat on every retry; onDown already said what matters.
    connection.on('error', (error: Error) => this.log.debug({ err: error, connection: name }, 'redis error'));
  }

  async subscribe(lives: string[]): Promise<void> {
    if (lives.length > 0) await this.subscriber.subscribe(...lives);
  }

  async unsubscribe(live: string): Promise<void> {
    await this.subscriber.unsubscribe(live);
  }

  scan(pattern: string): AsyncGenerator<string[]> {
    return scanNode(this.commands, pattern);
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([quit(this.commands), quit(this.subscriber)]);
  }
}

/** A URL's host and port as a cluster seed. */
function seedOf(url: string): ClusterNode {
  const { hostname, port } = new URL(url);
  return { host: hostname.replace(/^\[|\]$/g, ''), port: Number(port || 6379) };
}

/** How long after ioredis's `subscribersReady` the channels catch up (one catch-up per burst). */
const STREAM_BACK_COALESCE_MS = 100;

/**
 * A sharded Redis Cluster. ioredis follows MOVED and ASK, re-subscribes a shard channel on its
 * slot's new owner after a move or failover and then says `subscribersReady`; messages published
 * meanwhile (a script redirected by ASK publishes where nobody listens) are caught up from
 * history, so every such event counts as "the stream may have missed something". Channels stay
 * followed meanwhile (a lost message shows as a gap in the seqs, and is fetched then too).
 */
export class ClusterTransport implements Transport {
  readonly commands: Cluster;
  readonly publishCommand = 'SPUBLISH';
  readonly db = 0;
  readonly namespace: number;
  private up = false;
  private closed = false;
  private streamBack: NodeJS.Timeout | undefined;

  constructor(urls: string[], name: string, private readonly events: TransportEvents, private readonly log: Logger) {
    const first = new URL(urls[0]!);
    this.namespace = Number(first.pathname.slice(1) || 0);
    const redisOptions: RedisOptions = {
      ...connectionOptions,
      connectionName: name,
      ...(first.username ? { username: decodeURIComponent(first.username) } : {}),
      ...(first.password ? { password: decodeURIComponent(first.password) } : {}),
      ...(first.protocol === 'rediss:' ? { tls: {} } : {}),
    };
    this.commands = new Cluster(urls.map(seedOf), {
      shardedSubscribers: true,
      enableOfflineQueue: false,
      lazyConnect: true,
      // A safety net: ioredis refreshes the slot map on MOVED, but not periodically by default.
      slotsRefreshInterval: 2_000,
      clusterRetryStrategy: (attempt) => Math.min(attempt * 100, 1000),
      redisOptions,
    });
    this.commands.on('ready', () => {
      if (this.up) return;
      this.up = true;
      this.events.onUp();
    });
    this.commands.on('close', () => {
      if (this.closed || !this.up) return;
      this.up = false;
      this.events.onDown();
    });
    // ioredis subscribes its shard channels again itself after each such reset; while a shard is
    // away it resets every few hundred milliseconds, so the catch-up is coalesced.
    this.commands.on('subscribersReady', () => {
      if (!this.up || this.closed || this.streamBack) return;
      this.streamBack = setTimeout(() => {
        this.streamBack = undefined;
        if (this.up && !this.closed) this.events.onStreamBack();
      }, STREAM_BACK_COALESCE_MS);
    });
    this.commands.on('smessageBuffer', (live: Buffer, payload: Buffer) => this.events.onPayload(live, payload));
    // Errors repeat while a shard is away (every ~25 ms); the effects are reported where they matter.
    this.commands.on('error', (error: Error) => this.log.debug({ err: error }, 'redis cluster error'));
  }

  async connect(): Promise<void> {
    await this.commands.connect();
  }

  async subscribe(lives: string[]): Promise<void> {
    // SSUBSCRIBE takes the channels of one slot per call.
    await Promise.all(lives.map((live) => this.commands.ssubscribe(live)));
  }

  async unsubscribe(live: string): Promise<void> {
    await this.commands.sunsubscribe(live);
  }

  async *scan(pattern: string): AsyncGenerator<string[]> {
    // No masters known (the cluster is away): that is not "no keys".
    const masters = this.commands.status === 'ready' ? this.commands.nodes('master') : [];
    if (masters.length === 0) throw new Error('the Redis Cluster is not reachable');
    for (const node of masters) yield* scanNode(node, pattern);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.streamBack);
    await quit(this.commands);
  }
}

// Wires the pieces into one running server. This is also the library entry:
//   const server = await createServer({ port: 0 }); ... await server.close();

import path from 'node:path';
import { resolveConfig, ConfigError, type Config } from './config.js';
import { createLogger, type Logger } from './logger.js';
import { Hub, DAY_MS } from './hub/hub.js';
import { MemoryStore } from './store/memory.js';
import type { HistoryStore } from './store/store.js';
import type { RedisBroker } from './broker/redis/broker.js';
import { MlesEndpoint } from './net/mles-endpoint.js';
import { keptMessage } from './net/frame.js';
import { startListener } from './net/listener.js';
import { HttpRouter } from './net/http/router.js';
import type { AdminServer } from './net/admin.js';
import type { MetricSources } from './net/metrics.js';
import { PeerLinks, defaultPeerTuning, defaultPeerUid } from './link/peers.js';
import { CloseCode, type CloseReason } from './protocol/close-codes.js';

export { resolveConfig, ConfigError, type Config } from './config.js';
export { authHash } from './protocol/join.js';

export interface ServerOptions extends Partial<Config> {
  logger?: Logger;
  /** Clock for history expiry; tests inject one to move time. */
  now?: () => number;
}

export interface MlesServer {
  readonly config: Config;
  /** Where the server listens, e.g. { host: '127.0.0.1', port: 8080, url: 'ws://127.0.0.1:8080' } (wss://domain:port with TLS). */
  readonly address: { host: string; port: number; url: string };
  readonly hub: Hub;
  readonly endpoint: MlesEndpoint;
  /** The admin listener (/metrics, /healthz, /api) if --admin-port is set, e.g. 'http://127.0.0.1:9090'. */
  readonly adminUrl: string | undefined;
  /** Closes every client with 1001, flushes the store and stops listening. */
  close(): Promise<void>;
  /** As close, but clients get 1011: the last resort after an error nothing else caught (src/crash.ts). */
  crash(): Promise<void>;
}

/** What clients are told when the server stops on an internal error: come back later. */
const CRASHED: CloseReason = { code: CloseCode.internalError, reason: 'internal server error: restarting' };

// What a mode alone needs (SQLite, Redis, the admin port's metrics, ACME in src/net/tls) is
// imported when that mode is chosen, so that a plain local server does not hold it (issue 14).
async function openStore(config: Config): Promise<HistoryStore> {
  const caps = { historyBytes: config.historyBytes };
  if (config.history === 'memory') return new MemoryStore(config.limit, caps);
  const file = path.resolve(config.history.slice('sqlite:'.length));
  const { SqliteStore } = await import('./store/sqlite.js');
  try {
    return new SqliteStore(file, config.limit, caps);
  } catch (error) {
    throw new ConfigError('--history', (error as Error).message);
  }
}

/** Joins the cluster on Redis, or stops start-up naming the flag (never the password). */
async function startRedisBroker(config: Config, log: Logger): Promise<RedisBroker> {
  const { RedisBroker } = await import('./broker/redis/broker.js');
  const broker = new RedisBroker({
    redis: config.redis !== undefined ? { url: config.redis } : { cluster: config.redisCluster },
    limit: config.limit,
    historyBytes: config.historyBytes,
    maxQueued: config.maxBuffered,
    expirySeconds: Math.ceil((30 * DAY_MS) / 1000),
    log,
    ...(process.env.MLES_CLUSTER_TTL_MS ? { sessionTtlMs: Number(process.env.MLES_CLUSTER_TTL_MS) } : {}),
  });
  if (await broker.start()) return broker;
  await broker.close();
  const urls = config.redis !== undefined ? [config.redis] : config.redisCluster;
  const where = urls.map((url) => `${new URL(url).hostname}:${new URL(url).port || 6379}`).join(', ');
  throw new ConfigError(config.redis !== undefined ? '--redis' : '--redis-cluster', `cannot reach Redis at ${where}`);
}

async function startAdminIfAsked(config: Config, sources: MetricSources, healthy: () => boolean, log: Logger): Promise<AdminServer | undefined> {
  if (config.adminPort === undefined) return undefined;
  const [{ createApi }, { createMetrics }, { startAdmin }] = await Promise.all([
    import('./net/api.js'), import('./net/metrics.js'), import('./net/admin.js'),
  ]);
  const api = createApi({
    hub: sources.hub,
    apiKey: config.apiKey,
    maxMessageSize: config.maxMessageSize,
    log,
  });
  try {
    return await startAdmin({ host: config.adminHost, port: config.adminPort, registry: createMetrics(sources), healthy, log, api });
  } catch (error) {
    throw new ConfigError('--admin-port', `cannot listen: ${(error as Error).message}`);
  }
}

export async function createServer(options: ServerOptions = {}): Promise<MlesServer> {
  const { logger, now, ...partial } = options;
  const config = resolveConfig({
    key: process.env.MLES_KEY, peerKey: process.env.MLES_PEER_KEY, apiKey: process.env.MLES_API_KEY, ...partial,
  });
  const log = logger ?? createLogger();

  const onError = (err: unknown, context: string): void => log.error({ err, context }, 'history store failed');
  const hubSettings = {
    ...(now ? { now } : {}), onError, dedupCapacity: Math.max(config.limit, 4096), peerKey: config.peerKey, ownMessage: keptMessage,
  };
  const cluster = config.redis === undefined && config.redisCluster.length === 0 ? undefined : await startRedisBroker(config, log);
  // In cluster mode history lives in Redis, behind the broker.
  const store = cluster ? cluster.history : await openStore(config);
  const hub = cluster
    ? new Hub({ ...hubSettings, store, broker: cluster, sessions: cluster.sessions })
    : new Hub({ ...hubSettings, store: store as HistoryStore });
  const endpoint = new MlesEndpoint(hub, config, log);
  // Imported before the listener opens: no join may come before the bridge hears of users.
  const mqttBridge = config.mqtt === undefined ? undefined : await import('./link/mqtt-bridge.js');

  const router = new HttpRouter(config, log, {}, { hub, key: config.key, log });
  const listener = await startListener({ config, log, attach: (server) => router.attach(server, endpoint) }).catch(
    async (error: unknown) => {
      await store.close();
      await hub.close();
      throw error;
    },
  );

  const peers = config.peers.length === 0 ? undefined : new PeerLinks(hub, {
    ...defaultPeerTuning,
    retryMs: 1_000,
    peers: config.peers,
    uid: config.peerUid ?? defaultPeerUid(listener.port),
    key: config.key,
    peerKey: config.peerKey,
    maxBuffered: config.maxBuffered,
    maxMessageSize: config.maxMessageSize,
  }, log);
  const bridge = mqttBridge && new mqttBridge.MqttBridge(hub, {
    ...mqttBridge.defaultMqttTuning,
    url: config.mqtt!,
    prefix: config.mqttPrefix,
    clientId: mqttBridge.defaultMqttClientId(listener.port),
    // A cluster's nodes mark their publications alike: none takes in what another published.
    bridgeId: cluster && mqttBridge.clusterBridgeId(config.redis !== undefined ? [config.redis] : config.redisCluster),
    maxBuffered: config.maxBuffered,
    maxMessageSize: config.maxMessageSize,
  }, log);
  if (peers || bridge) {
    hub.onUsersChanged = (channel, users) => {
      peers?.usersChanged(channel, users);
      bridge?.usersChanged(channel, users);
    };
  }

  const expireIdle = (): void => {
    Promise.resolve(hub.expireIdle()).then(
      (dropped) => dropped.length > 0 && log.info({ channels: dropped.length }, 'expired idle channels'),
      (err: unknown) => log.error({ err }, 'history expiry failed'),
    );
  };
  // At start-up too: a server restarted more often than daily would otherwise never expire anything.
  expireIdle();
  const expiryTimer = setInterval(expireIdle, DAY_MS);
  expiryTimer.unref();

  let closing: Promise<void> | undefined;
  let admin: AdminServer | undefined;
  // Shutdown and crash take the same steps; only what the clients are told differs.
  const stop = (reason?: CloseReason): Promise<void> => {
    closing ??= (async () => {
      clearInterval(expiryTimer);
      peers?.close();
      const stopped = listener.close();
      await endpoint.shutdown(2_000, reason);
      await bridge?.close(); // before the store: what the broker still delivers is stored
      router.close();
      listener.closeAllConnections();
      await stopped;
      await admin?.close();
      await store.close();
      await hub.close();
    })();
    return closing;
  };
  try {
    admin = await startAdminIfAsked(config, { hub, endpoint, http: router, cluster: cluster?.health, mqtt: bridge?.stats }, () => closing === undefined, log);
  } catch (error) {
    // Release everything taken so far, the database lock included, so the caller may retry.
    await stop();
    throw error;
  }
  return {
    config,
    address: { host: listener.host, port: listener.port, url: listener.url },
    hub,
    endpoint,
    adminUrl: admin?.url,
    close: () => stop(),
    crash: () => stop(CRASHED),
  };
}

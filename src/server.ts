// Wires the pieces into one running server. This is also the library entry:
//   const server = await createServer({ port: 0 }); ... await server.close();

import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { resolveConfig, ConfigError, type Config } from './config.js';
import { createLogger, type Logger } from './logger.js';
import { Hub, DAY_MS } from './hub/hub.js';
import { MemoryStore } from './store/memory.js';
import type { HistoryStore } from './store/store.js';
import { MlesEndpoint } from './net/mles-endpoint.js';

export { resolveConfig, ConfigError, type Config } from './config.js';
export { authHash } from './protocol/join.js';

export interface ServerOptions extends Partial<Config> {
  logger?: Logger;
  /** Clock for history expiry; tests inject one to move time. */
  now?: () => number;
}

export interface MlesServer {
  readonly config: Config;
  /** Where the server listens, e.g. { host: '127.0.0.1', port: 8080, url: 'ws://127.0.0.1:8080' }. */
  readonly address: { host: string; port: number; url: string };
  readonly hub: Hub;
  readonly endpoint: MlesEndpoint;
  /** Closes every client with 1001, flushes the store and stops listening. */
  close(): Promise<void>;
}

/** Flags that parse but whose feature is not built yet: refuse to pretend. */
const NOT_YET: Array<{ flag: string; set: (c: Config) => boolean; fatal: boolean }> = [
  { flag: '--domains (TLS/ACME)', set: (c) => c.domains.length > 0, fatal: true },
  { flag: '--tls-cert/--tls-key', set: (c) => c.tlsCert !== undefined, fatal: true },
  { flag: '--redirect', set: (c) => c.redirect, fatal: true },
  { flag: '--rate-limit', set: (c) => c.rateLimit !== undefined, fatal: false },
  { flag: '--proxy', set: (c) => c.proxies.length > 0, fatal: true },
  { flag: '--wwwroot (static files)', set: (c) => c.wwwroot !== undefined, fatal: false },
  { flag: '--history sqlite', set: (c) => c.history !== 'memory', fatal: true },
  { flag: '--peer', set: (c) => c.peers.length > 0, fatal: true },
  { flag: '--redis', set: (c) => c.redis !== undefined, fatal: true },
  { flag: '--workers', set: (c) => c.workers > 1, fatal: true },
  { flag: '--admin-port', set: (c) => c.adminPort !== undefined, fatal: false },
];

function checkAvailable(config: Config, log: Logger): void {
  for (const feature of NOT_YET) {
    if (!feature.set(config)) continue;
    if (feature.fatal) throw new ConfigError(feature.flag, 'not available yet in this version');
    log.warn(`${feature.flag} is not available yet in this version and is ignored`);
  }
}

function openStore(config: Config): HistoryStore {
  return new MemoryStore(config.limit);
}

function formatUrl(host: string, port: number): string {
  return `ws://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

export async function createServer(options: ServerOptions = {}): Promise<MlesServer> {
  const { logger, now, ...partial } = options;
  const config = resolveConfig({ key: process.env.MLES_KEY, ...partial });
  const log = logger ?? createLogger();
  checkAvailable(config, log);

  const store = openStore(config);
  const hub = new Hub({
    store,
    ...(now ? { now } : {}),
    onError: (err, context) => log.error({ err, context }, 'history store failed'),
  });
  const endpoint = new MlesEndpoint(hub, config, log);

  const httpServer = http.createServer((_req, res) => {
    res.writeHead(404, { 'Content-Type': 'text/plain' }).end('Not found\n');
  });
  httpServer.keepAliveTimeout = 5_000;
  endpoint.attach(httpServer);
  httpServer.on('connection', (socket) => socket.setNoDelay(true));

  await new Promise<void>((resolve, reject) => {
    httpServer.once('error', reject);
    httpServer.listen({ host: config.host, port: config.port }, () => {
      httpServer.off('error', reject);
      resolve();
    });
  });
  const bound = httpServer.address() as AddressInfo;

  const expiryTimer = setInterval(() => {
    Promise.resolve(hub.expireIdle()).then(
      (dropped) => dropped.length > 0 && log.info({ channels: dropped.length }, 'expired idle channels'),
      (err: unknown) => log.error({ err }, 'history expiry failed'),
    );
  }, DAY_MS);
  expiryTimer.unref();

  let closing: Promise<void> | undefined;
  return {
    config,
    address: { host: config.host, port: bound.port, url: formatUrl(config.host, bound.port) },
    hub,
    endpoint,
    close() {
      closing ??= (async () => {
        clearInterval(expiryTimer);
        const stopped = new Promise<void>((resolve) => httpServer.close(() => resolve()));
        await endpoint.shutdown(2_000);
        httpServer.closeAllConnections();
        await stopped;
        await store.close();
      })();
      return closing;
    },
  };
}

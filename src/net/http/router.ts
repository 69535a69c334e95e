// The HTTP side of the public port: the server's own /.mles/presence, then proxy rules, then
// static files (spec section 5); methods other than GET and HEAD get 405. Upgrades under a
// proxied prefix are tunnelled to the upstream; every other upgrade goes to the Mles endpoint.
// A handler that throws costs its own request (500) or upgrade socket, never the process.

import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Config } from '../../config.js';
import { CompressionCache } from './compression-cache.js';
import { FileLimit } from './file-limit.js';
import { guardRequests, guardUpgrades } from './guard.js';
import { PRESENCE_PATH, presenceHandler, type PresenceOptions } from './presence.js';
import { ReverseProxy, type ProxyOptions } from './proxy.js';
import { DEFAULT_WWWROOT, StaticFiles, type StaticOptions } from './static-files.js';
import { sendText } from './respond.js';

export type HttpConfig = Pick<Config, 'domains' | 'wwwroot' | 'fileLimit' | 'compressionCacheMb' | 'proxies'>;

/** Internal time limits (not flags): the defaults suit production, tests shorten them. */
export type HttpTimings = Pick<StaticOptions, 'responseIdleMs' | 'slotWaitMs'> & ProxyOptions;

export interface UpgradeTarget {
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
}

export interface HttpStats {
  /** Responses sent, by status code. */
  responses: Map<number, number>;
}

export class HttpRouter {
  readonly stats: HttpStats = { responses: new Map() };
  readonly compressionCache: CompressionCache;
  readonly fileLimit: FileLimit;
  private readonly proxy: ReverseProxy;
  private readonly files: StaticFiles;
  private readonly presence: ReturnType<typeof presenceHandler> | undefined;

  /** Without `presence` (routing tests), /.mles/presence is an ordinary path. */
  constructor(
    config: HttpConfig,
    private readonly log: Logger,
    timings: HttpTimings = {},
    presence?: PresenceOptions,
  ) {
    this.presence = presence && presenceHandler(presence);
    this.proxy = new ReverseProxy(config.proxies, log, { upstreamTimeoutMs: timings.upstreamTimeoutMs });
    this.fileLimit = new FileLimit(config.fileLimit);
    this.compressionCache = new CompressionCache(config.compressionCacheMb * 1024 * 1024);
    this.files = new StaticFiles({
      wwwroot: config.wwwroot ?? DEFAULT_WWWROOT,
      domains: config.domains,
      fileLimit: this.fileLimit,
      cache: this.compressionCache,
      responseIdleMs: timings.responseIdleMs,
      slotWaitMs: timings.slotWaitMs,
    });
  }

  /** Serves `server`'s requests here, and its upgrades here or at `endpoint`. */
  attach(server: HttpServer | HttpsServer, endpoint: UpgradeTarget): void {
    server.on('request', guardRequests(this.log, (req, res) => this.handle(req, res)));
    server.on('upgrade', guardUpgrades(this.log, (req, socket, head) => {
      const match = this.proxy.match(req.url);
      if (match) this.proxy.tunnel(req, socket, head, match);
      else endpoint.upgrade(req, socket, head);
    }));
  }

  handle(req: IncomingMessage, res: ServerResponse): void {
    res.once('close', () => this.count(res.statusCode));
    // Ahead of the proxy rules: a proxy for `/` must not hide the demo's presence from it.
    if (this.presence && req.url?.split('?', 1)[0] === PRESENCE_PATH) {
      return this.presence(req, res, new URL(req.url, 'http://localhost'));
    }
    const match = this.proxy.match(req.url);
    if (match) return this.proxy.forward(req, res, match);
    if (req.method !== 'GET' && req.method !== 'HEAD') return sendText(res, 405, undefined, { Allow: 'GET, HEAD' });
    this.files.serve(req, res).catch((error: unknown) => {
      this.log.error({ err: error, url: req.url }, 'static file request failed');
      if (res.headersSent) res.destroy();
      else sendText(res, 500);
    });
  }

  /** Ends proxy tunnels and upstream connections. */
  close(): void {
    this.proxy.close();
  }

  private count(status: number): void {
    this.stats.responses.set(status, (this.stats.responses.get(status) ?? 0) + 1);
  }
}

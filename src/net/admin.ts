// The admin listener: GET /metrics (Prometheus text format), GET /healthz and the HTTP API
// (/api/*, src/net/api.ts), on its own port and on loopback unless --admin-host says otherwise,
// so none of them ever shows on the public port.

import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { Logger } from 'pino';
import { guardRequests, logServerErrors, REQUEST_TIMEOUTS } from './http/guard.js';
import { sendText } from './http/respond.js';
import type { ApiHandler } from './api.js';

export interface AdminOptions {
  host: string;
  port: number;
  registry: Registry;
  /** False while the server shuts down: /healthz then answers 503. */
  healthy: () => boolean;
  log: Logger;
  /** Answers /api and everything under it. */
  api: ApiHandler;
}

export interface AdminServer {
  /** e.g. http://127.0.0.1:9090 */
  readonly url: string;
  close(): Promise<void>;
}

export async function startAdmin({ host, port, registry, healthy, log, api }: AdminOptions): Promise<AdminServer> {
  const server = http.createServer(REQUEST_TIMEOUTS, guardRequests(log, (req, res) => {
    const url = req.url ?? '';
    const queryAt = url.indexOf('?');
    const path = queryAt < 0 ? url : url.slice(0, queryAt);
    // The API takes other methods than GET; the raw path keeps an encoded "/" in its segment.
    if (path === '/api' || path.startsWith('/api/')) return api(req, res, path, queryAt < 0 ? '' : url.slice(queryAt + 1));
    if (req.method !== 'GET' && req.method !== 'HEAD') return sendText(res, 405, undefined, { Allow: 'GET, HEAD' });
    if (path === '/healthz') return healthy() ? sendText(res, 200, 'ok') : sendText(res, 503, 'shutting down');
    if (path !== '/metrics') return sendText(res, 404);
    // Returned, so that a throw in the success path reaches the guard too.
    return registry.metrics().then(
      (text) => {
        res.writeHead(200, { 'Content-Type': registry.contentType, 'Content-Length': Buffer.byteLength(text) });
        res.end(text);
      },
      (error: unknown) => {
        log.error({ err: error }, 'collecting metrics failed');
        sendText(res, 500);
      },
    );
  }));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  logServerErrors(server, log, 'admin');
  const address = server.address() as AddressInfo;
  const url = `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`;
  log.info({ url }, 'admin listening');
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

// The admin listener: GET /metrics (Prometheus text format) and GET /healthz, on its own port
// and on loopback, so metrics never show on the public port.

import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { Logger } from 'pino';
import { guardRequests, logServerErrors, REQUEST_TIMEOUTS } from './http/guard.js';
import { sendText } from './http/respond.js';

export const ADMIN_HOST = '127.0.0.1';

export interface AdminOptions {
  port: number;
  registry: Registry;
  /** False while the server shuts down: /healthz then answers 503. */
  healthy: () => boolean;
  log: Logger;
}

export interface AdminServer {
  /** e.g. http://127.0.0.1:9090 */
  readonly url: string;
  close(): Promise<void>;
}

export async function startAdmin({ port, registry, healthy, log }: AdminOptions): Promise<AdminServer> {
  const server = http.createServer(REQUEST_TIMEOUTS, guardRequests(log, (req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return sendText(res, 405, undefined, { Allow: 'GET, HEAD' });
    const path = (req.url ?? '').split('?')[0];
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
    server.listen({ host: ADMIN_HOST, port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  logServerErrors(server, log, 'admin');
  const url = `http://${ADMIN_HOST}:${(server.address() as AddressInfo).port}`;
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

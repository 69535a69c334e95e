// Opens the server's ports: plain HTTP in local mode, HTTPS (with its certificate machinery)
// when TLS is asked for, plus the optional HTTP->HTTPS redirect port, all behind the optional
// per-IP connection rate limit. What happens to requests and upgrades is the caller's business.

import http from 'node:http';
import type https from 'node:https';
import type { AddressInfo, Server as NetServer, Socket } from 'node:net';
import { ConfigError, type Config } from '../config.js';
import type { Logger } from '../logger.js';
import { logServerErrors, REQUEST_TIMEOUTS } from './http/guard.js';
import { ConnectionRateLimit, limitConnections } from './rate-limit.js';
import { createRedirectServer } from './redirect.js';
import type { RetryPolicy } from './tls/acme.js';
import { createTlsServer, wantsTls, type TlsServer } from './tls/tls-server.js';

export interface ListenerOptions {
  config: Config;
  log: Logger;
  /** Wires the public server's requests and upgrades (called once, before it listens), errors contained. */
  attach: (server: http.Server | https.Server) => void;
  /** Backoff between failed certificate orders (tests shorten it). */
  acmeRetry?: RetryPolicy;
}

export interface Listener {
  readonly host: string;
  readonly port: number;
  /** ws://host:port in local mode; wss://domain:port (or wss://host:port without domains) with TLS. */
  readonly url: string;
  /** Stops accepting on every port and stops certificate work; resolves once every connection has ended. */
  close(): Promise<void>;
  /** Ends the connections still open, e.g. idle keep-alives, so `close` can finish. */
  closeAllConnections(): void;
}

export function formatUrl(scheme: 'ws' | 'wss' | 'http', host: string, port: number): string {
  return `${scheme}://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** An address on which a server bound to `host` can reach itself. */
function loopbackFor(host: string): string {
  if (host === '::') return '::1';
  if (host === '0.0.0.0') return '127.0.0.1';
  return host;
}

function listen(server: NetServer, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function closed(server: http.Server | NetServer): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

function checkFlags(config: Config): void {
  if (config.redirect && (config.domains.length === 0 || !wantsTls(config))) {
    throw new ConfigError('--redirect', 'needs --domains: it sends requests for them to their TLS port');
  }
}

export async function startListener(options: ListenerOptions): Promise<Listener> {
  const { config, log } = options;
  checkFlags(config);
  const limit = config.rateLimit === undefined ? undefined : new ConnectionRateLimit(config.rateLimit);
  const onDrop = (address: string): void => log.debug({ remote: address }, 'connection over --rate-limit dropped');

  const tls: TlsServer | undefined = wantsTls(config) ? await createTlsServer(config, log, options.acmeRetry) : undefined;
  const server = tls?.server ?? http.createServer(REQUEST_TIMEOUTS);
  server.keepAliveTimeout = 5_000;
  options.attach(server);
  server.on('connection', (socket) => socket.setNoDelay(true));
  // A TLS connection is an HTTP one only once its handshake is done, so closeAllConnections
  // would miss one that never finishes it and close() would wait for the handshake timeout.
  const tcpSockets = new Set<Socket>();
  if (tls) {
    // One listener for every socket: a `once` closure each would cost every connection ~250 bytes.
    const forget = function (this: Socket): void {
      tcpSockets.delete(this);
    };
    server.on('connection', (socket: Socket) => {
      tcpSockets.add(socket);
      socket.on('close', forget);
    });
  }
  if (limit) limitConnections(server, limit, onDrop);

  const port = await listen(server, config.host, config.port);
  logServerErrors(server, log, 'public');

  let redirect: http.Server | undefined;
  if (config.redirect) {
    redirect = createRedirectServer(config.domains, port, log);
    if (limit) limitConnections(redirect, limit, onDrop);
    try {
      const httpPort = await listen(redirect, config.host, config.httpPort);
      logServerErrors(redirect, log, 'redirect');
      log.info({ url: formatUrl('http', config.host, httpPort) }, 'redirecting HTTP to HTTPS');
    } catch (error) {
      await closed(server);
      throw new ConfigError('--http-port', `cannot listen: ${(error as Error).message}`);
    }
  }

  // Certificate work starts once every port is up (a challenge needs the TLS port answering).
  tls?.start({ host: loopbackFor(config.host), port });
  const url = tls ? formatUrl('wss', config.domains[0] ?? config.host, port) : formatUrl('ws', config.host, port);
  return {
    host: config.host,
    port,
    url,
    close() {
      tls?.stop();
      return Promise.all([closed(server), redirect && closed(redirect)]).then(() => {});
    },
    closeAllConnections() {
      server.closeAllConnections();
      for (const socket of tcpSockets) socket.destroy();
      redirect?.closeAllConnections();
    },
  };
}

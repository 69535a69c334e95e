// --redirect: a plain-HTTP listener that sends browsers to the TLS port. It answers only for the
// configured domains, so it is no open redirector for whatever Host a client makes up.

import http from 'node:http';
import type { Logger } from '../logger.js';
import { guardRequests, REQUEST_TIMEOUTS } from './http/guard.js';
import { sendText } from './http/respond.js';
import { hostName } from './http/static-files.js';

/** What a request target asks for: the host (normalised as static files match it) and the path with query. */
export interface Requested {
  host: string | undefined;
  path: string;
}

/**
 * Reads a request target: origin-form ("/a?b", even "//" or "///": a path of empty segments)
 * is taken as it is, with the Host header's host; absolute-form ("http://host/a?b") names its
 * own host, which wins over the Host header (RFC 9112 section 3.2.2). Anything else, or an
 * absolute URL that does not parse ("http://:99999/", "http://[/"), is undefined: a 400.
 */
export function requestedResource(target: string, hostHeader: string | undefined): Requested | undefined {
  if (target.startsWith('/')) return { host: hostName(hostHeader), path: target };
  if (!/^https?:\/\//i.test(target) || !URL.canParse(target)) return undefined;
  const url = new URL(target);
  return { host: hostName(url.host), path: `${url.pathname}${url.search}` };
}

/** Where `path` on `domain` goes: https://domain[:tlsPort]/path?query (no port when it is 443). */
export function redirectTarget(domain: string, tlsPort: number, path: string): string {
  return `https://${domain}${tlsPort === 443 ? '' : `:${tlsPort}`}${path}`;
}

export function createRedirectServer(domains: string[], tlsPort: number, log: Logger): http.Server {
  const known = new Set(domains.map((d) => d.toLowerCase()));
  const server = http.createServer(
    REQUEST_TIMEOUTS,
    guardRequests(log, (req, res) => {
      const requested = requestedResource(req.url ?? '', req.headers.host);
      if (requested === undefined) return sendText(res, 400);
      // Matched without the port ("example.org:80"), case and trailing dot, as static files are.
      if ((req.method === 'GET' || req.method === 'HEAD') && requested.host !== undefined && known.has(requested.host)) {
        res.writeHead(301, { Location: redirectTarget(requested.host, tlsPort, requested.path), 'Content-Length': 0 }).end();
        return;
      }
      sendText(res, 404, 'Not found');
    }),
  );
  server.keepAliveTimeout = 5_000;
  return server;
}

// --redirect: a plain-HTTP listener that sends browsers to the TLS port. It answers only for the
// configured domains, so it is no open redirector for whatever Host a client makes up.

import http from 'node:http';
import { hostName } from './http/static-files.js';

/** Where a request for `domain` goes: https://domain[:tlsPort]/path?query (no port when it is 443). */
export function redirectTarget(domain: string, tlsPort: number, requestUrl: string): string {
  // Parse against a base so absolute-form request targets ("GET http://x/y") keep only their path.
  const { pathname, search } = new URL(requestUrl, 'http://placeholder');
  return `https://${domain}${tlsPort === 443 ? '' : `:${tlsPort}`}${pathname}${search}`;
}

export function createRedirectServer(domains: string[], tlsPort: number): http.Server {
  const known = new Set(domains.map((d) => d.toLowerCase()));
  const server = http.createServer((req, res) => {
    // Matched without the port ("example.org:80"), case and trailing dot, as static files are.
    const host = hostName(req.headers.host);
    if ((req.method === 'GET' || req.method === 'HEAD') && host !== undefined && known.has(host)) {
      res.writeHead(301, { Location: redirectTarget(host, tlsPort, req.url ?? '/'), 'Content-Length': 0 }).end();
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain' }).end('Not found\n');
  });
  server.keepAliveTimeout = 5_000;
  return server;
}

// --proxy PREFIX=URL: requests under /PREFIX/... go to URL/... with the prefix stripped (spec
// section 5). Bodies stream both ways; WebSocket upgrades under a prefix are tunnelled to the
// upstream. The client request is not pipeline()d into the upstream one: a failing upstream
// would then destroy the client socket, and no 502 could be sent.

import http, { type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import type { ProxyRule } from '../../config.js';
import { sendText } from './respond.js';

/** Headers that describe one connection, not the message (RFC 9110 section 7.6.1). */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

interface Upstream {
  /** "/api/v1": matches itself and everything below it. */
  prefix: string;
  url: URL;
  /** The upstream URL's path without a trailing slash ('' for the root). */
  basePath: string;
  transport: typeof http | typeof https;
  agent: http.Agent;
}

export interface ProxyMatch {
  upstream: Upstream;
  /** Path and query to request upstream, or undefined if the path is refused (dot-segments). */
  path: string | undefined;
}

/** Names listed in a Connection header: hop-by-hop too. */
function connectionTokens(value: string | string[] | undefined): Set<string> {
  const text = Array.isArray(value) ? value.join(',') : (value ?? '');
  return new Set(text.split(',').map((token) => token.trim().toLowerCase()).filter(Boolean));
}

function isEndToEnd(name: string, listed: Set<string>): boolean {
  const lower = name.toLowerCase();
  return !HOP_BY_HOP.has(lower) && !listed.has(lower);
}

/** True if a path segment is "." or ".." in any spelling: it would climb out of the prefix upstream. */
function hasDotSegment(path: string): boolean {
  return path.split('/').some((segment) => {
    let decoded = segment;
    try {
      decoded = decodeURIComponent(segment);
    } catch {
      // Not decodable: forwarded as it is, the upstream decides.
    }
    return decoded === '.' || decoded === '..';
  });
}

function clientAddress(req: IncomingMessage): string {
  return (req.socket.remoteAddress ?? '').replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/, '');
}

/**
 * The headers sent upstream: end-to-end ones only, Host left to the upstream URL, and
 * X-Forwarded-* set by us (a client's own X-Forwarded-For is not trusted).
 */
function upstreamHeaders(req: IncomingMessage): OutgoingHttpHeaders {
  const listed = connectionTokens(req.headers.connection);
  const headers: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(req.headers as IncomingHttpHeaders)) {
    if (value === undefined || name === 'host' || name.startsWith('x-forwarded-')) continue;
    if (isEndToEnd(name, listed)) headers[name] = value;
  }
  headers['x-forwarded-for'] = clientAddress(req);
  headers['x-forwarded-proto'] = (req.socket as TLSSocket).encrypted ? 'https' : 'http';
  if (req.headers.host !== undefined) headers['x-forwarded-host'] = req.headers.host;
  return headers;
}

/** The upstream response's end-to-end headers as a flat [name, value, ...] list (keeps repeated Set-Cookie). */
function downstreamHeaders(res: IncomingMessage, drop: readonly string[] = []): string[] {
  const listed = connectionTokens(res.headers.connection);
  const headers: string[] = [];
  for (let i = 0; i < res.rawHeaders.length; i += 2) {
    const name = res.rawHeaders[i]!;
    if (isEndToEnd(name, listed) && !drop.includes(name.toLowerCase())) headers.push(name, res.rawHeaders[i + 1]!);
  }
  return headers;
}

function headBlock(statusLine: string, flat: string[]): string {
  let text = `${statusLine}\r\n`;
  for (let i = 0; i < flat.length; i += 2) text += `${flat[i]}: ${flat[i + 1]}\r\n`;
  return `${text}\r\n`;
}

export class ReverseProxy {
  private readonly upstreams: Upstream[];
  /** Open WebSocket tunnels (both sockets), destroyed on close. */
  private readonly tunnels = new Set<Duplex>();

  constructor(
    rules: readonly ProxyRule[],
    private readonly log: Logger,
  ) {
    this.upstreams = rules
      .map((rule) => {
        const url = new URL(rule.url);
        const transport = url.protocol === 'https:' ? https : http;
        return {
          prefix: `/${rule.prefix}`,
          url,
          basePath: url.pathname.replace(/\/+$/, ''),
          transport,
          agent: new transport.Agent({ keepAlive: true }),
        };
      })
      // Longest prefix first, so "api/v1" wins over "api".
      .sort((a, b) => b.prefix.length - a.prefix.length);
  }

  /** The rule for a raw request target, if one applies. */
  match(rawUrl: string | undefined): ProxyMatch | undefined {
    if (this.upstreams.length === 0 || !rawUrl?.startsWith('/')) return undefined;
    const queryAt = rawUrl.indexOf('?');
    const path = queryAt < 0 ? rawUrl : rawUrl.slice(0, queryAt);
    const query = queryAt < 0 ? '' : rawUrl.slice(queryAt);
    for (const upstream of this.upstreams) {
      if (path !== upstream.prefix && !path.startsWith(`${upstream.prefix}/`)) continue;
      const rest = path.slice(upstream.prefix.length) || '/';
      return { upstream, path: hasDotSegment(rest) ? undefined : `${upstream.basePath}${rest}${query}` };
    }
    return undefined;
  }

  /** Forwards an HTTP request and streams the answer back; 502 if the upstream cannot be reached. */
  forward(req: IncomingMessage, res: ServerResponse, { upstream, path }: ProxyMatch): void {
    if (path === undefined) return sendText(res, 400);
    const outgoing = upstream.transport.request(upstream.url, {
      method: req.method,
      path,
      headers: upstreamHeaders(req),
      agent: upstream.agent,
    });
    outgoing.on('response', (incoming) => {
      res.writeHead(incoming.statusCode ?? 502, incoming.statusMessage, downstreamHeaders(incoming));
      incoming.pipe(res);
      // The upstream dropped mid-body: cut the client off too rather than end cleanly.
      incoming.on('error', () => res.destroy());
    });
    outgoing.on('error', (error) => {
      if (res.headersSent) return void res.destroy();
      this.log.warn({ err: error, upstream: upstream.url.href }, 'proxy upstream unavailable');
      sendText(res, 502, 'Bad gateway: upstream unavailable');
    });
    res.on('close', () => {
      if (!res.writableFinished) outgoing.destroy();
    });
    req.pipe(outgoing);
  }

  /** Passes a WebSocket (or any) upgrade through to the upstream and splices the sockets. */
  tunnel(req: IncomingMessage, socket: Duplex, head: Buffer, { upstream, path }: ProxyMatch): void {
    socket.on('error', () => socket.destroy());
    if (path === undefined) return void socket.end(headBlock('HTTP/1.1 400 Bad Request', ['Connection', 'close', 'Content-Length', '0']));
    const headers = upstreamHeaders(req);
    headers.connection = 'Upgrade';
    headers.upgrade = req.headers.upgrade;
    const outgoing = upstream.transport.request(upstream.url, { method: req.method, path, headers, agent: upstream.agent });
    outgoing.on('upgrade', (incoming, upstreamSocket: Duplex, upstreamHead: Buffer) => {
      upstreamSocket.on('error', () => upstreamSocket.destroy());
      // The 101 answer keeps its Connection/Upgrade/Sec-WebSocket-* headers: they are the point here.
      socket.write(headBlock(`HTTP/1.1 101 ${incoming.statusMessage || 'Switching Protocols'}`, incoming.rawHeaders));
      if (upstreamHead.length > 0) socket.write(upstreamHead);
      if (head.length > 0) upstreamSocket.write(head);
      this.splice(socket, upstreamSocket);
    });
    outgoing.on('response', (incoming) => {
      // The upstream refused the upgrade: relay its answer, delimited by closing the connection.
      const headers = [...downstreamHeaders(incoming, ['content-length']), 'Connection', 'close'];
      socket.write(headBlock(`HTTP/1.1 ${incoming.statusCode} ${incoming.statusMessage ?? ''}`, headers));
      incoming.pipe(socket);
    });
    outgoing.on('error', (error) => {
      this.log.warn({ err: error, upstream: upstream.url.href }, 'proxy upstream unavailable');
      const body = 'Bad gateway: upstream unavailable\n';
      socket.end(
        headBlock('HTTP/1.1 502 Bad Gateway', ['Content-Type', 'text/plain', 'Content-Length', String(body.length), 'Connection', 'close']) + body,
      );
    });
    socket.on('close', () => outgoing.destroy());
    outgoing.end();
  }

  /** Ends every tunnel and idle upstream connection. */
  close(): void {
    for (const socket of this.tunnels) socket.destroy();
    for (const upstream of this.upstreams) upstream.agent.destroy();
  }

  private splice(a: Duplex, b: Duplex): void {
    for (const socket of [a, b]) {
      this.tunnels.add(socket);
      socket.once('close', () => {
        this.tunnels.delete(socket);
        a.destroy();
        b.destroy();
      });
    }
    a.pipe(b);
    b.pipe(a);
  }
}

// --proxy PREFIX=URL: requests under /PREFIX/... go to URL/... with the prefix stripped (spec
// section 5). Bodies stream both ways; WebSocket upgrades under a prefix are tunnelled to the
// upstream. The client request is not pipeline()d into the upstream one: a failing upstream
// would then destroy the client socket, and no 502 could be sent. What the upstream learns about
// the client comes from us only (a client's own forwarding headers are dropped), and an upstream
// that does not answer in time gets the client a 504 instead of a wait without end.

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

/**
 * Headers through which a proxy tells the upstream who the client is: a client's own would let
 * it pose as any address or scheme to an upstream that trusts them. We set X-Forwarded-* anew.
 */
const CLIENT_IDENTITY = new Set(['forwarded', 'x-real-ip', 'true-client-ip']);

/** Time an upstream has to start its answer (after the request reached it) before the client gets 504. */
export const UPSTREAM_TIMEOUT_MS = 30_000;

export interface ProxyOptions {
  /** Default UPSTREAM_TIMEOUT_MS (tests shorten it). */
  upstreamTimeoutMs?: number;
}

/** Why an upstream request was abandoned when it took too long. */
class UpstreamTimeout extends Error {
  constructor(ms: number) {
    super(`upstream did not answer within ${ms} ms`);
  }
}

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

/** True for the headers only we may set: Forwarded, X-Forwarded-*, X-Real-IP, True-Client-IP. */
function isClientIdentity(name: string): boolean {
  return name.startsWith('x-forwarded-') || CLIENT_IDENTITY.has(name);
}

/**
 * The headers sent upstream: end-to-end ones only, Host left to the upstream URL, none of the
 * client's identity headers, and X-Forwarded-For/-Proto/-Host set by us.
 */
function upstreamHeaders(req: IncomingMessage): OutgoingHttpHeaders {
  const listed = connectionTokens(req.headers.connection);
  const headers: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(req.headers as IncomingHttpHeaders)) {
    if (value === undefined || name === 'host' || isClientIdentity(name)) continue;
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

/** A complete short text answer on a raw (upgrade) socket. */
function rawAnswer(statusLine: string, text: string): string {
  const body = `${text}\n`;
  return headBlock(statusLine, ['Content-Type', 'text/plain', 'Content-Length', String(body.length), 'Connection', 'close']) + body;
}

/**
 * `listener` with anything it throws passed to `fail`. These listeners run on upstream events,
 * outside the router's guard: a bug in one exchange must end that exchange, not the process.
 */
function contained<A extends unknown[]>(listener: (...args: A) => void, fail: (error: unknown) => void): (...args: A) => void {
  return (...args) => {
    try {
      listener(...args);
    } catch (error) {
      fail(error);
    }
  };
}

export class ReverseProxy {
  private readonly upstreams: Upstream[];
  /** Open WebSocket tunnels (both sockets), destroyed on close. */
  private readonly tunnels = new Set<Duplex>();
  private readonly timeoutMs: number;

  constructor(
    rules: readonly ProxyRule[],
    private readonly log: Logger,
    options: ProxyOptions = {},
  ) {
    this.timeoutMs = options.upstreamTimeoutMs ?? UPSTREAM_TIMEOUT_MS;
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

  /**
   * Forwards an HTTP request and streams the answer back; 502 if the upstream cannot be
   * reached, 504 if it does not start answering in time.
   */
  forward(req: IncomingMessage, res: ServerResponse, { upstream, path }: ProxyMatch): void {
    if (path === undefined) return sendText(res, 400);
    const outgoing = upstream.transport.request(upstream.url, {
      method: req.method,
      path,
      headers: upstreamHeaders(req),
      agent: upstream.agent,
    });
    this.startDeadline(outgoing);
    const fail = (error: unknown): void => {
      this.log.error({ err: error, upstream: upstream.url.href }, 'proxying a request failed');
      outgoing.destroy();
      if (res.headersSent) res.destroy();
      else sendText(res, 502, 'Bad gateway: invalid upstream answer');
    };
    outgoing.on('response', contained((incoming: IncomingMessage) => {
      res.writeHead(incoming.statusCode ?? 502, incoming.statusMessage, downstreamHeaders(incoming));
      incoming.pipe(res);
      // The upstream dropped mid-body: cut the client off too rather than end cleanly.
      incoming.on('error', () => res.destroy());
    }, fail));
    outgoing.on('error', (error) => {
      if (res.writableEnded) return;
      if (res.headersSent) return void res.destroy();
      if (error instanceof UpstreamTimeout) {
        this.log.warn({ err: error, upstream: upstream.url.href }, 'proxy upstream timed out');
        return sendText(res, 504, 'Gateway timeout: upstream did not answer');
      }
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
    this.startDeadline(outgoing);
    const fail = (error: unknown): void => {
      this.log.error({ err: error, upstream: upstream.url.href }, 'proxying an upgrade failed');
      socket.destroy();
    };
    outgoing.on('upgrade', contained((incoming: IncomingMessage, upstreamSocket: Duplex, upstreamHead: Buffer) => {
      upstreamSocket.on('error', () => upstreamSocket.destroy());
      // Spliced first, so that whatever happens next, each socket ends with the other.
      this.splice(socket, upstreamSocket);
      // The 101 answer keeps its Connection/Upgrade/Sec-WebSocket-* headers: they are the point here.
      socket.write(headBlock(`HTTP/1.1 101 ${incoming.statusMessage || 'Switching Protocols'}`, incoming.rawHeaders));
      if (upstreamHead.length > 0) socket.write(upstreamHead);
      if (head.length > 0) upstreamSocket.write(head);
    }, fail));
    outgoing.on('response', contained((incoming: IncomingMessage) => {
      // The upstream refused the upgrade: relay its answer, delimited by closing the connection.
      const headers = [...downstreamHeaders(incoming, ['content-length']), 'Connection', 'close'];
      socket.write(headBlock(`HTTP/1.1 ${incoming.statusCode} ${incoming.statusMessage ?? ''}`, headers));
      incoming.pipe(socket);
    }, fail));
    outgoing.on('error', (error) => {
      if (error instanceof UpstreamTimeout) {
        this.log.warn({ err: error, upstream: upstream.url.href }, 'proxy upstream timed out');
        return void socket.end(rawAnswer('HTTP/1.1 504 Gateway Timeout', 'Gateway timeout: upstream did not answer'));
      }
      this.log.warn({ err: error, upstream: upstream.url.href }, 'proxy upstream unavailable');
      socket.end(rawAnswer('HTTP/1.1 502 Bad Gateway', 'Bad gateway: upstream unavailable'));
    });
    socket.on('close', () => outgoing.destroy());
    outgoing.end();
  }

  /** Ends every tunnel and idle upstream connection. */
  close(): void {
    for (const socket of this.tunnels) socket.destroy();
    for (const upstream of this.upstreams) upstream.agent.destroy();
  }

  /**
   * Abandons `outgoing` with an UpstreamTimeout unless the upstream starts its answer (a
   * response or an upgrade) in time. The clock restarts once the request has gone out whole, so
   * the upstream always has the full time after the last byte of a body.
   */
  private startDeadline(outgoing: http.ClientRequest): void {
    const timer = setTimeout(() => outgoing.destroy(new UpstreamTimeout(this.timeoutMs)), this.timeoutMs);
    outgoing.once('finish', () => timer.refresh());
    for (const answered of ['response', 'upgrade', 'close']) outgoing.once(answered, () => clearTimeout(timer));
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

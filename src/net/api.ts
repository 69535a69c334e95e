// The HTTP server API on the admin listener (/api/*): publish from a backend without holding a
// WebSocket, see who is online, read and clear a channel's history, disconnect a member.
// Every call needs `Authorization: Bearer <MLES_API_KEY>`; without a key configured the API is
// off. JSON in and out; errors are {"error": "..."}. See docs/api.md.

import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { Hub } from '../hub/hub.js';
import { isName } from '../protocol/join.js';
import type { MaybePromise, Message } from '../store/store.js';
import { sendJson } from './http/respond.js';

/** What a body may carry beyond its message: the JSON around it and base64's 4/3. */
const BODY_SLACK = 64 * 1024;
/** A request body that has not fully arrived by then is abandoned (a stalled client holds nothing). */
const BODY_TIMEOUT_MS = 10_000;
/** Canonical base64, so that what is stored is exactly what the caller meant. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

export interface ApiOptions {
  hub: Hub;
  /** MLES_API_KEY; undefined: the API is off and says how to turn it on. */
  apiKey: string | undefined;
  /** --max-message-size: the largest message a member could send, so the largest one published. */
  maxMessageSize: number;
  log: Logger;
}

/** An answer that ends a request early: its status and the text of its {"error"}. */
class ApiError extends Error {
  constructor(readonly status: number, message: string, readonly headers: OutgoingHttpHeaders = {}) {
    super(message);
  }
}


/** Hashing both sides gives equal lengths, so the comparison takes the same time for any token. */
function sameSecret(given: string, expected: string): boolean {
  const digest = (text: string): Buffer => createHash('sha256').update(text).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

function authorized(req: IncomingMessage, apiKey: string): boolean {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
  return match !== null && sameSecret(match[1]!, apiKey);
}

/** A path segment, percent-decoded, that must name a channel or uid as a join frame would. */
function name(segment: string, what: string): string {
  let decoded: string;
  try {
    decoded = decodeURIComponent(segment);
  } catch {
    throw new ApiError(400, `${what} is not valid percent-encoding`);
  }
  return checkName(decoded, what);
}

function checkName(value: unknown, what: string): string {
  if (typeof value !== 'string') throw new ApiError(400, `${what} must be a string`);
  if (value === '') throw new ApiError(400, `empty ${what}`);
  if (!isName(value)) throw new ApiError(400, `${what} must be ASCII`);
  return value;
}

/** The request body, at most `limit` bytes, within BODY_TIMEOUT_MS. */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const tooLarge = new ApiError(413, `request body over ${limit} bytes`, { Connection: 'close' });
  if (Number(req.headers['content-length'] ?? 0) > limit) return Promise.reject(tooLarge);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const stop = (error: ApiError): void => {
      clearTimeout(timer);
      req.removeAllListeners('data');
      reject(error);
    };
    const timer = setTimeout(
      () => stop(new ApiError(408, 'request body not received in time', { Connection: 'close' })),
      BODY_TIMEOUT_MS,
    );
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) return stop(tooLarge);
      chunks.push(chunk);
    });
    req.on('end', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks));
    });
    // The client went away mid-body: settle, so that neither the timer nor the request lingers.
    req.on('close', () => {
      if (!req.complete) stop(new ApiError(400, 'request body incomplete'));
    });
  });
}

/** A publish request's body as the message it asks for. */
function publishRequest(body: Buffer, maxMessageSize: number): { channel: string; message: Message } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    throw new ApiError(400, 'body is not JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ApiError(400, 'body must be a JSON object');
  }
  const fields = parsed as Record<string, unknown>;
  const channel = checkName(fields.channel, 'channel');
  if ((fields.text === undefined) === (fields.base64 === undefined)) {
    throw new ApiError(400, 'give exactly one of "text" and "base64"');
  }
  let message: Message;
  if (fields.text !== undefined) {
    if (typeof fields.text !== 'string') throw new ApiError(400, 'text must be a string');
    message = { data: Buffer.from(fields.text, 'utf8'), binary: false };
  } else {
    if (typeof fields.base64 !== 'string' || !BASE64.test(fields.base64)) {
      throw new ApiError(400, 'base64 must be a base64 string');
    }
    message = { data: Buffer.from(fields.base64, 'base64'), binary: true };
  }
  // Members could not send a bigger frame (they get 1009); the API keeps the same bound.
  if (message.data.length > maxMessageSize) {
    throw new ApiError(413, `message over --max-message-size (${maxMessageSize} bytes)`);
  }
  return { channel, message };
}

function messageJson(message: Message): { text: string } | { base64: string } {
  return message.binary ? { base64: message.data.toString('base64') } : { text: message.data.toString('utf8') };
}

/** ?limit=N: the newest N messages. */
function historyLimit(query: URLSearchParams): number | undefined {
  const limit = query.get('limit');
  if (limit === null) return undefined;
  if (!/^\d{1,9}$/.test(limit)) throw new ApiError(400, 'limit must be a whole number');
  return Number(limit);
}

function methodNotAllowed(allow: string): ApiError {
  return new ApiError(405, 'method not allowed', { Allow: allow });
}

/**
 * Answers a request whose path is /api or under it. `path` is the raw path (not yet
 * percent-decoded, so that an encoded "/" stays inside its segment); `query` its query string.
 */
export type ApiHandler = (req: IncomingMessage, res: ServerResponse, path: string, query: string) => Promise<void>;

export function createApi(options: ApiOptions): ApiHandler {
  const { hub, apiKey, maxMessageSize, log } = options;
  const bodyLimit = maxMessageSize + Math.ceil(maxMessageSize / 3) + BODY_SLACK;

  /** A call to the store or the session registry: its failure (Redis away, a failing disk) is a 503. */
  const reach = async <T>(what: 'history' | 'presence', call: () => MaybePromise<T>): Promise<T> => {
    try {
      return await call();
    } catch (error) {
      log.warn({ err: error }, `API: ${what} unavailable`);
      throw new ApiError(503, `${what} unavailable: try again later`);
    }
  };

  const route = async (req: IncomingMessage, res: ServerResponse, path: string, query: string): Promise<void> => {
    if (apiKey === undefined) {
      throw new ApiError(404, 'the HTTP API is off: set MLES_API_KEY in the server\'s environment to turn it on');
    }
    if (!authorized(req, apiKey)) {
      throw new ApiError(401, 'missing or wrong API key: send "Authorization: Bearer <MLES_API_KEY>"', {
        'WWW-Authenticate': 'Bearer realm="mles"',
      });
    }
    const segments = path.split('/').slice(2); // after "", "api"
    const method = req.method;
    if (segments.length === 1 && segments[0] === 'publish') {
      if (method !== 'POST') throw methodNotAllowed('POST');
      const { channel, message } = publishRequest(await readBody(req, bodyLimit), maxMessageSize);
      try {
        await hub.publish(channel, message);
      } catch (error) {
        log.error({ err: error, channel }, 'API publish not stored');
        throw new ApiError(503, 'history unavailable: the message was not stored, and went to no one');
      }
      return sendJson(res, 200, { ok: true });
    }
    if (segments[0] !== 'channels') throw new ApiError(404, 'no such API path');
    if (segments.length === 1) {
      if (method !== 'GET') throw methodNotAllowed('GET');
      const channels = await reach('presence', async () => Promise.all((await hub.channelsOnline()).map(async ({ channel, members }) => (
        { channel, members, history: await hub.store.count(channel) }
      ))));
      return sendJson(res, 200, channels);
    }
    const channel = name(segments[1]!, 'channel');
    if (segments.length === 3 && segments[2] === 'members') {
      if (method !== 'GET') throw methodNotAllowed('GET');
      return sendJson(res, 200, (await reach('presence', () => hub.online(channel))).map((uid) => ({ uid })));
    }
    if (segments.length === 4 && segments[2] === 'members') {
      if (method !== 'DELETE') throw methodNotAllowed('DELETE');
      const uid = name(segments[3]!, 'uid');
      if ((await reach('presence', () => hub.disconnect(channel, uid))) === 0) throw new ApiError(404, `${uid} is not joined to ${channel}`);
      return sendJson(res, 200, { ok: true });
    }
    if (segments.length === 3 && segments[2] === 'history') {
      if (method === 'GET') {
        const limit = historyLimit(new URLSearchParams(query));
        const history = await reach('history', () => hub.store.read(channel));
        const newest = limit === undefined ? history : history.slice(Math.max(0, history.length - limit));
        return sendJson(res, 200, newest.map(messageJson));
      }
      if (method !== 'DELETE') throw methodNotAllowed('GET, DELETE');
      if (!hub.store.clear) throw new ApiError(501, 'this history store cannot be cleared');
      await reach('history', () => hub.store.clear!(channel));
      return sendJson(res, 200, { ok: true });
    }
    throw new ApiError(404, 'no such API path');
  };

  return async (req, res, path, query) => {
    try {
      await route(req, res, path, query);
    } catch (error) {
      if (res.headersSent) throw error; // the admin listener's guard cuts the connection
      if (error instanceof ApiError) return sendJson(res, error.status, { error: error.message }, error.headers);
      // A bug or a failing store: still JSON, as every API answer; the details go to the log only.
      log.error({ err: error, method: req.method, url: req.url }, 'API request failed');
      sendJson(res, 500, { error: 'internal server error' });
    }
  };
}

// Mles client kit for Node 20+ and browsers:
//
//   const client = connect('wss://example.io', { uid: 'alice', channel: 'lobby', key: 'secret' });
//   client.on('message', (m) => console.log(m.type === 'text' ? m.text : m.data));
//   client.send('hello');
//
// It joins (spec section 2), reconnects with capped, jittered exponential backoff, and drops
// the messages a reconnect's history replay delivers a second time (spec sections 3 and 8).

import { authHash } from '../src/protocol/join.js';
import { DedupSet, DEDUP_CAPACITY } from '../src/protocol/dedup.js';
import { CloseCode } from '../src/protocol/close-codes.js';
import { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from './backoff.js';
import { Emitter } from './emitter.js';
import { loadWebSocket, OPEN, type SocketConstructor, type SocketLike } from './socket.js';

export { authHash } from '../src/protocol/join.js';
export { backoffDelay, type BackoffOptions } from './backoff.js';
export type { SocketConstructor, SocketLike } from './socket.js';

export const SUBPROTOCOL = 'mles-websocket';

export interface ConnectOptions {
  uid: string;
  channel: string;
  /** The server's MLES_KEY: the auth hash is computed from it. */
  key?: string;
  /** A ready auth value (16 hex digits); wins over `key`. Without both, no auth is sent. */
  auth?: string;
  /** Reconnect delays, or false to stay closed after the first connection ends. */
  reconnect?: Partial<BackoffOptions> | false;
  /**
   * The protocol has no end-of-history marker, so history counts as done once the connection
   * has been this quiet since the join or the last message [default: 250].
   */
  historyIdleMs?: number;
  /** Payload hashes remembered to drop replayed messages after a reconnect [default: 40000]. */
  dedupCapacity?: number;
  /** A WebSocket implementation to use instead of the platform's (or the `ws` package). */
  WebSocket?: SocketConstructor;
}

export type MlesMessage =
  | { type: 'text'; text: string; history: boolean }
  | { type: 'binary'; data: Uint8Array; history: boolean };

export interface CloseInfo {
  code: number;
  reason: string;
  /** The server refused the join (bad auth, bad frame, uid already joined): no retry. */
  refused: boolean;
  willReconnect: boolean;
  /** Why the connection failed, when the implementation says (Node's `ws` does, browsers do not). */
  error?: string;
}

export interface ClientEvents {
  /** The socket opened and the join frame went out (history follows, if any). */
  open: { reconnect: boolean };
  /** The connection stayed quiet for `historyIdleMs`: what came before was history. */
  historyDone: { messages: number };
  message: MlesMessage;
  close: CloseInfo;
  reconnecting: { attempt: number; delayMs: number };
}

export type ClientState = 'connecting' | 'open' | 'waiting' | 'closed';

const DEFAULT_HISTORY_IDLE_MS = 250;

/** Close codes with which the server refuses a join; retrying would be refused again. */
const REFUSALS: ReadonlySet<number> = new Set([
  CloseCode.unsupportedData,
  CloseCode.invalidPayload,
  CloseCode.policyViolation,
]);

const encoder = new TextEncoder();

/** The first frame of a session: JSON with uid, channel and, when given, auth. */
export function joinFrame(uid: string, channel: string, auth?: string): string {
  return JSON.stringify(auth === undefined ? { uid, channel } : { uid, channel, auth });
}

export class MlesClient extends Emitter<ClientEvents> {
  readonly uid: string;
  readonly channel: string;
  /** Resolves when the client has closed for good (by `close()`, a refusal, or no reconnect). */
  readonly closed: Promise<CloseInfo>;
  private readonly join: string;
  private readonly backoff: BackoffOptions | false;
  private readonly historyIdleMs: number;
  private readonly seen: DedupSet;
  private readonly implementation: SocketConstructor | undefined;
  private readonly queue: Array<string | Uint8Array> = [];
  private socket: SocketLike | undefined;
  private current: ClientState = 'connecting';
  private opens = 0;
  /** A connection got through its history without being refused: the join is known good. */
  private established = false;
  private attempt = 0;
  private inHistory = false;
  private historyCount = 0;
  private historyTimer: ReturnType<typeof setTimeout> | undefined;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private finish!: (info: CloseInfo) => void;

  constructor(
    readonly url: string,
    options: ConnectOptions,
  ) {
    super();
    const protocol = new URL(url).protocol;
    if (protocol !== 'ws:' && protocol !== 'wss:') throw new TypeError(`not a WebSocket URL: ${url}`);
    this.uid = options.uid;
    this.channel = options.channel;
    const auth = options.auth ?? (options.key === undefined ? undefined : authHash(options.uid, options.channel, options.key));
    this.join = joinFrame(options.uid, options.channel, auth);
    this.backoff = options.reconnect === false ? false : { ...DEFAULT_BACKOFF, ...options.reconnect };
    this.historyIdleMs = options.historyIdleMs ?? DEFAULT_HISTORY_IDLE_MS;
    this.seen = new DedupSet(options.dedupCapacity ?? DEDUP_CAPACITY);
    // Our own join frame comes back in every later history; it is not news.
    this.seen.check(encoder.encode(this.join));
    this.implementation = options.WebSocket;
    this.closed = new Promise((resolve) => (this.finish = resolve));
    void this.open();
  }

  get state(): ClientState {
    return this.current;
  }

  /** Sends now when open, otherwise right after the next join. */
  send(data: string | Uint8Array | ArrayBuffer): void {
    if (this.current === 'closed') throw new Error('mles client is closed');
    const payload = data instanceof ArrayBuffer ? new Uint8Array(data) : data;
    // What we send comes back in the history of a later reconnect: mark it as seen.
    this.seen.check(typeof payload === 'string' ? encoder.encode(payload) : payload);
    if (this.current === 'open' && this.socket?.readyState === OPEN) this.socket.send(payload);
    else this.queue.push(payload);
  }

  /** Closes for good (browsers allow code 1000 or 3000-4999). */
  close(code: number = CloseCode.normal, reason = ''): Promise<CloseInfo> {
    if (this.current !== 'closed') {
      this.current = 'closed';
      clearTimeout(this.retryTimer);
      this.stopHistory();
      if (this.socket) this.socket.close(code, reason);
      else this.end({ code, reason, refused: false, willReconnect: false });
    }
    return this.closed;
  }

  private async open(): Promise<void> {
    let socket: SocketLike;
    try {
      const WebSocketImpl = this.implementation ?? (await loadWebSocket());
      if (this.current === 'closed') return;
      socket = new WebSocketImpl(this.url, SUBPROTOCOL);
    } catch (error) {
      this.onSocketClose(1006, '', error instanceof Error ? error.message : String(error));
      return;
    }
    socket.binaryType = 'arraybuffer';
    this.socket = socket;
    socket.onopen = () => this.onOpen(socket);
    socket.onmessage = (event) => this.onMessage(event.data);
    let error: string | undefined;
    socket.onclose = (event) => this.onSocketClose(event.code, event.reason, error);
    // An error is always followed by a close event, which reports it.
    socket.onerror = (event) => {
      const message = (event as { message?: unknown }).message;
      if (typeof message === 'string' && message !== '') error = message;
    };
  }

  private onOpen(socket: SocketLike): void {
    socket.send(this.join);
    // The server handles frames sent right after the join in order, once joined (spec 2).
    for (const payload of this.queue.splice(0)) socket.send(payload);
    this.current = 'open';
    this.opens++;
    this.inHistory = true;
    this.historyCount = 0;
    this.armHistoryTimer();
    this.emit('open', { reconnect: this.opens > 1 });
  }

  private onMessage(data: unknown): void {
    const message: MlesMessage =
      typeof data === 'string'
        ? { type: 'text', text: data, history: this.inHistory }
        : { type: 'binary', data: new Uint8Array(data as ArrayBuffer), history: this.inHistory };
    const seenBefore = this.seen.check(message.type === 'text' ? encoder.encode(message.text) : message.data);
    if (this.inHistory) {
      this.historyCount++;
      this.armHistoryTimer();
      // Only a reconnect's replay is dropped: on a first join, or live, a repeat is a new message.
      if (seenBefore && this.opens > 1) return;
    }
    this.emit('message', message);
  }

  private armHistoryTimer(): void {
    clearTimeout(this.historyTimer);
    this.historyTimer = setTimeout(() => {
      this.inHistory = false;
      this.established = true;
      this.attempt = 0;
      this.emit('historyDone', { messages: this.historyCount });
    }, this.historyIdleMs);
  }

  private stopHistory(): void {
    clearTimeout(this.historyTimer);
    this.inHistory = false;
  }

  private onSocketClose(code: number, reason: string, error?: string): void {
    this.socket = undefined;
    this.stopHistory();
    const failure = error === undefined ? {} : { error };
    if (this.current === 'closed') {
      this.end({ code, reason, refused: false, willReconnect: false, ...failure });
      return;
    }
    // A duplicate uid on a reconnect is most likely our own previous session, not yet dropped.
    const refused = REFUSALS.has(code) || (code === CloseCode.duplicateSession && !this.established);
    if (refused || this.backoff === false) {
      this.current = 'closed';
      this.end({ code, reason, refused, willReconnect: false, ...failure });
      return;
    }
    this.emit('close', { code, reason, refused, willReconnect: true, ...failure });
    if (this.closedByUser()) return; // a close listener called close()
    this.attempt++;
    const delayMs = backoffDelay(this.attempt, this.backoff);
    this.current = 'waiting';
    this.emit('reconnecting', { attempt: this.attempt, delayMs });
    this.retryTimer = setTimeout(() => {
      if (this.current !== 'waiting') return;
      this.current = 'connecting';
      void this.open();
    }, delayMs);
  }

  private closedByUser(): boolean {
    return this.current === 'closed';
  }

  private end(info: CloseInfo): void {
    this.emit('close', info);
    this.finish(info);
  }
}

/** Opens a client; it connects, joins and reconnects on its own until `close()`. */
export function connect(url: string, options: ConnectOptions): MlesClient {
  return new MlesClient(url, options);
}

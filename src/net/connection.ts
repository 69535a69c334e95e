// One client connection: waits for the join frame, then relays its frames into the hub and the
// hub's deliveries onto its socket, enforcing the join timeout, liveness, the message rate and
// the send-buffer bound that keeps one slow reader from costing the others anything.
//
// Outbound, a connection is in one of two modes. Direct: frames go straight to the (corked)
// socket, the fast path. Queued: once the socket is behind, or while the history replay of a
// join is running, messages wait in `backlog` as references to the shared Message objects, and
// each 'drain' of the socket writes the next window of them coalesced into a few writes. So a
// member that does not read holds a few socket writes (cheap to destroy), not one per frame, and
// a newcomer pulls a history of any size at its own pace instead of having it queued at once.

import type { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';
import type { Logger } from 'pino';
import { Close, CloseCode, type CloseCodeValue, type CloseReason } from '../protocol/close-codes.js';
import { parseJoin } from '../protocol/join.js';
import type { Hub, Session } from '../hub/hub.js';
import type { Member } from '../hub/member.js';
import { MESSAGE_OVERHEAD, type Message } from '../store/store.js';
import { frameOf, writeFrame } from './frame.js';
import { closeCodeOf, onCloseFrame, onPing, onPong, onProtocolError, receiverOf, socketOf, trimReceiver } from './ws-internals.js';

const OPEN = 1; // WebSocket.OPEN

/** Unsent bytes in the socket past which deliveries wait in the backlog instead. */
const QUEUE_AT = 256 * 1024;
/** Frames are coalesced into writes of about this size when the backlog is pumped. */
const WRITE_CHUNK = 64 * 1024;
/** Pongs answered while the socket is behind (the client reads nothing) before it is closed. */
const MAX_UNREAD_PONGS = 60;

export interface ConnectionLimits {
  joinTimeoutMs: number;
  /** Bound on what a member's backlog of live messages costs: past it the member is closed. */
  maxBuffered: number;
  /** Over a quarter of maxBuffered with no drain progress for this long: closed as stalled. */
  slowConsumerGraceMs: number;
  key: string | undefined;
  /** Messages per second (and burst) a member may publish; undefined: no limit. */
  messageRate: number | undefined;
}

/** Payload bytes received and queued for sending; plain numbers, read by metrics. */
export interface TrafficStats {
  bytesIn: number;
  bytesOut: number;
}

/** What the endpoint hears from its connections (one object for all of them). */
export interface ConnectionEvents {
  onClosedForSlowness(): void;
  onRefused(reason: CloseReason): void;
  onClosed(connection: Connection): void;
}

/** What all of an endpoint's connections share: one object, not a field each per connection. */
export interface ConnectionContext {
  readonly hub: Hub;
  readonly limits: ConnectionLimits;
  readonly log: Logger;
  readonly events: ConnectionEvents;
  readonly traffic: TrafficStats;
}

// The listeners are shared by all connections, which find theirs through the emitter:
// per-connection closures would cost memory on every idle client.
const owner = Symbol('connection');
type Owned = { [owner]: Connection };

function onMessage(this: WebSocket, data: Buffer, isBinary: boolean): void {
  (this as unknown as Owned)[owner].onFrame(data, isBinary);
}

function onPongFrame(this: EventEmitter): void {
  (this as unknown as Owned)[owner].missedPings = 0;
}

function onPingFrame(this: EventEmitter, data: Buffer): void {
  (this as unknown as Owned)[owner].onPing(data);
}

function onClose(this: WebSocket): void {
  (this as unknown as Owned)[owner].onClose();
}

function onError(this: WebSocket, error: Error): void {
  (this as unknown as Owned)[owner].logError(error);
}

function onClientCloseFrame(this: EventEmitter): void {
  (this as unknown as Owned)[owner].onCloseFrame();
}

function onBadFrame(this: EventEmitter, error: Error): void {
  (this as unknown as Owned)[owner].onProtocolError(error);
}

function onDrain(this: Socket): void {
  (this as unknown as Owned)[owner].pump();
}

function closeForJoinTimeout(connection: Connection): void {
  connection.close(Close.joinTimeout);
}

function releaseHeld(connection: Connection): void {
  connection.releaseHeld();
}

/** A close reason fits in a control frame: at most 123 bytes. */
function closeReasonText(text: string): string {
  const bytes = Buffer.from(text);
  return bytes.length <= 123 ? text : bytes.subarray(0, 120).toString().replace(/\uFFFD+$/, '') + '...';
}

/**
 * `chunk` as one buffer, for one write. Not Buffer.concat's: a small one comes from Buffer's
 * shared pool, where a long-lived slice (Node keeps one per TLS socket, its ALPN list) would keep
 * alive the whole slab that this short-lived write filled around it.
 */
function coalesce(chunk: Buffer[], bytes: number): Buffer {
  const out = Buffer.allocUnsafeSlow(bytes);
  let offset = 0;
  for (const part of chunk) offset += part.copy(out, offset);
  return out;
}

function frameBytes(message: Message): number {
  const frame = frameOf(message);
  return Array.isArray(frame) ? frame[0].length + frame[1].length : frame.length;
}

/** Token bucket: `rate` tokens a second, holding at most `rate`. */
class RateBucket {
  private tokens: number;
  private last = performance.now();

  constructor(private readonly rate: number) {
    this.tokens = rate;
  }

  take(): boolean {
    const now = performance.now();
    this.tokens = Math.min(this.rate, this.tokens + ((now - this.last) * this.rate) / 1000);
    this.last = now;
    if (this.tokens < 1) return false;
    this.tokens--;
    return true;
  }

  /** Milliseconds until the next token. */
  wait(): number {
    return Math.max(1, Math.ceil(((1 - this.tokens) * 1000) / this.rate));
  }
}

/**
 * Messages waiting for the socket, oldest first; replayed history comes before live messages.
 * What only queued mode needs lives here, not on every (mostly direct) connection.
 */
interface Backlog {
  items: Message[];
  head: number;
  /** items[0..replayEnd) are replayed history: paced, but not counted as falling behind. */
  replayEnd: number;
  /** What the backlog's live messages cost (frame bytes + MESSAGE_OVERHEAD each). */
  liveCost: number;
  lastProgressAt: number;
}

export class Connection implements Member {
  uid = '';
  peer = false;
  open = true;
  /** Pings sent since the client last sent anything (spec section 4). */
  missedPings = 0;
  private session: Session | undefined;
  private joinTimer: NodeJS.Timeout | undefined;
  /** The TCP (or TLS) socket under the WebSocket: fan-out writes pre-built frames to it. */
  private readonly socket: Socket;
  /** Set while the connection is in queued mode. */
  private backlog: Backlog | undefined;
  private unreadPongs = 0;
  private readonly bucket: RateBucket | undefined;
  /** Messages read over the rate, published as tokens come; the socket is paused meanwhile. */
  private held: Message[] | undefined;

  constructor(
    private readonly ws: WebSocket,
    private readonly context: ConnectionContext,
    /** The client's address, when the endpoint counts connections per address. */
    readonly remoteAddress: string | undefined,
  ) {
    this.socket = socketOf(ws);
    const { limits } = context;
    this.bucket = limits.messageRate === undefined ? undefined : new RateBucket(limits.messageRate);
    this.joinTimer = setTimeout(closeForJoinTimeout, limits.joinTimeoutMs, this);
    (ws as unknown as Owned)[owner] = this;
    (this.socket as unknown as Owned)[owner] = this;
    (receiverOf(ws) as unknown as Owned)[owner] = this;
    // Pings and pongs are heard on the receiver: the WebSocket keeps as few listeners as a bare
    // relay's, and each one more would cost every idle client a larger listener table.
    ws.on('message', onMessage);
    ws.on('close', onClose);
    ws.on('error', onError);
    onPing(ws, onPingFrame);
    onPong(ws, onPongFrame);
    this.socket.on('drain', onDrain);
    // A client that closes and at once rejoins (here or on another cluster node) must not be
    // refused as its own duplicate, so the session ends at its close frame.
    onCloseFrame(ws, onClientCloseFrame);
    onProtocolError(ws, onBadFrame);
  }

  /** The client's close frame arrived: leave the channel now. */
  onCloseFrame(): void {
    this.leave();
  }

  /** A frame broke the protocol: close with ws's code and a reason saying what was wrong. */
  onProtocolError(error: Error): void {
    const code = (closeCodeOf(error) ?? CloseCode.protocolError) as CloseCodeValue;
    this.context.log.info({ uid: this.uid, code, err: error.message }, 'protocol error');
    this.close({ code, reason: closeReasonText(error.message) });
  }

  logError(error: Error): void {
    this.context.log.debug({ err: error }, 'websocket error');
  }

  /** Drops the socket without a closing handshake (shutdown's last resort). */
  terminate(): void {
    this.ws.terminate();
  }

  /** Called by the liveness sweep: ping, or close after too many unanswered pings. */
  heartbeat(maxMissed: number): void {
    if (!this.open) return;
    if (this.missedPings >= maxMissed) {
      this.context.log.info({ uid: this.uid }, 'ping timeout');
      this.close(Close.pingTimeout);
      return;
    }
    // A member held back by --message-rate is not read, so its pongs wait unread: it is alive.
    if (this.held === undefined) this.missedPings++;
    this.ws.ping();
  }

  /** ws's automatic pong is off: a client that pings but never reads would queue pongs forever. */
  onPing(data: Buffer): void {
    this.missedPings = 0;
    if (this.ws.readyState !== OPEN) return;
    if (this.socket.writableLength <= this.socket.writableHighWaterMark) this.unreadPongs = 0;
    else if (++this.unreadPongs > MAX_UNREAD_PONGS) return this.close(Close.pingFlood);
    this.ws.pong(data);
  }

  deliver(message: Message): void {
    // After a close frame (ours or the client's) no data frame may follow.
    if (!this.open || this.ws.readyState !== OPEN) return;
    this.context.traffic.bytesOut += message.data.length;
    if (this.backlog !== undefined) return this.queueLive(message);
    writeFrame(this.socket, message);
    if (this.socket.writableLength > Math.min(QUEUE_AT, this.context.limits.maxBuffered / 4)) this.startQueueing(0);
  }

  /** The history a join replays: sent ahead of later deliveries, as fast as the client reads. */
  replay(history: readonly Message[]): void {
    if (history.length === 0 || !this.open || this.ws.readyState !== OPEN) return;
    const { traffic } = this.context;
    for (const message of history) traffic.bytesOut += message.data.length;
    const backlog = this.startQueueing(history.length);
    // The history array may be shared with other joiners (and the store): copy the references.
    backlog.items.push(...history);
    this.pump();
  }

  close(reason: CloseReason): void {
    if (!this.open) return;
    this.open = false;
    this.leave();
    this.leaveQueueing();
    this.ws.close(reason.code, reason.reason);
  }

  /** A data frame from the client (called by the shared `message` listener). */
  onFrame(data: Buffer, isBinary: boolean): void {
    this.context.traffic.bytesIn += data.length;
    this.missedPings = 0;
    if (!this.open) return;
    if (this.session) {
      if (this.bucket === undefined) return this.session.publish({ data, binary: isBinary });
      return this.publishAtRate({ data, binary: isBinary });
    }
    clearTimeout(this.joinTimer);
    this.joinTimer = undefined; // an idle member should not keep a spent timer alive
    trimReceiver(this.ws); // nor the room its join frame took in ws's receiver
    const parsed = parseJoin(data, isBinary, this.context.limits.key);
    if (!parsed.ok) return this.refuse(parsed.close);
    // Set before joining: with a synchronous store the hub makes this a member right away.
    this.uid = parsed.join.uid;
    this.peer = parsed.join.peer;
    const joined = this.context.hub.join(this, parsed.join);
    if (!('publish' in joined)) return this.refuse(joined);
    this.session = joined;
    this.context.log.debug({ uid: this.uid, channel: joined.channel }, 'joined');
  }

  /**
   * --message-rate: over the rate, stop reading the socket, so TCP pushes back on the sender.
   * What was already read (the rest of one socket chunk) is held and published as tokens come.
   */
  private publishAtRate(message: Message): void {
    if (this.held === undefined && this.bucket!.take()) return this.session!.publish(message);
    if (this.held === undefined) {
      this.held = [];
      this.ws.pause();
      setTimeout(releaseHeld, this.bucket!.wait(), this);
    }
    this.held.push(message);
  }

  /** Publishes the held messages that the bucket now allows; reads again once none are left. */
  releaseHeld(): void {
    const held = this.held;
    if (held === undefined) return;
    let released = 0;
    while (released < held.length && this.open && this.bucket!.take()) this.session?.publish(held[released++]!);
    held.splice(0, released);
    if (held.length > 0 && this.open) {
      setTimeout(releaseHeld, this.bucket!.wait(), this);
      return;
    }
    this.held = undefined;
    if (this.open) this.ws.resume();
  }

  /** Writes the next window of the backlog; called at once and on every 'drain' of the socket. */
  pump(): void {
    const backlog = this.backlog;
    if (backlog === undefined) return;
    const { items } = backlog;
    const window = Math.max(QUEUE_AT, this.socket.writableHighWaterMark * 2);
    const chunk: Buffer[] = [];
    let chunkBytes = 0;
    let wrote = false;
    while (backlog.head < items.length && this.socket.writableLength + chunkBytes < window) {
      const index = backlog.head++;
      const message = items[index]!;
      items[index] = undefined as unknown as Message; // let it go as soon as it is written
      if (index >= backlog.replayEnd) backlog.liveCost -= frameBytes(message) + MESSAGE_OVERHEAD;
      const frame = frameOf(message);
      if (Array.isArray(frame)) {
        this.writeChunk(chunk, chunkBytes);
        chunk.length = 0;
        chunkBytes = 0;
        this.socket.write(frame[0]);
        this.socket.write(frame[1]);
      } else {
        chunk.push(frame);
        chunkBytes += frame.length;
        if (chunkBytes >= WRITE_CHUNK) {
          this.writeChunk(chunk, chunkBytes);
          chunk.length = 0;
          chunkBytes = 0;
        }
      }
      wrote = true;
    }
    this.writeChunk(chunk, chunkBytes);
    if (wrote) backlog.lastProgressAt = performance.now();
    if (backlog.head === items.length) this.leaveQueueing();
  }

  private writeChunk(chunk: Buffer[], bytes: number): void {
    if (chunk.length === 1) this.socket.write(chunk[0]!);
    else if (chunk.length > 1) this.socket.write(coalesce(chunk, bytes));
  }

  private startQueueing(replayed: number): Backlog {
    this.backlog ??= { items: [], head: 0, replayEnd: replayed, liveCost: 0, lastProgressAt: performance.now() };
    return this.backlog;
  }

  private leaveQueueing(): void {
    this.backlog = undefined;
  }

  /**
   * A live message while the member is behind. A reader slower than a burst still drains; a
   * stalled one does not. Close only a member whose backlog costs more than the hard bound, or
   * one over a quarter of it that has made no progress for the grace period.
   */
  private queueLive(message: Message): void {
    const backlog = this.backlog!;
    backlog.items.push(message);
    backlog.liveCost += frameBytes(message) + MESSAGE_OVERHEAD;
    const { maxBuffered, slowConsumerGraceMs } = this.context.limits;
    if (backlog.liveCost <= maxBuffered / 4) return;
    if (backlog.liveCost > maxBuffered || performance.now() - backlog.lastProgressAt > slowConsumerGraceMs) {
      this.context.log.warn({ uid: this.uid, backlog: backlog.liveCost }, 'closing slow consumer');
      this.context.events.onClosedForSlowness();
      // The close frame follows what the socket already holds: a reader that catches up learns
      // why it was closed; one that never reads again is dropped by the WebSocket close timeout.
      this.close(Close.slowConsumer);
    }
  }

  private refuse(reason: CloseReason): void {
    this.context.log.info({ code: reason.code, reason: reason.reason }, 'join refused');
    this.context.events.onRefused(reason);
    this.close(reason);
  }

  /** The socket is gone (called by the shared `close` listener). */
  onClose(): void {
    this.open = false;
    clearTimeout(this.joinTimer);
    this.leave();
    this.leaveQueueing();
    this.held = undefined;
    this.context.events.onClosed(this);
  }

  private leave(): void {
    this.session?.leave();
    this.session = undefined;
  }
}

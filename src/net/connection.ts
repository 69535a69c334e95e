// One client connection: waits for the join frame, then relays its frames into the hub and the
// hub's deliveries onto its socket, enforcing the join timeout, liveness and the send-buffer
// bound that keeps one slow reader from costing the others anything.

import type { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';
import type { Logger } from 'pino';
import { Close, type CloseReason } from '../protocol/close-codes.js';
import { parseJoin } from '../protocol/join.js';
import type { Hub, Session } from '../hub/hub.js';
import type { Member } from '../hub/member.js';
import type { Message } from '../store/store.js';
import { writeFrame } from './frame.js';

const OPEN = 1; // WebSocket.OPEN

export interface ConnectionLimits {
  joinTimeoutMs: number;
  /** Hard bound on unsent bytes: past it the member is closed at once. */
  maxBuffered: number;
  /** Over a quarter of maxBuffered with no drain progress for this long: closed as stalled. */
  slowConsumerGraceMs: number;
  key: string | undefined;
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

// The WebSocket listeners are shared by all connections, which find theirs through the socket:
// per-connection closures would cost memory on every idle client.
const owner = Symbol('connection');
type Owned = WebSocket & { [owner]: Connection };

function onMessage(this: WebSocket, data: Buffer, isBinary: boolean): void {
  (this as Owned)[owner].onFrame(data, isBinary);
}

function onAlive(this: WebSocket): void {
  (this as Owned)[owner].missedPings = 0;
}

function onClose(this: WebSocket): void {
  (this as Owned)[owner].onClose();
}

function onError(this: WebSocket, error: Error): void {
  (this as Owned)[owner].logError(error);
}

function onCloseFrame(this: EventEmitter): void {
  (this as EventEmitter & { [owner]: Connection })[owner].onCloseFrame();
}

function closeForJoinTimeout(connection: Connection): void {
  connection.close(Close.joinTimeout);
}

export class Connection implements Member {
  uid = '';
  peer = false;
  open = true;
  /** Pings sent since the client last sent anything (spec section 4). */
  missedPings = 0;
  private session: Session | undefined;
  private joinTimer: NodeJS.Timeout | undefined;
  // Slow-consumer tracking: bytes queued by us, and the last sample taken while over the soft bound.
  private bytesQueued = 0;
  private sampleQueued = 0;
  private sampleBuffered = 0;
  private lastProgressAt = 0;
  /** The TCP (or TLS) socket under the WebSocket: fan-out writes pre-built frames to it. */
  private readonly socket: Socket;

  constructor(
    private readonly ws: WebSocket,
    private readonly hub: Hub,
    private readonly limits: ConnectionLimits,
    private readonly log: Logger,
    private readonly events: ConnectionEvents,
    private readonly traffic: TrafficStats,
  ) {
    this.socket = (ws as unknown as { _socket: Socket })._socket;
    this.joinTimer = setTimeout(closeForJoinTimeout, limits.joinTimeoutMs, this);
    (ws as Owned)[owner] = this;
    ws.on('message', onMessage);
    ws.on('pong', onAlive);
    ws.on('ping', onAlive);
    ws.on('close', onClose);
    ws.on('error', onError);
    // A session ends when the client's close frame arrives, not when the TCP teardown is over:
    // a client that closes and at once rejoins (here or on another cluster node) must not be
    // refused as its own duplicate. ws has no public event for that frame, so listen on its
    // receiver; ws's own listener runs first and has already queued the close reply.
    const receiver = (ws as unknown as { _receiver: EventEmitter & { [owner]: Connection } })._receiver;
    receiver[owner] = this;
    receiver.on('conclude', onCloseFrame);
  }

  /** The client's close frame arrived: leave the channel now. */
  onCloseFrame(): void {
    this.leave();
  }

  logError(error: Error): void {
    this.log.debug({ err: error }, 'websocket error');
  }

  /** Drops the socket without a closing handshake (shutdown's last resort). */
  terminate(): void {
    this.ws.terminate();
  }

  /** Called by the liveness sweep: ping, or close after too many unanswered pings. */
  heartbeat(maxMissed: number): void {
    if (!this.open) return;
    if (this.missedPings >= maxMissed) {
      this.log.info({ uid: this.uid }, 'ping timeout');
      this.close(Close.pingTimeout);
      return;
    }
    this.missedPings++;
    this.ws.ping();
  }

  deliver(message: Message): void {
    // After a close frame (ours or the client's) no data frame may follow.
    if (!this.open || this.ws.readyState !== OPEN) return;
    writeFrame(this.socket, message);
    this.bytesQueued += message.data.length;
    this.traffic.bytesOut += message.data.length;
    const buffered = this.socket.writableLength;
    if (buffered > this.limits.maxBuffered / 4) this.checkSlow(buffered);
    else this.lastProgressAt = 0;
  }

  close(reason: CloseReason): void {
    if (!this.open) return;
    this.open = false;
    this.leave();
    this.ws.close(reason.code, reason.reason);
  }

  /** A data frame from the client (called by the shared `message` listener). */
  onFrame(data: Buffer, isBinary: boolean): void {
    this.traffic.bytesIn += data.length;
    this.missedPings = 0;
    if (!this.open) return;
    if (this.session) {
      this.session.publish({ data, binary: isBinary });
      return;
    }
    clearTimeout(this.joinTimer);
    this.joinTimer = undefined; // an idle member should not keep a spent timer alive
    const parsed = parseJoin(data, isBinary, this.limits.key);
    if (!parsed.ok) return this.refuse(parsed.close);
    // Set before joining: with a synchronous store the hub makes this a member right away.
    this.uid = parsed.join.uid;
    this.peer = parsed.join.peer;
    const joined = this.hub.join(this, parsed.join);
    if (!('publish' in joined)) return this.refuse(joined);
    this.session = joined;
    this.log.debug({ uid: this.uid, channel: joined.channel }, 'joined');
  }

  private refuse(reason: CloseReason): void {
    this.log.info({ code: reason.code, reason: reason.reason }, 'join refused');
    this.events.onRefused(reason);
    this.close(reason);
  }

  /**
   * A reader slower than a burst still drains its buffer; a stalled one does not. Close only
   * a member past the hard bound, or one that has made no progress for the grace period.
   */
  private checkSlow(buffered: number): void {
    const now = performance.now();
    const drained = this.sampleBuffered + (this.bytesQueued - this.sampleQueued) - buffered;
    if (this.lastProgressAt === 0 || drained > 0) this.lastProgressAt = now;
    this.sampleBuffered = buffered;
    this.sampleQueued = this.bytesQueued;
    if (buffered > this.limits.maxBuffered || now - this.lastProgressAt > this.limits.slowConsumerGraceMs) {
      this.log.warn({ uid: this.uid, buffered }, 'closing slow consumer');
      this.events.onClosedForSlowness();
      // The close frame queues behind the unread backlog: a reader that catches up learns why it
      // was closed; one that never reads again is dropped by the WebSocket close timeout.
      this.close(Close.slowConsumer);
    }
  }

  /** The socket is gone (called by the shared `close` listener). */
  onClose(): void {
    this.open = false;
    clearTimeout(this.joinTimer);
    this.leave();
    this.events.onClosed(this);
  }

  private leave(): void {
    this.session?.leave();
    this.session = undefined;
  }
}

// A link to one channel on one peer server (spec section 8). On the peer it is an ordinary
// Mles client; here it is a member of the local channel, so local messages reach the peer and
// the peer's messages enter the local channel (deduplicated, stored, fanned out).
//
// Each time the link (re)opens, the peer replays its history. The link merges it (what this
// server lacks is added, what it holds is dropped by the hub), and once the replay has gone
// quiet it sends the peer every message of the local history the replay did not contain.

import WebSocket from 'ws';
import type { Logger } from 'pino';
import { DedupSet } from '../protocol/dedup.js';
import { isLinkJoinFrame, linkJoinFrame } from '../protocol/join.js';
import { peerProof } from '../protocol/peer-proof.js';
import { siphash24Key } from '../protocol/siphash.js';
import type { CloseReason } from '../protocol/close-codes.js';
import type { Hub, Session } from '../hub/hub.js';
import type { Member } from '../hub/member.js';
import type { Message } from '../store/store.js';

export interface LinkOptions {
  url: string;
  channel: string;
  uid: string;
  key: string | undefined;
  /** MLES_PEER_KEY: with it the join frame proves this is a link, and the peer does not store it. */
  peerKey: string | undefined;
  /** The peer's replay is taken as over after this long without a frame. */
  replayQuietMs: number;
  /** ...or after this long, if live traffic never lets it go quiet. */
  replayMaxMs: number;
  backoffMinMs: number;
  backoffMaxMs: number;
  /** Unsent bytes towards the peer before the link is dropped and resynchronised later. */
  maxBuffered: number;
  maxMessageSize: number;
}

export class PeerLink implements Member {
  readonly peer = true;
  readonly uid: string;
  open = true;
  private ws: WebSocket | undefined;
  private readonly session: Session;
  /** Payloads sent to or received from the peer in this connection (FIFO, as the reference). */
  private seen = new DedupSet();
  private replayTimer: NodeJS.Timeout | undefined;
  private replayDeadline = 0;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private backoffMs: number;

  constructor(
    private readonly hub: Hub,
    private readonly options: LinkOptions,
    private readonly log: Logger,
  ) {
    this.uid = options.uid;
    this.backoffMs = options.backoffMinMs;
    this.session = hub.attachLink(this, options.channel);
    this.connect();
  }

  deliver(message: Message): void {
    this.forward(message);
  }

  /** A link is attached, not joined, so the hub never replays to it; forwarding is the answer. */
  replay(history: readonly Message[]): void {
    for (const message of history) this.forward(message);
  }

  /** Leaves the local channel and the peer for good. */
  close(_reason?: CloseReason): void {
    if (!this.open) return;
    this.open = false;
    this.session.leave();
    clearTimeout(this.replayTimer);
    clearTimeout(this.reconnectTimer);
    this.ws?.close(1000, 'link closed');
  }

  private connect(): void {
    const { url, channel, uid, key, peerKey } = this.options;
    const ws = new WebSocket(url, 'mles-websocket', { maxPayload: this.options.maxMessageSize, perMessageDeflate: false });
    this.ws = ws;
    let received = false;
    ws.on('open', () => {
      this.seen = new DedupSet(); // a fresh replay decides what the peer holds
      ws.send(linkJoinFrame(uid, channel, key, peerKey === undefined ? undefined : peerProof(uid, channel, peerKey)));
      this.replayDeadline = Date.now() + this.options.replayMaxMs;
      this.armReplayTimer();
      this.log.info({ peer: url, channel }, 'peer link open');
    });
    ws.on('message', (data: Buffer, binary: boolean) => {
      received = true;
      this.backoffMs = this.options.backoffMinMs;
      if (this.replayTimer) this.armReplayTimer();
      if (!binary && isLinkJoinFrame(data)) return;
      if (!this.seen.add(siphash24Key(data))) return;
      this.session.publish({ data, binary });
    });
    ws.on('error', (error) => this.log.debug({ peer: url, err: error }, 'peer link error'));
    ws.on('close', (code: number, reason: Buffer) => {
      clearTimeout(this.replayTimer);
      this.replayTimer = undefined;
      if (!this.open) return;
      this.log.warn({ peer: url, channel, code, reason: reason.toString() }, 'peer link closed; reconnecting');
      if (!received) this.backoffMs = Math.min(this.backoffMs * 2, this.options.backoffMaxMs);
      // Jitter keeps a ring of servers from reconnecting in lockstep.
      const delay = this.backoffMs * (0.5 + Math.random() / 2);
      this.reconnectTimer = setTimeout(() => this.connect(), delay);
    });
  }

  /** Sends `message` to the peer unless it already went either way; true if sent. */
  private forward(message: Message): boolean {
    const ws = this.ws;
    if (!this.open || !ws || ws.readyState !== WebSocket.OPEN) return false; // resync sends it later
    if (!this.seen.add(siphash24Key(message.data))) return false;
    ws.send(message.data, { binary: message.binary });
    if (ws.bufferedAmount > this.options.maxBuffered) {
      this.log.warn({ peer: this.options.url, channel: this.options.channel }, 'peer too slow; relinking');
      ws.terminate();
    }
    return true;
  }

  private armReplayTimer(): void {
    clearTimeout(this.replayTimer);
    const wait = Math.min(this.options.replayQuietMs, Math.max(0, this.replayDeadline - Date.now()));
    this.replayTimer = setTimeout(() => {
      this.replayTimer = undefined;
      void this.sendWhatPeerLacks();
    }, wait);
  }

  /** After the peer's replay: send it the local history it did not replay, in order. */
  private async sendWhatPeerLacks(): Promise<void> {
    const ws = this.ws;
    let history: Message[];
    try {
      history = await this.hub.store.read(this.options.channel);
    } catch (error) {
      this.log.error({ err: error, channel: this.options.channel }, 'resync: cannot read history');
      return;
    }
    if (ws !== this.ws) return; // reconnected meanwhile; that connection resyncs itself
    let sent = 0;
    for (const message of history) {
      if ((message.binary || !isLinkJoinFrame(message.data)) && this.forward(message)) sent++;
    }
    this.log.info({ peer: this.options.url, channel: this.options.channel, sent }, 'peer link resynchronised');
  }
}

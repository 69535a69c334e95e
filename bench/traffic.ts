// One generator process's share of a traffic scenario: its clients, their publishing (paced to
// a rate, or as fast as the recipients keep up), and what they receive (counts, order, latency).
//
// Flow control at max rate: a publisher may have `window` messages in flight. A message counts
// as acknowledged once its recipients have received as many messages of that publisher as it
// has sent, on average per generator process; recipients in other processes report through the
// parent. So a publisher goes exactly as fast as the slowest process of recipients, and never
// just fills socket buffers. A publisher whose window stays full for STALL_MS (its messages were
// lost) gives the outstanding messages up and goes on; loss is counted exactly at the end.

import { Histogram } from './histogram.js';
import { clockUs, decode, encode } from './payload.js';
import { PROTOCOLS, type BenchClient } from './protocols.js';
import type { FromGenerator, TrafficSetup } from './messages.js';

const CONNECT_CONCURRENCY = 64;
const CONNECT_TIMEOUT_MS = 30_000;
const PROBE_WAIT_MS = 300;
/** Progress reports to the parent: at most one per this many ms, sent soon after a receipt. */
const PROGRESS_INTERVAL_MS = 2;
const STALL_MS = 2000;
/** Messages sent per event-loop turn at max rate before yielding to the receive side. */
const SEND_BURST = 256;

interface Member {
  conn: BenchClient;
  prober: boolean;
  probed: boolean;
  /** Last sequence number received per publisher of the channel (by slot). */
  lastSeq: Float64Array;
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms))),
  ]).finally(() => clearTimeout(timer));
}

export class Traffic {
  private readonly members: Member[] = [];
  /** Publisher id -> its slot in its channel's publisher list. */
  private readonly slot = new Map<number, number>();
  private readonly local: number[];
  private readonly connOf = new Map<number, BenchClient>();
  // Per publisher id (every publisher of the run, local or not).
  private readonly receivedFrom: Float64Array;
  private readonly recipientsHere: Float64Array;
  // Per local publisher id.
  private readonly sent: Float64Array;
  private readonly forgiven: Float64Array;
  private readonly remoteAck: Float64Array;
  private readonly lastAck: Float64Array;
  private readonly lastAckAt: Float64Array;
  /** Per shared publisher: the progress last reported to the parent. */
  private readonly reported: Float64Array;
  /** Shared publishers with recipients here, whose progress this process reports. */
  private reporting: number[] = [];
  private readonly isReporting: Uint8Array;
  private progressQueued = false;

  private received = 0;
  private outOfOrder = 0;
  private closed = 0;
  private skipped = 0;
  private stalls = 0;
  private offered = 0;
  private cursor = 0;
  private running = false;
  private measuring = false;
  private pumpQueued = false;
  private startedUs = 0;
  private readonly latency = new Histogram();
  private stallTimer: NodeJS.Timeout | undefined;
  private probeWaiting = 0;
  private onProbed: (() => void) | undefined;

  constructor(private readonly setup: TrafficSetup, private readonly send: (message: FromGenerator) => void) {
    const publishers = Math.max(0, ...setup.channels.flatMap((c) => c.publishers.map((p) => p + 1)));
    for (const channel of setup.channels) channel.publishers.forEach((p, i) => this.slot.set(p, i));
    this.receivedFrom = new Float64Array(publishers);
    this.recipientsHere = new Float64Array(publishers);
    this.sent = new Float64Array(publishers);
    this.forgiven = new Float64Array(publishers);
    this.remoteAck = new Float64Array(publishers).fill(Infinity);
    this.lastAck = new Float64Array(publishers);
    this.lastAckAt = new Float64Array(publishers);
    this.reported = new Float64Array(publishers);
    this.isReporting = new Uint8Array(publishers);
    for (const p of setup.shared) this.remoteAck[p] = 0;
    this.local = setup.clients.filter((c) => c.publisher >= 0).map((c) => c.publisher);
  }

  async connect(): Promise<void> {
    const protocol = PROTOCOLS[this.setup.target];
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < this.setup.clients.length) {
        const plan = this.setup.clients[next++]!;
        const channel = this.setup.channels[plan.channel]!;
        const member: Member = {
          conn: protocol.connect(this.setup.url, { uid: plan.uid, channel: channel.name }, {
            message: (payload) => this.onMessage(member, payload),
            closed: () => this.closed++,
          }),
          prober: plan.prober,
          probed: false,
          lastSeq: new Float64Array(channel.publishers.length).fill(-1),
        };
        await withTimeout(member.conn.ready, CONNECT_TIMEOUT_MS, `client ${plan.uid}`);
        this.members.push(member);
        if (plan.publisher >= 0) this.connOf.set(plan.publisher, member.conn);
        for (const p of channel.publishers) if (p !== plan.publisher) this.recipientsHere[p]!++;
      }
    };
    await Promise.all(Array.from({ length: CONNECT_CONCURRENCY }, worker));
  }

  /** Each channel's prober sends a probe; resolves with how many members here saw none yet. */
  probe(): Promise<number> {
    this.probeWaiting = this.members.filter((m) => !m.prober && !m.probed).length;
    for (const m of this.members) if (m.prober) m.conn.send(encode('probe', 0, 0, this.setup.payloadBytes));
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.onProbed = undefined;
        resolve(this.probeWaiting);
      };
      const timer = setTimeout(done, PROBE_WAIT_MS);
      this.onProbed = () => {
        if (this.probeWaiting === 0) done();
      };
      this.onProbed();
    });
  }

  start(): void {
    this.running = true;
    this.startedUs = clockUs();
    const now = performance.now();
    for (const p of this.local) this.lastAckAt[p] = now;
    if (this.setup.rate === 'max') this.schedulePump();
    else if (this.local.length > 0) this.tick(this.setup.rate);
    this.stallTimer = setInterval(() => this.checkStalls(), 100);
    this.reporting = this.setup.shared.filter((p) => this.recipientsHere[p]! > 0);
    for (const p of this.reporting) this.isReporting[p] = 1;
  }

  mark(measuring: boolean): { received: number; sent: number } {
    this.measuring = measuring;
    return { received: this.received, sent: this.local.reduce((sum, p) => sum + this.sent[p]!, 0) };
  }

  credit(acks: Array<[number, number]>): void {
    for (const [p, ack] of acks) this.remoteAck[p] = ack;
    this.schedulePump();
  }

  stop(): { sent: Array<[number, number]>; skipped: number; stalls: number } {
    this.running = false;
    clearInterval(this.stallTimer);
    return { sent: this.local.map((p) => [p, this.sent[p]!]), skipped: this.skipped, stalls: this.stalls };
  }

  /** Waits until `expected` messages arrived, nothing arrived for `quietMs`, or `timeoutMs`. */
  async drain(expected: number, timeoutMs: number, quietMs: number): Promise<FromGenerator> {
    const started = performance.now();
    let last = -1;
    let lastChange = started;
    while (this.received < expected) {
      const now = performance.now();
      if (this.received !== last) {
        last = this.received;
        lastChange = now;
      }
      if (now - lastChange > quietMs || now - started > timeoutMs) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return { type: 'drained', received: this.received, outOfOrder: this.outOfOrder, closed: this.closed, latency: this.latency.data() };
  }

  close(): void {
    this.running = false;
    clearInterval(this.stallTimer);
    for (const m of this.members) m.conn.close();
  }

  private onMessage(member: Member, payload: Uint8Array): void {
    const message = decode(payload);
    if (!message) return;
    if (message.kind === 'probe') {
      if (!member.probed) {
        member.probed = true;
        if (!member.prober) this.probeWaiting--;
        this.onProbed?.();
      }
      return;
    }
    const slot = this.slot.get(message.publisher);
    if (slot === undefined) return;
    if (message.seq <= member.lastSeq[slot]!) {
      this.outOfOrder++;
      return;
    }
    member.lastSeq[slot] = message.seq;
    this.received++;
    this.receivedFrom[message.publisher]!++;
    if (this.measuring) this.latency.record(clockUs() - message.sentUs);
    if (this.sent[message.publisher]! > 0) this.schedulePump();
    if (this.isReporting[message.publisher] && !this.progressQueued && this.running) {
      this.progressQueued = true;
      setTimeout(() => this.reportProgress(), PROGRESS_INTERVAL_MS);
    }
  }

  /** Messages of local publisher `p` acknowledged by all its recipients (Infinity: it has none). */
  private acked(p: number): number {
    const here = this.recipientsHere[p]! > 0 ? Math.floor(this.receivedFrom[p]! / this.recipientsHere[p]!) : Infinity;
    return Math.min(here, this.remoteAck[p]!) + this.forgiven[p]!;
  }

  private hasRoom(p: number): boolean {
    return this.sent[p]! - this.acked(p) < this.setup.window;
  }

  /** The next local publisher, round-robin, that may send; -1 if every window is full. */
  private pick(): number {
    for (let tries = 0; tries < this.local.length; tries++) {
      const p = this.local[this.cursor]!;
      this.cursor = (this.cursor + 1) % this.local.length;
      if (this.hasRoom(p)) return p;
    }
    return -1;
  }

  private publish(p: number): void {
    this.connOf.get(p)!.send(encode('data', p, this.sent[p]!, this.setup.payloadBytes));
    this.sent[p]!++;
  }

  private schedulePump(): void {
    if (this.pumpQueued || !this.running || this.setup.rate !== 'max') return;
    this.pumpQueued = true;
    setImmediate(() => {
      this.pumpQueued = false;
      if (!this.running) return;
      for (let i = 0; i < SEND_BURST; i++) {
        const p = this.pick();
        if (p < 0) return; // resumed by the next receipt or credit
        this.publish(p);
      }
      this.schedulePump();
    });
  }

  /** Fixed rate: send what is due since the start; a message due while every window is full is skipped. */
  private tick(rate: number): void {
    if (!this.running) return;
    const due = Math.floor(((clockUs() - this.startedUs) * rate) / 1e6) - this.offered;
    for (let i = 0; i < due; i++) {
      this.offered++;
      const p = this.pick();
      if (p < 0) this.skipped++;
      else this.publish(p);
    }
    setTimeout(() => this.tick(rate), 1);
  }

  private checkStalls(): void {
    const now = performance.now();
    for (const p of this.local) {
      const acked = this.acked(p);
      // The clock runs only while the window is full and nothing is acknowledged.
      if (acked !== this.lastAck[p] || this.hasRoom(p)) {
        this.lastAck[p] = acked;
        this.lastAckAt[p] = now;
      } else if (now - this.lastAckAt[p]! > STALL_MS) {
        this.forgiven[p]! += this.sent[p]! - acked;
        this.stalls++;
        this.lastAckAt[p] = now;
        this.schedulePump();
      }
    }
  }

  private reportProgress(): void {
    this.progressQueued = false;
    const acks: Array<[number, number]> = [];
    for (const p of this.reporting) {
      const ack = Math.floor(this.receivedFrom[p]! / this.recipientsHere[p]!);
      if (ack !== this.reported[p]) {
        this.reported[p] = ack;
        acks.push([p, ack]);
      }
    }
    if (acks.length > 0) this.send({ type: 'progress', acks });
  }
}

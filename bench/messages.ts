// What the bench (parent) and its generator processes say to each other over the IPC channel.

import type { HistogramData } from './histogram.js';
import type { TargetName } from './targets/index.js';

export interface ChannelPlan {
  name: string;
  /** Members in all generators together. */
  members: number;
  /** Global ids of the members that publish. */
  publishers: number[];
}

export interface ClientPlan {
  uid: string;
  /** Index into the plan's channels. */
  channel: number;
  /** Global publisher id, or -1 for a member that only listens. */
  publisher: number;
  /** Sends the readiness probe of its channel. */
  prober: boolean;
}

export interface TrafficSetup {
  type: 'setup';
  target: TargetName;
  url: string;
  channels: ChannelPlan[];
  /** This generator's clients. */
  clients: ClientPlan[];
  payloadBytes: number;
  /** Messages a publisher may have in flight (sent, not yet seen by its recipients). */
  window: number;
  /** This generator's share of the offered message rate (msg/s), or max. */
  rate: number | 'max';
  /** Publishers with recipients in other generators: their progress goes through the parent. */
  shared: number[];
}

export interface JoinHistoryRequest {
  type: 'join-history';
  target: TargetName;
  url: string;
  joins: number;
  messages: number;
  payloadBytes: number;
}

/** reconnect: fills channels with history before the storm. */
export interface FillRequest {
  type: 'fill';
  url: string;
  channels: string[];
  messages: number;
  payloadBytes: number;
}

/** reconnect: this generator's share of the clients that reconnect at once. */
export interface StormRequest {
  type: 'storm';
  url: string;
  channels: string[];
  clients: number;
  /** The number of this generator's first client (uids are unique across generators). */
  firstClient: number;
  /** History messages each client waits for. */
  messages: number;
  /** Offer a TLS session from an earlier connection (TLS 1.3 resumption). */
  resume: boolean;
}

/** churn: this generator's share of the connect, join, publish, read, leave pairs. */
export interface ChurnRequest {
  type: 'churn';
  target: TargetName;
  url: string;
  /** This generator's index among `generators`: pairs are numbered across all of them. */
  generator: number;
  generators: number;
  channels: number;
  /** Pairs (two sessions each) this generator runs, at most. */
  pairs: number;
  /** The number of the first pair (a run's warm-up and measured pairs differ). */
  firstPair: number;
  /** Pairs in flight at once in this generator. */
  concurrency: number;
  /** No pair starts after this many ms. */
  timeLimitMs: number;
  payloadBytes: number;
}

export type ToGenerator =
  | TrafficSetup
  | JoinHistoryRequest
  | FillRequest
  | StormRequest
  | ChurnRequest
  | { type: 'probe' }
  | { type: 'start' }
  /** Report counters; latency is recorded from a mark with measuring=true to the next one. */
  | { type: 'mark'; measuring: boolean }
  /** Publisher progress seen by the other generators: [publisher, messages acknowledged]. */
  | { type: 'credit'; acks: Array<[number, number]> }
  | { type: 'stop' }
  | { type: 'drain'; expected: number; timeoutMs: number; quietMs: number }
  /** Close every client of the case. */
  | { type: 'reset' };

export type FromGenerator =
  | { type: 'ready' }
  | { type: 'probed'; waiting: number }
  | { type: 'marked'; received: number; sent: number }
  | { type: 'progress'; acks: Array<[number, number]> }
  | { type: 'stopped'; sent: Array<[number, number]>; skipped: number; stalls: number }
  | { type: 'drained'; received: number; outOfOrder: number; closed: number; latency: HistogramData }
  | { type: 'join-history'; timesMs: number[] }
  | { type: 'filled' }
  | { type: 'stormed'; timesMs: number[]; failed: number; resumed: number }
  | { type: 'churned'; pairs: number; failed: number; failures: string[]; elapsedMs: number }
  | { type: 'reset' }
  | { type: 'error'; message: string };

export type Reply<T extends FromGenerator['type']> = Extract<FromGenerator, { type: T }>;

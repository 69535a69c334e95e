// The scenarios of a run, turned into cases: one case per scenario and offered rate, each run
// against every target on a freshly started server.

import type { GeneratorPool } from '../generator-pool.js';
import { PROTOCOLS } from '../protocols.js';
import type { ServerProcess } from '../targets/process.js';
import type { TargetName } from '../targets/index.js';
import { HEADER_BYTES } from '../payload.js';
import { idleCapacity, runIdle } from './idle.js';
import { runChurn } from './churn.js';
import { runJoinHistory } from './join-history.js';
import { runReconnect } from './reconnect.js';
import { runStart } from './start.js';
import { fanoutShape, manyChannelsShape, type Shape } from './shapes.js';
import { connectShape, measureTraffic, type Metrics } from './traffic.js';

export const SCENARIO_NAMES = ['fanout', 'many-channels', 'idle', 'join-history', 'churn', 'reconnect', 'start'] as const;
export type ScenarioName = (typeof SCENARIO_NAMES)[number];
/** What a run measures unless --scenarios says otherwise: the churn soak (a minute per target) and the reconnect storm are opt-in. */
export const DEFAULT_SCENARIOS: readonly ScenarioName[] = ['fanout', 'many-channels', 'idle', 'join-history', 'start'];

export type Rate = number | 'max';

export interface Settings {
  scenarios: ScenarioName[];
  subscribers: number;
  publishers: number;
  payload: number;
  rates: Rate[];
  channels: number;
  connections: number;
  joins: number;
  historyMessages: number;
  /** Messages in flight per publisher; undefined: see defaultWindow. */
  window: number | undefined;
  generators: number;
  warmupMs: number;
  durationMs: number;
  drainTimeoutMs: number;
  seed: number;
  /** The history store this server runs with. */
  mlesHistory: 'memory' | 'sqlite';
  /** churn: sessions after the warm-up, channels they spread over, and the time limit. */
  cycles: number;
  churnChannels: number;
  churnSeconds: number;
  /** reconnect: clients that reconnect at once. */
  storm: number;
  /** start: how long an empty server is watched for its RSS at rest. */
  restSeconds: number;
  /** Every case over wss:// (--tls): reconnect then also runs with session resumption. */
  tls: boolean;
}

export interface Case {
  scenario: ScenarioName;
  /** What was measured, with its parameters, e.g. "fanout S=100 P=1 B=64 rate=max". */
  title: string;
  params: Record<string, number | string>;
  /** Remarks that hold for every target (limits of this machine). */
  notes: string[];
  /** Why the case does not apply to `target`, if it does not. */
  notApplicable(target: TargetName): string | undefined;
  /** The server's history limit for this case, if not --history-messages. */
  historyLimit?: number;
  run(target: TargetName, server: ServerProcess, pool: GeneratorPool): Promise<Metrics>;
}

function rateText(rate: Rate): string {
  return rate === 'max' ? 'max' : `${rate}/s`;
}

/**
 * Enough in flight to keep a server busy while progress reports travel (about 10 ms), not so
 * much that max-rate latency becomes mostly queueing: about 8192 deliveries in flight in all.
 */
export const DELIVERIES_IN_FLIGHT = 8192;

function defaultWindow(shape: Shape, rate: Rate): number {
  const perRound = shape.channels.reduce((sum, c) => sum + c.publishers.length * (c.members - 1), 0);
  const window = Math.max(1, Math.floor(DELIVERIES_IN_FLIGHT / Math.max(1, perRound)));
  if (rate === 'max') return window;
  // At a fixed rate the window is only a safety bound: a publisher may fall a second behind.
  const publishers = shape.channels.reduce((sum, c) => sum + c.publishers.length, 0);
  return Math.max(window, Math.ceil(rate / Math.max(1, publishers)));
}

function trafficCase(scenario: ScenarioName, title: string, params: Case['params'], shape: (generators: number) => Shape, rate: Rate, s: Settings): Case {
  const window = s.window ?? defaultWindow(shape(1), rate);
  const notes = s.payload < HEADER_BYTES ? [`payload raised to ${HEADER_BYTES} bytes (the header with sequence and timestamp)`] : [];
  return {
    scenario,
    title: `${title} rate=${rateText(rate)}`,
    params: { ...params, rate, window },
    notes,
    notApplicable: () => undefined,
    async run(target, server, pool) {
      const set = pool.use(s.generators);
      const planned = shape(s.generators);
      try {
        await connectShape(set, server, planned, { target, payloadBytes: s.payload, rate, window });
        return await measureTraffic(set, server, planned, rate, s);
      } finally {
        await set.reset();
      }
    },
  };
}

export function buildCases(s: Settings): Case[] {
  const cases: Case[] = [];
  for (const scenario of s.scenarios) {
    switch (scenario) {
      case 'fanout':
        for (const rate of s.rates) {
          cases.push(trafficCase(
            scenario,
            `fanout S=${s.subscribers} P=${s.publishers} B=${s.payload}`,
            { subscribers: s.subscribers, publishers: s.publishers, payload: s.payload },
            (g) => fanoutShape(s.subscribers, s.publishers, g),
            rate,
            s,
          ));
        }
        break;
      case 'many-channels': {
        const members = manyChannelsShape(s.channels, 1, s.seed).clients.length;
        for (const rate of s.rates) {
          cases.push(trafficCase(
            scenario,
            `many-channels C=${s.channels} (${members} members) B=${s.payload}`,
            { channels: s.channels, members, payload: s.payload, seed: s.seed },
            (g) => manyChannelsShape(s.channels, g, s.seed),
            rate,
            s,
          ));
        }
        break;
      }
      case 'idle': {
        const capacity = idleCapacity(s.connections);
        cases.push({
          scenario,
          title: `idle N=${capacity.connections}`,
          params: { connections: capacity.connections },
          notes: capacity.note ? [capacity.note] : [],
          notApplicable: () => undefined,
          run: (target, server, pool) => runIdle(pool, target, server, capacity.connections, s.generators, s.warmupMs),
        });
        break;
      }
      case 'join-history':
        cases.push({
          scenario,
          title: `join-history ${s.historyMessages} messages x${s.joins} joins B=${s.payload}`,
          params: { joins: s.joins, messages: s.historyMessages, payload: s.payload },
          notes: [],
          // The witness's and the filler's join frames are kept too, and on a cluster (several
          // nodes) they may land among the messages: room for them, so none of the messages goes.
          historyLimit: s.historyMessages + 2,
          notApplicable: (target) => (PROTOCOLS[target].history === 'none' ? 'keeps no history' : undefined),
          run: (target, server, pool) => runJoinHistory(pool, target, server, s.joins, s.historyMessages, s.payload),
        });
        break;
      case 'churn':
        cases.push({
          scenario,
          title: `churn ${s.cycles} sessions over C=${s.churnChannels} B=${s.payload} (at most ${s.churnSeconds} s)`,
          params: { sessions: s.cycles, channels: s.churnChannels, payload: s.payload, seconds: s.churnSeconds },
          notes: [],
          notApplicable: () => undefined,
          run: (target, server, pool) => runChurn(pool, target, server, {
            sessions: s.cycles, channels: s.churnChannels, timeLimitMs: s.churnSeconds * 1000, payloadBytes: s.payload,
            generators: s.generators, historyLimit: s.historyMessages,
          }),
        });
        break;
      case 'reconnect':
        for (const resume of s.tls ? [false, true] : [false]) {
          const messages = Math.max(1, Math.floor(s.historyMessages / 2));
          cases.push({
            scenario,
            title: `reconnect N=${s.storm} with ${messages} messages of history each, ${resume ? 'TLS session resumption' : s.tls ? 'full TLS handshakes' : 'plain ws'}`,
            params: { connections: s.storm, messages, resume: resume ? 'yes' : 'no' },
            notes: [],
            notApplicable: (target) => (PROTOCOLS[target].history === 'replay' ? undefined : 'this storm rejoins with Mles history'),
            run: (_target, server, pool) => runReconnect(pool, server, { clients: s.storm, messages, payloadBytes: s.payload, generators: s.generators, resume }),
          });
        }
        break;
      case 'start':
        cases.push({
          scenario,
          title: `start: an empty server, 1 s after it listens and at rest (lowest within ${s.restSeconds} s)`,
          params: { seconds: s.restSeconds },
          notes: [],
          notApplicable: () => undefined,
          run: (_target, server) => runStart(server, s.restSeconds),
        });
        break;
    }
  }
  return cases;
}

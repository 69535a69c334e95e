// churn: a soak of short sessions. Many cycles of connect, join, publish, read, leave across
// many channels; what the server holds afterwards (resident memory, open file descriptors) must
// come back to what it held before, or something leaks.
//
//   1. the fresh server: its descriptors and RSS
//   2. warm-up pairs, half as many as measured and enough to fill every channel's history (Mles
//      keeps --limit per channel), so that full histories are not counted as growth; then the
//      baseline, once settled (below)
//   3. the measured pairs (until --cycles sessions ran or --churn-seconds passed), sampling
//      descriptors and RSS; then settle again
//   4. RSS after against the baseline: not back within +RSS_BOUND_PCT % is flagged, as is any
//      descriptor more than the fresh server held
//
// Settling waits for conditions, not a fixed time: descriptors back to the fresh server's count
// (every connection gone), then RSS back within the bound of the reference (the fresh server's
// for the baseline, the baseline afterwards), for at most the settle time (--churn-seconds, at
// least 10 s). A garbage-collected server gets there once its idle-time collection runs (for
// Node some 20-30 s after the load stops); a server that keeps memory per session never does.

import fs from 'node:fs';
import type { GeneratorPool, GeneratorSet } from '../generator-pool.js';
import { serverPids, totalRssBytes } from '../measure.js';
import { PROTOCOLS } from '../protocols.js';
import type { ServerProcess } from '../targets/process.js';
import type { TargetName } from '../targets/index.js';
import type { Metrics } from './traffic.js';

/** RSS after the churn may be this much over RSS after the warm-up. */
export const RSS_BOUND_PCT = 10;
/** Pairs in flight per channel (two sessions each). */
const PAIRS_PER_CHANNEL = 1;
const POLL_MS = 50;
const FD_SETTLE_TIMEOUT_MS = 30_000;
const RSS_POLL_MS = 250;
/** The least time RSS is given to come back (the run's time limit, if longer). */
const RSS_SETTLE_MIN_MS = 10_000;
const MB = 1024 * 1024;

export interface ChurnOptions {
  /** Sessions (connect, join, publish, read, leave) to run after the warm-up; two per pair. */
  sessions: number;
  channels: number;
  /** The measured run stops starting pairs after this many ms. */
  timeLimitMs: number;
  payloadBytes: number;
  generators: number;
  /** Messages of history the server keeps per channel (a pair adds four entries: two joins, two messages). */
  historyLimit: number;
}

/** Open descriptors of the processes, and how many of them are sockets. */
export function openFds(pids: number[]): { fds: number; sockets: number } {
  let fds = 0;
  let sockets = 0;
  for (const pid of pids) {
    for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
      fds++;
      try {
        if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')) sockets++;
      } catch {
        // closed while we looked
      }
    }
  }
  return { fds, sockets };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits until the processes hold at most `target` descriptors; how long it took, or undefined if never. */
async function settleFds(pids: number[], target: number): Promise<number | undefined> {
  const started = performance.now();
  while (openFds(pids).fds > target) {
    if (performance.now() - started > FD_SETTLE_TIMEOUT_MS) return undefined;
    await sleep(POLL_MS);
  }
  return performance.now() - started;
}

/**
 * Waits until RSS is at most `bound` bytes, or `timeoutMs`: the lowest RSS seen meanwhile, and
 * how long it took to get within the bound (undefined if it never did).
 */
async function rssBackTo(pids: number[], bound: number, timeoutMs: number): Promise<{ low: number; ms: number | undefined }> {
  const started = performance.now();
  let low = totalRssBytes(pids);
  while (low > bound) {
    if (performance.now() - started > timeoutMs) return { low, ms: undefined };
    await sleep(RSS_POLL_MS);
    low = Math.min(low, totalRssBytes(pids));
  }
  return { low, ms: performance.now() - started };
}

interface RunResult {
  pairs: number;
  failed: number;
  elapsedMs: number;
  peakFds: number;
  peakRss: number;
}

/** Runs `pairs` pairs from every generator of `set` (sampling the server meanwhile). */
async function runPairs(set: GeneratorSet, target: TargetName, server: ServerProcess, o: ChurnOptions, pairs: number, firstPair: number, timeLimitMs: number): Promise<RunResult> {
  const pids = serverPids(server);
  const generators = set.generators.length;
  let peakFds = 0;
  let peakRss = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      peakFds = Math.max(peakFds, openFds(pids).fds);
      peakRss = Math.max(peakRss, totalRssBytes(pids));
      await sleep(250);
    }
  })();
  try {
    const concurrency = Math.max(1, Math.round((o.channels * PAIRS_PER_CHANNEL) / generators));
    const replies = await set.all((g) => ({
      type: 'churn', target, url: server.url, generator: g, generators, channels: o.channels,
      pairs: Math.ceil(pairs / generators), firstPair, concurrency, timeLimitMs, payloadBytes: o.payloadBytes,
    }), 'churned', timeLimitMs + 60_000);
    const failures = replies.flatMap((r) => r.failures);
    if (failures.length > 0) process.stderr.write(`   churn: ${replies.reduce((sum, r) => sum + r.failed, 0)} pairs failed, e.g. ${failures.slice(0, 3).join('; ')}\n`);
    return {
      pairs: replies.reduce((sum, r) => sum + r.pairs, 0),
      failed: replies.reduce((sum, r) => sum + r.failed, 0),
      elapsedMs: Math.max(...replies.map((r) => r.elapsedMs)),
      peakFds,
      peakRss,
    };
  } finally {
    sampling = false;
    await sampler;
  }
}

/** Remarks on a churn result (shown as notes under the table); FLAG marks a suspected leak. */
export function churnFlags(m: Metrics): string[] {
  if (m.rssGrowthPct === undefined) return [];
  const flags: string[] = [];
  if (m.rssGrowthPct > RSS_BOUND_PCT) {
    flags.push(`FLAG: RSS did not come back within +${RSS_BOUND_PCT} % of the warm-up's in ${(m.rssSettleLimitMs! / 1000).toFixed(0)} s after the churn (lowest +${m.rssGrowthPct.toFixed(1)} %): memory kept per session?`);
  }
  if (m.fdsAfter! > m.fdsWarm!) {
    flags.push(`FLAG: ${m.fdsAfter! - m.fdsWarm!} descriptors more than before the churn, ${FD_SETTLE_TIMEOUT_MS / 1000} s after the last session: sockets left open?`);
  }
  if (m.fdsWarm! > m.fdsEmpty!) flags.push(`the warm-up left ${m.fdsWarm! - m.fdsEmpty!} descriptors more open than the fresh server had`);
  if (m.failed) flags.push(`${m.failed} of ${m.failed + m.sessions!} sessions failed`);
  if (m.warmupFailed) flags.push(`${m.warmupFailed} warm-up sessions failed`);
  if (m.sessions! < m.sessionsAsked!) flags.push(`${m.sessions} of the ${m.sessionsAsked} sessions asked for ran within --churn-seconds`);
  return flags;
}

export async function runChurn(pool: GeneratorPool, target: TargetName, server: ServerProcess, o: ChurnOptions): Promise<Metrics> {
  const set = pool.use(o.generators);
  const pids = serverPids(server);
  const bound = 1 + RSS_BOUND_PCT / 100;
  const settleMs = Math.max(RSS_SETTLE_MIN_MS, o.timeLimitMs);
  try {
    const empty = openFds(pids);
    const rssEmpty = totalRssBytes(pids);
    // Enough pairs to fill every channel's history, and at least half as many as the measured run.
    const fill = PROTOCOLS[target].history === 'replay' ? Math.ceil((o.channels * o.historyLimit) / 4) : 0;
    const warmupPairs = Math.max(fill, Math.ceil(o.sessions / 2 / 2));
    const warm = await runPairs(set, target, server, o, warmupPairs, 0, 10 * o.timeLimitMs);
    await settleFds(pids, empty.fds);
    // The baseline: RSS after the warm-up, once the garbage of the warm-up is collected (RSS back
    // near the fresh server's) or the settle time is up. Node's idle-time collection comes some
    // 20-30 s after the load stops.
    const rssWarm = (await rssBackTo(pids, rssEmpty * bound, settleMs)).low;
    const fdsWarm = openFds(pids);

    const run = await runPairs(set, target, server, o, Math.ceil(o.sessions / 2), warmupPairs * 2 + o.generators, o.timeLimitMs);
    const fdsSettleMs = await settleFds(pids, fdsWarm.fds);
    const fdsAfter = openFds(pids);
    const after = await rssBackTo(pids, rssWarm * bound, settleMs);
    const growth = ((after.low - rssWarm) / rssWarm) * 100;
    return {
      sessions: run.pairs * 2,
      sessionsAsked: Math.ceil(o.sessions / 2) * 2,
      failed: run.failed * 2,
      sessionsPerSec: (run.pairs * 2) / (run.elapsedMs / 1000),
      warmupSessions: warm.pairs * 2,
      warmupFailed: warm.failed * 2,
      rssEmptyMB: rssEmpty / MB,
      rssWarmMB: rssWarm / MB,
      rssPeakMB: run.peakRss / MB,
      rssAfterMB: after.low / MB,
      rssGrowthPct: growth,
      /** From the last session until RSS was back within the bound (NaN: not within the settle time). */
      rssBackMs: after.ms ?? NaN,
      rssSettleLimitMs: settleMs,
      fdsEmpty: empty.fds,
      fdsWarm: fdsWarm.fds,
      fdsPeak: run.peakFds,
      fdsAfter: fdsAfter.fds,
      socketsAfter: fdsAfter.sockets,
      /** From the last session until every descriptor of the sessions was closed (NaN: not within FD_SETTLE_TIMEOUT_MS). */
      fdsBackMs: fdsSettleMs ?? NaN,
    };
  } finally {
    await set.reset();
  }
}

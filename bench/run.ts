// `npm run bench`: starts each target server in its own process, runs every scenario against
// it from generator processes, and reports (table on stdout, JSON and SVG in the results
// folder). Exits non-zero if a server or generator crashed or a run could not complete; a slow
// result is a result, never a failure.

import path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { DEFAULT_TARGETS, TARGETS, TARGET_NAMES, type Target, type TargetName } from './targets/index.js';
import { ROOT, type ServerProcess } from './targets/process.js';
import { buildCases, DEFAULT_SCENARIOS, DELIVERIES_IN_FLIGHT, SCENARIO_NAMES, type Case, type Rate, type ScenarioName, type Settings } from './scenarios/index.js';
import { GeneratorPool } from './generator-pool.js';
import { makeCertificate, type BenchTls } from './tls.js';
import { describeMachine, renderTable, resultsDir, writeResults, type BenchReport, type CaseResult, type TargetResult } from './report.js';

/** Defaults of a full run, and of --quick (which must finish within a minute on 2 cores). */
const PROFILES = {
  full: {
    subscribers: 100, publishers: 1, payload: 64, rates: ['max', 1000] as Rate[], channels: 500,
    connections: 10_000, joins: 50, warmup: 1, duration: 5, drainTimeout: 10,
    cycles: 20_000, churnChannels: 50, churnSeconds: 60, storm: 5_000, restSeconds: 15,
  },
  quick: {
    subscribers: 20, publishers: 1, payload: 64, rates: ['max'] as Rate[], channels: 20,
    connections: 300, joins: 5, warmup: 0.3, duration: 0.7, drainTimeout: 3,
    cycles: 1_000, churnChannels: 10, churnSeconds: 10, storm: 200, restSeconds: 2,
  },
};

function whole(min: number) {
  return (value: string): number => {
    if (!/^\d+$/.test(value) || Number(value) < min) throw new InvalidArgumentError(`must be a whole number >= ${min}`);
    return Number(value);
  };
}

function storeKind(value: string): 'memory' | 'sqlite' {
  if (value !== 'memory' && value !== 'sqlite') throw new InvalidArgumentError('must be memory or sqlite');
  return value;
}

function seconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('must be a number of seconds > 0');
  return n;
}

function list<T extends string>(allowed: readonly T[]) {
  return (value: string): T[] => {
    const items = value.split(',').map((s) => s.trim()).filter(Boolean);
    const unknown = items.filter((item) => !allowed.includes(item as T));
    if (unknown.length > 0 || items.length === 0) throw new InvalidArgumentError(`choose from ${allowed.join(', ')}`);
    return items as T[];
  };
}

function rates(value: string): Rate[] {
  return value.split(',').map((item) => {
    if (item.trim() === 'max') return 'max';
    const n = Number(item);
    if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('must be max or messages per second, comma-separated');
    return n;
  });
}

interface Flags {
  quick?: boolean;
  targets: TargetName[];
  scenarios: ScenarioName[];
  subscribers?: number;
  publishers?: number;
  payload?: number;
  rate?: Rate[];
  channels?: number;
  connections?: number;
  joins?: number;
  historyMessages: number;
  window?: number;
  generators: number;
  warmup?: number;
  duration?: number;
  drainTimeout?: number;
  seed: number;
  mlesHistory: 'memory' | 'sqlite';
  cycles?: number;
  churnChannels?: number;
  churnSeconds?: number;
  storm?: number;
  restSeconds?: number;
  out?: string;
  tls?: boolean;
}

function program(): Command {
  return new Command('bench')
    .description('benchmark mles against a bare ws relay, Socket.IO and Mosquitto, each in its own process on loopback')
    .option('--quick', 'small and short (CI smoke: under a minute)')
    .option('--targets <list>', `servers to measure: ${TARGET_NAMES.join(',')} [${DEFAULT_TARGETS.join(',')}]`, list(TARGET_NAMES), [...DEFAULT_TARGETS])
    .option('--scenarios <list>', `scenarios: ${SCENARIO_NAMES.join(',')} [${DEFAULT_SCENARIOS.join(',')}]`, list(SCENARIO_NAMES), [...DEFAULT_SCENARIOS])
    .option('--subscribers <n>', `fanout: subscribers [${PROFILES.full.subscribers}; quick ${PROFILES.quick.subscribers}]`, whole(1))
    .option('--publishers <n>', `fanout: publishers [${PROFILES.full.publishers}]`, whole(1))
    .option('--payload <bytes>', `message size in bytes [${PROFILES.full.payload}]`, whole(1))
    .option('--rate <list>', `fanout, many-channels: offered messages/s of all publishers, or max; a list runs each [${PROFILES.full.rates.join(',')}; quick ${PROFILES.quick.rates.join(',')}]`, rates)
    .option('--channels <n>', `many-channels: channels of 2-10 members [${PROFILES.full.channels}; quick ${PROFILES.quick.channels}]`, whole(1))
    .option('--connections <n>', `idle: joined idle connections [${PROFILES.full.connections}; quick ${PROFILES.quick.connections}]`, whole(1))
    .option('--joins <n>', `join-history: joins measured [${PROFILES.full.joins}; quick ${PROFILES.quick.joins}]`, whole(1))
    .option('--history-messages <n>', 'join-history: history messages per channel (also the server history limit)', whole(1), 200)
    .option('--window <n>', `messages in flight per publisher [max rate: about ${DELIVERIES_IN_FLIGHT} deliveries in flight in all; fixed rate: 1 s of messages]`, whole(1))
    .option('--generators <n>', 'load-generator processes', whole(1), 2)
    .option('--warmup <s>', `seconds of traffic before measuring; idle: settling before each RSS reading [${PROFILES.full.warmup}; quick ${PROFILES.quick.warmup}]`, seconds)
    .option('--duration <s>', `seconds measured [${PROFILES.full.duration}; quick ${PROFILES.quick.duration}]`, seconds)
    .option('--drain-timeout <s>', `seconds to wait for the last deliveries [${PROFILES.full.drainTimeout}; quick ${PROFILES.quick.drainTimeout}]`, seconds)
    .option('--cycles <n>', `churn: sessions (connect, join, publish, read, leave) after the warm-up [${PROFILES.full.cycles}; quick ${PROFILES.quick.cycles}]`, whole(2))
    .option('--churn-channels <n>', `churn: channels the sessions spread over [${PROFILES.full.churnChannels}; quick ${PROFILES.quick.churnChannels}]`, whole(1))
    .option('--churn-seconds <s>', `churn: no session starts after this many seconds of the measured run; also the longest wait for RSS to come back [${PROFILES.full.churnSeconds}; quick ${PROFILES.quick.churnSeconds}]`, seconds)
    .option('--storm <n>', `reconnect: clients that reconnect at once [${PROFILES.full.storm}; quick ${PROFILES.quick.storm}]`, whole(1))
    .option('--rest-seconds <s>', `start: how long an empty server is watched for its RSS at rest [${PROFILES.full.restSeconds}; quick ${PROFILES.quick.restSeconds}]`, seconds)
    .option('--seed <n>', 'many-channels: seed of the channel sizes', whole(0), 1)
    .option('--mles-history <store>', 'history store of this server: memory or sqlite (a fresh file per case)', storeKind, 'memory')
    .option('--tls', 'every case over wss:// with a certificate made for the run (openssl); targets without TLS are n/a')
    .option('--out <dir>', 'results folder [bench/results, whose latest.svg is the committed chart; with --quick a temporary folder, so that a quick run leaves the working tree as it was: give --out bench/results to update the chart from one]');
}

function settingsOf(flags: Flags): Settings {
  const d = flags.quick ? PROFILES.quick : PROFILES.full;
  return {
    scenarios: flags.scenarios,
    subscribers: flags.subscribers ?? d.subscribers,
    publishers: flags.publishers ?? d.publishers,
    payload: flags.payload ?? d.payload,
    rates: flags.rate ?? d.rates,
    channels: flags.channels ?? d.channels,
    connections: flags.connections ?? d.connections,
    joins: flags.joins ?? d.joins,
    historyMessages: flags.historyMessages,
    window: flags.window,
    generators: flags.generators,
    warmupMs: (flags.warmup ?? d.warmup) * 1000,
    durationMs: (flags.duration ?? d.duration) * 1000,
    drainTimeoutMs: (flags.drainTimeout ?? d.drainTimeout) * 1000,
    seed: flags.seed,
    mlesHistory: flags.mlesHistory,
    cycles: flags.cycles ?? d.cycles,
    churnChannels: flags.churnChannels ?? d.churnChannels,
    churnSeconds: flags.churnSeconds ?? d.churnSeconds,
    storm: flags.storm ?? d.storm,
    restSeconds: flags.restSeconds ?? d.restSeconds,
    tls: Boolean(flags.tls),
  };
}

function log(line: string): void {
  process.stderr.write(line + '\n');
}

/** One case against one target, on a server started for it alone. */
async function runCase(item: Case, target: Target, settings: Settings, pool: GeneratorPool, tls: BenchTls | undefined): Promise<TargetResult> {
  const base = { target: target.name, label: target.label };
  const unavailable = target.unavailable();
  if (unavailable) return { ...base, status: 'skipped', note: unavailable };
  if (tls && !target.tls) return { ...base, status: 'n/a', note: 'no TLS variant in this benchmark' };
  const notApplicable = item.notApplicable(target.name);
  if (notApplicable) return { ...base, status: 'n/a', note: notApplicable };
  let server: ServerProcess | undefined;
  try {
    server = await target.start({ historyLimit: item.historyLimit ?? settings.historyMessages, mlesHistory: settings.mlesHistory, tls });
    const metrics = await item.run(target.name, server, pool);
    const crash = server.crash();
    if (crash) return { ...base, status: 'failed', note: crash };
    return { ...base, status: 'ok', metrics };
  } catch (error) {
    return { ...base, status: 'failed', note: server?.crash() ?? (error as Error).message };
  } finally {
    await server?.stop();
  }
}

/** Every case against every target, in that order, so that the targets of a case run close in time. */
async function runAll(cases: Case[], targets: TargetName[], settings: Settings, pool: GeneratorPool, report: BenchReport, tls: BenchTls | undefined): Promise<void> {
  for (const item of cases) {
    const title = tls ? `${item.title} over TLS` : item.title;
    const result: CaseResult = { scenario: item.scenario, title, params: { ...item.params, ...(tls ? { tls: 'wss' } : {}) }, notes: item.notes, results: [] };
    log(`== ${title}`);
    for (const name of targets) {
      const caseStarted = performance.now();
      const outcome = await runCase(item, TARGETS[name], settings, pool, tls);
      result.results.push(outcome);
      const seconds = ((performance.now() - caseStarted) / 1000).toFixed(1);
      log(`   ${outcome.label}: ${outcome.status}${outcome.note ? ` (${outcome.note})` : ''} ${seconds} s`);
    }
    report.cases.push(result);
  }
}

async function main(): Promise<number> {
  const cli = program();
  cli.parse();
  const flags = cli.opts<Flags>();
  const settings = settingsOf(flags);
  const args = process.argv.slice(2);
  const report: BenchReport = {
    date: new Date().toISOString(),
    command: `npm run bench${args.length > 0 ? ` -- ${args.join(' ')}` : ''}`,
    quick: Boolean(flags.quick),
    machine: describeMachine(),
    cases: [],
  };
  const started = performance.now();
  // Before the generators are forked: they trust the certificate from their start.
  const tls = flags.tls ? makeCertificate() : undefined;
  const pool = new GeneratorPool();
  pool.use(settings.generators); // forked now, while the first server starts
  try {
    await runAll(buildCases(settings), flags.targets, settings, pool, report, tls);
  } finally {
    await pool.close();
  }
  process.stdout.write(renderTable(report) + '\n');
  const files = writeResults(report, resultsDir(flags.out, Boolean(flags.quick), path.join(ROOT, 'bench/results')));
  log(`results: ${path.relative(process.cwd(), files.json)}, chart: ${path.relative(process.cwd(), files.svg)} (${((performance.now() - started) / 1000).toFixed(1)} s)`);
  const failed = report.cases.flatMap((c) => c.results.filter((r) => r.status === 'failed').map((r) => `${c.title} / ${r.label}`));
  if (failed.length > 0) log(`FAILED: ${failed.join('; ')}`);
  return failed.length > 0 ? 1 : 0;
}

// An interrupted run still stops its servers (process.ts kills them on exit).
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130));

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    log(`bench: ${(error as Error).stack ?? String(error)}`);
    process.exit(2);
  },
);

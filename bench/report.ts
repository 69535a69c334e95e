// The results of a run: what they are (types), the table on stdout (each figure with its ratio
// to this server's), and the files in the results folder (JSON, and the SVG chart).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TargetName } from './targets/index.js';
import type { ScenarioName } from './scenarios/index.js';
import type { Metrics } from './scenarios/traffic.js';
import { renderChart } from './chart.js';
import { formatNumber } from './format.js';
import { churnFlags } from './scenarios/churn.js';

export interface TargetResult {
  target: TargetName;
  label: string;
  status: 'ok' | 'skipped' | 'n/a' | 'failed';
  /** Why skipped, n/a or failed; or what was odd about an ok run. */
  note?: string;
  metrics?: Metrics;
}

export interface CaseResult {
  scenario: ScenarioName;
  title: string;
  params: Record<string, number | string>;
  notes: string[];
  results: TargetResult[];
}

export interface Machine {
  cpu: string;
  cores: number;
  memoryGB: number;
  os: string;
  node: string;
}

export interface BenchReport {
  date: string;
  command: string;
  quick: boolean;
  machine: Machine;
  cases: CaseResult[];
}

export function describeMachine(): Machine {
  return {
    cpu: os.cpus()[0]?.model.trim() ?? 'unknown',
    cores: os.cpus().length,
    memoryGB: Math.round(os.totalmem() / 1024 ** 3),
    os: `${os.type()} ${os.release()}`,
    node: process.version,
  };
}

interface Column {
  key: string;
  header: string;
  /** Shown only when some target has a value (the cluster targets' Redis figures). */
  optional?: boolean;
}

/** The columns of the table (and their order) per scenario. */
export const COLUMNS: Record<ScenarioName, Column[]> = {
  fanout: trafficColumns(),
  'many-channels': trafficColumns(),
  idle: [
    { key: 'rssPerConnectionKB', header: 'KB/conn' },
    { key: 'emptyRssMB', header: 'empty MB' },
    { key: 'rssMB', header: 'RSS MB' },
  ],
  'join-history': [
    { key: 'medianMs', header: 'median ms' },
    { key: 'minMs', header: 'min ms' },
    { key: 'maxMs', header: 'max ms' },
  ],
  reconnect: [
    { key: 'connections', header: 'clients' },
    { key: 'failed', header: 'failed' },
    { key: 'resumed', header: 'resumed' },
    { key: 'medianMs', header: 'median ms' },
    { key: 'p99Ms', header: 'p99 ms' },
    { key: 'lastMs', header: 'last ms' },
    { key: 'serverCpuUsPerConnection', header: 'srv µs/conn' },
  ],
  start: [
    { key: 'startRssMB', header: 'RSS 1 s MB' },
    { key: 'restRssMB', header: 'at rest MB' },
  ],
  churn: [
    { key: 'sessions', header: 'sessions' },
    { key: 'sessionsPerSec', header: 'sessions/s' },
    { key: 'failed', header: 'failed' },
    { key: 'rssWarmMB', header: 'RSS warm MB' },
    { key: 'rssPeakMB', header: 'RSS peak MB' },
    { key: 'rssAfterMB', header: 'RSS after MB' },
    { key: 'rssGrowthPct', header: 'RSS +%' },
    { key: 'fdsEmpty', header: 'fds empty' },
    { key: 'fdsPeak', header: 'fds peak' },
    { key: 'fdsAfter', header: 'fds after' },
    { key: 'rssBackMs', header: 'RSS back ms' },
    { key: 'fdsBackMs', header: 'fds back ms' },
  ],
};

function trafficColumns(): Column[] {
  return [
    { key: 'deliveriesPerSec', header: 'deliveries/s' },
    { key: 'lost', header: 'lost' },
    { key: 'p50Ms', header: 'p50 ms' },
    { key: 'p99Ms', header: 'p99 ms' },
    { key: 'maxMs', header: 'max ms' },
    { key: 'serverCpuUsPerDelivery', header: 'srv µs/deliv' },
    { key: 'serverCpuPct', header: 'srv CPU%' },
    { key: 'serverRssMB', header: 'srv RSS MB' },
    { key: 'generatorCpuPct', header: 'gen CPU%' },
    { key: 'messagesPerSec', header: 'msgs/s', optional: true },
    { key: 'redisCpuUsPerMessage', header: 'redis µs/msg', optional: true },
    { key: 'redisCpuUsPerCall', header: 'redis µs/call', optional: true },
    { key: 'messagesPerCall', header: 'msgs/call', optional: true },
  ];
}

function ratio(value: number | undefined, reference: number | undefined): string {
  if (value === undefined || reference === undefined || !Number.isFinite(value) || !Number.isFinite(reference) || reference === 0) return '';
  return ` (${formatNumber(value / reference)}x)`;
}

/** Remarks that make a figure suspect: disconnects, reordering, stalls, rate not offered. */
export function anomalies(metrics: Metrics): string[] {
  const notes: string[] = [];
  if (metrics.disconnects) notes.push(`${metrics.disconnects} clients disconnected by the server`);
  if (metrics.outOfOrder) notes.push(`${metrics.outOfOrder} messages out of order or repeated`);
  if (metrics.stalls) notes.push(`${metrics.stalls} publisher stalls (window never acknowledged, messages given up)`);
  if (metrics.skipped) notes.push(`${metrics.skipped} messages not offered (windows full: the target did not keep up)`);
  if (metrics.offeredDeliveriesPerSec! * 0.95 > metrics.deliveriesPerSec!) {
    notes.push(`${formatNumber(metrics.deliveriesPerSec)} of the ${formatNumber(metrics.offeredDeliveriesPerSec)} deliveries/s offered: behind, latency is mostly queueing`);
  }
  if (metrics.lost) notes.push(`lost ${formatNumber(metrics.lost)} of the deliveries (${formatNumber(metrics.lostPct)} %)`);
  notes.push(...churnFlags(metrics));
  return notes;
}

function pad(cells: string[][]): string[] {
  const widths = cells[0]!.map((_, c) => Math.max(...cells.map((row) => row[c]!.length)));
  return cells.map((row) => row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  '));
}

export function renderTable(report: BenchReport): string {
  const lines: string[] = [];
  for (const item of report.cases) {
    const columns = COLUMNS[item.scenario].filter((c) => !c.optional
      || item.results.some((r) => r.target !== 'mles' && Number.isFinite(r.metrics?.redisCpuUsPerMessage)));
    const reference = item.results.find((r) => r.target === 'mles' && r.status === 'ok')?.metrics;
    const rows = [['target', ...columns.map((c) => c.header)]];
    const notes = [...item.notes];
    for (const result of item.results) {
      if (result.status !== 'ok' || !result.metrics) {
        rows.push([result.label, result.status, ...columns.slice(1).map(() => '')]);
        if (result.note) notes.push(`${result.label}: ${result.note}`);
        continue;
      }
      const metrics = result.metrics;
      rows.push([result.label, ...columns.map((c) => formatNumber(metrics[c.key]) + (result.target === 'mles' ? '' : ratio(metrics[c.key], reference?.[c.key])))]);
      for (const note of [...(result.note ? [result.note] : []), ...anomalies(metrics)]) notes.push(`${result.label}: ${note}`);
    }
    lines.push(`== ${item.title}`, ...pad(rows), ...notes.map((n) => `   note: ${n}`), '');
  }
  lines.push('(Nx) = ratio to mles (this server). Latency: send to receipt, measured window only. srv µs/deliv: server CPU (user+system) per delivery.');
  lines.push('Cluster targets: srv counts the nodes and Redis; redis µs/msg and µs/call are Redis alone, per message sent and per script call (a batch or a join); msgs/call = messages per call.');
  return lines.join('\n');
}

/**
 * Where a run writes its results: the --out given, else the committed folder for a full run and a
 * temporary one for --quick, so that a quick run never replaces the committed chart (issue 14).
 */
export function resultsDir(out: string | undefined, quick: boolean, committed: string): string {
  if (out !== undefined) return path.resolve(out);
  return quick ? path.join(os.tmpdir(), 'mles-bench-quick') : committed;
}

/** Writes `<date>.json` and `latest.svg` into `dir`; returns their paths. */
export function writeResults(report: BenchReport, dir: string): { json: string; svg: string } {
  fs.mkdirSync(dir, { recursive: true });
  const json = path.join(dir, `${report.date.replace(/:/g, '-').replace(/\.\d+Z$/, 'Z')}.json`);
  fs.writeFileSync(json, JSON.stringify(report, null, 2) + '\n');
  const svg = path.join(dir, 'latest.svg');
  fs.writeFileSync(svg, renderChart(report));
  return { json, svg };
}

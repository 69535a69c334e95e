// The run as an SVG bar chart (written by hand: a few rectangles and labels), one panel per
// figure that matters, with the date, machine and command that produced it.

import type { BenchReport, CaseResult } from './report.js';
import { formatNumber } from './format.js';
import type { TargetName } from './targets/index.js';

const WIDTH = 900;
const LABEL = 170;
const BAR_MAX = 560;
const ROW = 20;
const COLORS: Record<TargetName, string> = {
  mles: '#1f6fb2', 'mles-sqlite': '#7fb3e0', ws: '#8a8a8a', socketio: '#d9962b', mosquitto: '#5c9e47', 'mles-cluster1': '#5b9bd5', 'mles-cluster2': '#0b3d6b', 'mles-rcluster2': '#6b3d8b',
};

interface Panel {
  title: string;
  key: string;
  item: CaseResult;
}

function panelsOf(item: CaseResult): Panel[] {
  switch (item.scenario) {
    case 'fanout':
    case 'many-channels':
      return [
        { title: `${item.title}: server CPU µs per delivery (lower is better)`, key: 'serverCpuUsPerDelivery', item },
        item.params.rate === 'max'
          ? { title: `${item.title}: deliveries/s (higher is better)`, key: 'deliveriesPerSec', item }
          : { title: `${item.title}: p99 latency ms (lower is better)`, key: 'p99Ms', item },
      ];
    case 'idle':
      return [{ title: `${item.title}: server RSS KB per idle connection (lower is better)`, key: 'rssPerConnectionKB', item }];
    case 'join-history':
      return [{ title: `${item.title}: median ms to the last history message (lower is better)`, key: 'medianMs', item }];
    case 'churn':
      return [
        { title: `${item.title}: sessions/s (higher is better)`, key: 'sessionsPerSec', item },
        { title: `${item.title}: server RSS after, MB (lower is better; flagged when over +10 % of the warm-up's)`, key: 'rssAfterMB', item },
      ];
    case 'reconnect':
      return [
        { title: `${item.title}: ms until the last client has its history (lower is better)`, key: 'lastMs', item },
        { title: `${item.title}: server CPU µs per connection (lower is better)`, key: 'serverCpuUsPerConnection', item },
      ];
    case 'start':
      return [{ title: `${item.title}: server RSS MB at rest (lower is better)`, key: 'restRssMB', item }];
  }
}

function escape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function text(x: number, y: number, content: string, attributes = ''): string {
  return `<text x="${x}" y="${y}" ${attributes}>${escape(content)}</text>`;
}

export function renderChart(report: BenchReport): string {
  const parts: string[] = [];
  let y = 28;
  parts.push(text(20, y, `mles benchmark, ${report.date.slice(0, 10)}${report.quick ? ' (quick)' : ''}`, 'font-size="17" font-weight="bold"'));
  y += 20;
  const m = report.machine;
  parts.push(text(20, y, `${m.cpu}, ${m.cores} cores, ${m.memoryGB} GB, ${m.os}, Node ${m.node}`, 'font-size="12" fill="#555"'));
  y += 16;
  parts.push(text(20, y, report.command, 'font-size="12" fill="#555" font-family="monospace"'));
  y += 14;
  for (const panel of report.cases.flatMap(panelsOf)) {
    y += 26;
    parts.push(text(20, y, panel.title, 'font-size="13" font-weight="bold"'));
    y += 8;
    const values = panel.item.results.map((r) => (r.status === 'ok' ? r.metrics?.[panel.key] : undefined));
    const largest = Math.max(...values.filter((v): v is number => v !== undefined && Number.isFinite(v)), 0);
    panel.item.results.forEach((result, i) => {
      const value = values[i];
      const top = y + i * ROW;
      parts.push(text(LABEL + 10, top + 14, result.label, 'font-size="12" text-anchor="end"'));
      if (value === undefined || !Number.isFinite(value)) {
        parts.push(text(LABEL + 20, top + 14, result.status === 'ok' ? 'no value' : result.status, 'font-size="12" fill="#888"'));
        return;
      }
      const width = largest > 0 ? Math.max(1, (value / largest) * BAR_MAX) : 1;
      parts.push(`<rect x="${LABEL + 20}" y="${top + 3}" width="${width.toFixed(1)}" height="14" fill="${COLORS[result.target]}"/>`);
      parts.push(text(LABEL + 26 + width, top + 14, formatNumber(value), 'font-size="12"'));
    });
    y += panel.item.results.length * ROW;
  }
  const height = y + 20;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="sans-serif">`,
    `<rect width="${WIDTH}" height="${height}" fill="#fff"/>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n');
}

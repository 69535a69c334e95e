// Runs a shape of clients against a server: connect everyone, make sure every member is joined,
// then (for traffic) publish for a warm-up and a measured window, stop, let everything arrive,
// and turn the counters into figures.

import type { GeneratorSet } from '../generator-pool.js';
import { Histogram } from '../histogram.js';
import { CpuWindow, serverPids, totalRssBytes } from '../measure.js';
import type { ServerProcess } from '../targets/process.js';
import type { TargetName } from '../targets/index.js';
import type { Shape } from './shapes.js';

const PROBE_ROUNDS = 50;
const MB = 1024 * 1024;

export type Metrics = Record<string, number>;

export interface LoadOptions {
  target: TargetName;
  payloadBytes: number;
  rate: number | 'max';
  window: number;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Connects every client of `shape` to `server` from the generators of `pool`, then waits until
 * each member has seen a probe from its channel (so all are joined before anything is measured).
 */
export async function connectShape(pool: GeneratorSet, server: ServerProcess, shape: Shape, load: LoadOptions): Promise<void> {
  const totalPublishers = shape.clients.filter((c) => c.publisher >= 0).length;
  const shared = new Set<number>();
  const byChannel = shape.channels.map(() => [] as number[]);
  shape.clients.forEach((client, i) => byChannel[client.channel]!.push(i));
  for (const members of byChannel) {
    for (const i of members) {
      const publisher = shape.clients[i]!.publisher;
      const host = shape.generatorOf[i]!;
      if (publisher < 0) continue;
      const recipientGenerators = [...new Set(members.filter((m) => m !== i).map((m) => shape.generatorOf[m]!))];
      if (recipientGenerators.some((g) => g !== host)) {
        shared.add(publisher);
        pool.route(publisher, host, recipientGenerators);
      }
    }
  }
  await pool.all((g) => {
    const clients = shape.clients.filter((_, i) => shape.generatorOf[i] === g);
    const localPublishers = clients.filter((c) => c.publisher >= 0).length;
    return {
      type: 'setup',
      target: load.target,
      url: server.url,
      channels: shape.channels,
      clients,
      payloadBytes: load.payloadBytes,
      window: load.window,
      rate: load.rate === 'max' ? 'max' : (load.rate * localPublishers) / Math.max(1, totalPublishers),
      shared: [...shared],
    };
  }, 'ready', 60_000 + shape.clients.length * 20);
  for (let round = 1; ; round++) {
    const replies = await pool.all(() => ({ type: 'probe' }), 'probed', 10_000);
    const waiting = replies.reduce((sum, r) => sum + r.waiting, 0);
    if (waiting === 0) break;
    if (round === PROBE_ROUNDS) throw new Error(`${waiting} members never received their channel's probe: not joined`);
  }
}

export interface Timing {
  warmupMs: number;
  durationMs: number;
  drainTimeoutMs: number;
}

/** Deliveries per second that `rate` messages per second make, spread evenly over the publishers. */
function offeredDeliveries(shape: Shape, rate: number): number {
  const publishers = shape.channels.reduce((sum, c) => sum + c.publishers.length, 0);
  const recipients = shape.channels.reduce((sum, c) => sum + c.publishers.length * (c.members - 1), 0);
  return (rate * recipients) / Math.max(1, publishers);
}

/** Publishes over a connected shape and measures the window after the warm-up. */
export async function measureTraffic(pool: GeneratorSet, server: ServerProcess, shape: Shape, rate: number | 'max', timing: Timing): Promise<Metrics> {
  pool.post({ type: 'start' });
  await sleep(timing.warmupMs);
  const pids = serverPids(server);
  const serverCpu = new CpuWindow(pids);
  const generatorCpu = new CpuWindow(pool.pids);
  const brokerCpu = server.broker && new CpuWindow(server.broker.pids());
  const callsBefore = await server.broker?.scriptCalls();
  const before = await pool.all(() => ({ type: 'mark', measuring: true }), 'marked', 10_000);
  await sleep(timing.durationMs);
  const after = await pool.all(() => ({ type: 'mark', measuring: false }), 'marked', 10_000);
  const serverUse = serverCpu.stop();
  const generatorUse = generatorCpu.stop();
  const brokerUse = brokerCpu?.stop();
  const calls = callsBefore === undefined ? NaN : (await server.broker!.scriptCalls()) - callsBefore;
  const rss = totalRssBytes(pids);
  const stopped = await pool.all(() => ({ type: 'stop' }), 'stopped', 10_000);

  const sent = new Map<number, number>();
  for (const reply of stopped) for (const [p, count] of reply.sent) sent.set(p, count);
  const sentIn = (channel: number): number => shape.channels[channel]!.publishers.reduce((sum, p) => sum + sent.get(p)!, 0);
  const expected = pool.generators.map(() => 0);
  shape.clients.forEach((client, i) => {
    const own = client.publisher >= 0 ? sent.get(client.publisher)! : 0;
    expected[shape.generatorOf[i]!]! += sentIn(client.channel) - own;
  });
  const drained = await pool.all(
    (g) => ({ type: 'drain', expected: expected[g]!, timeoutMs: timing.drainTimeoutMs, quietMs: Math.min(2000, timing.drainTimeoutMs) }),
    'drained',
    timing.drainTimeoutMs + 10_000,
  );

  const sum = <T>(items: T[], value: (item: T) => number): number => items.reduce((total, item) => total + value(item), 0);
  const seconds = serverUse.wallMs / 1000;
  const deliveries = sum(after, (r) => r.received) - sum(before, (r) => r.received);
  const messages = sum(after, (r) => r.sent) - sum(before, (r) => r.sent);
  const brokerCpuUs = brokerUse?.cpuUs ?? NaN;
  const latency = new Histogram();
  for (const reply of drained) latency.add(reply.latency);
  const expectedTotal = sum(expected, (e) => e);
  const delivered = sum(drained, (r) => r.received);
  return {
    deliveriesPerSec: deliveries / seconds,
    offeredDeliveriesPerSec: rate === 'max' ? NaN : offeredDeliveries(shape, rate),
    messagesPerSec: messages / seconds,
    expected: expectedTotal,
    delivered,
    lost: expectedTotal - delivered,
    lostPct: expectedTotal > 0 ? (100 * (expectedTotal - delivered)) / expectedTotal : 0,
    p50Ms: latency.quantile(0.5) / 1000,
    p99Ms: latency.quantile(0.99) / 1000,
    maxMs: latency.max / 1000,
    serverCpuUsPerDelivery: deliveries > 0 ? serverUse.cpuUs / deliveries : NaN,
    serverCpuPct: serverUse.cores * 100,
    serverRssMB: rss / MB,
    generatorCpuPct: generatorUse.cores * 100,
    generatorCpuUsPerDelivery: deliveries > 0 ? generatorUse.cpuUs / deliveries : NaN,
    // Cluster targets: what Redis spends per message and per script call (one batch or join).
    redisCpuUsPerMessage: messages > 0 ? brokerCpuUs / messages : NaN,
    redisCpuUsPerCall: calls > 0 ? brokerCpuUs / calls : NaN,
    messagesPerCall: calls > 0 ? messages / calls : NaN,
    nodeCpuUsPerMessage: messages > 0 ? (serverUse.cpuUs - brokerCpuUs) / messages : NaN,
    outOfOrder: sum(drained, (r) => r.outOfOrder),
    disconnects: sum(drained, (r) => r.closed),
    skipped: sum(stopped, (r) => r.skipped),
    stalls: sum(stopped, (r) => r.stalls),
  };
}

// reconnect: a reconnect storm, as after a restart. Channels of 10 are filled with history, then
// every client connects at once, joins and waits for its channel's whole history; the time to
// the last one and the server's CPU per connection are measured. Over TLS (--tls) it runs with
// full handshakes, and again with TLS 1.3 session resumption (each generator's clients offer a
// session ticket it got from the same server just before).

import type { GeneratorPool } from '../generator-pool.js';
import { CpuWindow, median, serverPids } from '../measure.js';
import type { ServerProcess } from '../targets/process.js';
import type { Metrics } from './traffic.js';

export interface StormPlan {
  clients: number;
  /** History messages per channel: at most half of the server's --limit, so the storm's join frames never push them out. */
  messages: number;
  payloadBytes: number;
  generators: number;
  resume: boolean;
}

/** Clients per channel, as in the idle scenario. */
const PER_CHANNEL = 10;

function quantile(sorted: number[], q: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

export async function runReconnect(pool: GeneratorPool, server: ServerProcess, plan: StormPlan): Promise<Metrics> {
  const set = pool.use(plan.generators);
  const n = plan.generators;
  const channels = Array.from({ length: Math.max(1, Math.ceil(plan.clients / PER_CHANNEL)) }, (_, i) => `storm-${i}`);
  const share = (g: number): number => Math.floor(plan.clients / n) + (g < plan.clients % n ? 1 : 0);
  try {
    await set.all((g) => ({
      type: 'fill', url: server.url, channels: channels.filter((_, i) => i % n === g), messages: plan.messages, payloadBytes: plan.payloadBytes,
    }), 'filled', 300_000);
    const cpu = new CpuWindow(serverPids(server));
    const started = performance.now();
    const replies = await set.all((g) => ({
      type: 'storm', url: server.url, channels, clients: share(g),
      firstClient: Array.from({ length: g }, (_, k) => share(k)).reduce((a, b) => a + b, 0),
      messages: plan.messages, resume: plan.resume,
    }), 'stormed', 180_000);
    const wallMs = performance.now() - started;
    const use = cpu.stop();
    const times = replies.flatMap((r) => r.timesMs).sort((a, b) => a - b);
    const failed = replies.reduce((sum, r) => sum + r.failed, 0);
    return {
      connections: plan.clients,
      failed,
      resumed: replies.reduce((sum, r) => sum + r.resumed, 0),
      lastMs: times.at(-1) ?? NaN,
      medianMs: median(times),
      p99Ms: quantile(times, 0.99),
      wallMs,
      serverCpuUsPerConnection: use.cpuUs / plan.clients,
    };
  } finally {
    await set.reset();
  }
}

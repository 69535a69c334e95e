// join-history: time from opening a connection to the last of the channel's history messages,
// for targets that keep history (Mles replays it; MQTT has retained messages).

import type { GeneratorPool } from '../generator-pool.js';
import { median } from '../measure.js';
import type { ServerProcess } from '../targets/process.js';
import type { TargetName } from '../targets/index.js';
import type { Metrics } from './traffic.js';

export async function runJoinHistory(pool: GeneratorPool, target: TargetName, server: ServerProcess, joins: number, messages: number, payloadBytes: number): Promise<Metrics> {
  const set = pool.use(1);
  try {
    const [reply] = await set.all(
      () => ({ type: 'join-history', target, url: server.url, joins, messages, payloadBytes }),
      'join-history',
      60_000 + joins * 2000,
    );
    const times = reply!.timesMs;
    return { joins: times.length, medianMs: median(times), minMs: Math.min(...times), maxMs: Math.max(...times) };
  } finally {
    await set.reset();
  }
}

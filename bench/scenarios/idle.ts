// idle: how much memory the server needs per joined connection that does nothing.

import type { GeneratorPool } from '../generator-pool.js';
import { openFilesLimit, serverPids, totalRssBytes } from '../measure.js';
import type { ServerProcess } from '../targets/process.js';
import type { TargetName } from '../targets/index.js';
import { idleShape } from './shapes.js';
import { connectShape, type Metrics } from './traffic.js';

/** Sockets one generator process holds at most. */
const PER_GENERATOR = 5000;
/** Descriptors the server needs besides its connections. */
const SPARE_FILES = 100;

/** How many connections this machine lets a run hold, and why fewer than asked if so. */
export function idleCapacity(connections: number): { connections: number; note?: string } {
  const limit = openFilesLimit();
  if (connections + SPARE_FILES <= limit) return { connections };
  return {
    connections: limit - SPARE_FILES,
    note: `open-files limit ${limit} (ulimit -n): measured ${limit - SPARE_FILES} of ${connections} connections`,
  };
}

/** Server RSS before and after `connections` joined idle clients, each reading after `settleMs`. */
export async function runIdle(pool: GeneratorPool, target: TargetName, server: ServerProcess, connections: number, generators: number, settleMs: number): Promise<Metrics> {
  const count = Math.max(generators, Math.ceil(connections / PER_GENERATOR));
  const set = pool.use(count);
  await new Promise((resolve) => setTimeout(resolve, settleMs));
  const pids = serverPids(server);
  const empty = totalRssBytes(pids);
  try {
    await connectShape(set, server, idleShape(connections, count), { target, payloadBytes: 0, rate: 'max', window: 1 });
    await new Promise((resolve) => setTimeout(resolve, settleMs));
    const loaded = totalRssBytes(pids);
    return {
      connections,
      emptyRssMB: empty / 1024 / 1024,
      rssMB: loaded / 1024 / 1024,
      rssPerConnectionKB: (loaded - empty) / connections / 1024,
    };
  } finally {
    await set.reset();
  }
}

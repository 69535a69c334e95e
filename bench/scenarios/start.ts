// start: what an empty server holds, freshly started: its RSS 1 s after it listens, and at rest,
// the lowest reading until --rest-seconds. A garbage-collected server keeps its start-up garbage
// until its idle-time collection runs (Node's, some 5 to 10 s after start-up); at rest is what
// it holds for as long as nobody connects.

import { setTimeout as sleep } from 'node:timers/promises';
import { serverPids, totalRssBytes } from '../measure.js';
import type { ServerProcess } from '../targets/process.js';
import type { Metrics } from './traffic.js';

const READING_MS = 500;
const MIB = 1024 * 1024;

export async function runStart(server: ServerProcess, restSeconds: number): Promise<Metrics> {
  await sleep(1000);
  const started = totalRssBytes(serverPids(server));
  let lowest = started;
  for (const end = Date.now() + restSeconds * 1000; Date.now() < end;) {
    await sleep(READING_MS);
    lowest = Math.min(lowest, totalRssBytes(serverPids(server)));
  }
  return { startRssMB: started / MIB, restRssMB: lowest / MIB };
}

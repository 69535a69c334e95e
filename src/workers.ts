// --workers N: this process becomes the primary of N worker processes (node:cluster), each a
// full mles node on the same Redis, all accepting connections on one shared port. The primary
// serves nothing itself: it starts the workers, replaces one that dies, and stops them all on
// SIGTERM/SIGINT.

import cluster, { type Worker } from 'node:cluster';
import type { Logger } from 'pino';

export function runWorkers(count: number, log: Logger): void {
  let stopping = false;
  const listened = new WeakSet<Worker>();
  cluster.on('listening', (worker, address) => {
    if (listened.has(worker)) return; // a worker may also listen for --redirect or --admin-port
    listened.add(worker);
    log.info({ pid: worker.process.pid, port: address.port }, 'worker listening');
  });
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) {
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit();
      return;
    }
    if (!listened.has(worker)) {
      // It never got to serve: starting another would fail the same way.
      log.error({ pid: worker.process.pid, code, signal }, 'worker failed to start');
      stop(1);
      return;
    }
    log.warn({ pid: worker.process.pid, code, signal }, 'worker died; starting another');
    cluster.fork();
  });
  const stop = (exitCode: number): void => {
    stopping = true;
    const workers = Object.values(cluster.workers ?? {});
    if (workers.length === 0) process.exit(exitCode);
    process.exitCode = exitCode;
    for (const worker of workers) worker?.process.kill('SIGTERM');
  };
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      log.info({ signal }, 'shutting down workers');
      stop(0);
    });
  }
  for (let i = 0; i < count; i++) cluster.fork();
}

// A load-generator process (started by the bench with child_process.fork, reused by every case
// of a run). It runs what the parent asks over IPC and reports back; any failure is reported as an
// error and ends the process, which fails the run.

import { Traffic } from './traffic.js';
import { joinHistory } from './history-joins.js';
import { churn } from './scenarios/churn-sessions.js';
import { fill, storm } from './storm.js';
import type { FromGenerator, ToGenerator } from './messages.js';

function send(message: FromGenerator): void {
  process.send!(message);
}

function fail(error: unknown): never {
  send({ type: 'error', message: (error as Error)?.stack ?? String(error) });
  process.exit(1);
}

process.on('uncaughtException', fail);
process.on('unhandledRejection', fail);
// The parent going away (a crashed or interrupted bench) ends the generator too.
process.on('disconnect', () => process.exit(0));

let traffic: Traffic | undefined;

function current(): Traffic {
  if (!traffic) throw new Error('no traffic set up');
  return traffic;
}

function reset(): void {
  traffic?.close();
  traffic = undefined;
}

async function handle(message: ToGenerator): Promise<void> {
  switch (message.type) {
    case 'setup':
      reset();
      traffic = new Traffic(message, send);
      await traffic.connect();
      return send({ type: 'ready' });
    case 'probe':
      return send({ type: 'probed', waiting: await current().probe() });
    case 'start':
      return current().start();
    case 'mark':
      return send({ type: 'marked', ...current().mark(message.measuring) });
    case 'credit':
      return current().credit(message.acks);
    case 'stop':
      return send({ type: 'stopped', ...current().stop() });
    case 'drain':
      return send(await current().drain(message.expected, message.timeoutMs, message.quietMs));
    case 'join-history':
      reset();
      return send({ type: 'join-history', timesMs: await joinHistory(message) });
    case 'fill':
      reset();
      await fill(message);
      return send({ type: 'filled' });
    case 'storm':
      reset();
      return send({ type: 'stormed', ...(await storm(message)) });
    case 'churn':
      reset();
      return send({ type: 'churned', ...(await churn(message)) });
    case 'reset':
      reset();
      return send({ type: 'reset' });
  }
}

process.on('message', (message: ToGenerator) => {
  handle(message).catch(fail);
});

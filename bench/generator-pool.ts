// The parent's side of the generator processes: forks them once per run (a fork with tsx takes
// about a second, so they serve every case), sends requests, awaits replies, and relays
// publisher progress between them (a publisher's recipients may live in several processes).
// A generator that fails or times out fails the pending requests and is replaced before the
// next case.

import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { ROOT, projectScript } from './targets/process.js';
import type { FromGenerator, Reply, ToGenerator } from './messages.js';

const GENERATOR = projectScript('bench/generator.ts');

interface Waiter {
  type: FromGenerator['type'];
  resolve(message: FromGenerator): void;
  reject(error: Error): void;
}

class Generator {
  readonly proc: ChildProcess;
  private readonly waiters: Waiter[] = [];
  private failure: Error | undefined;

  constructor(readonly index: number, onProgress: (from: number, acks: Array<[number, number]>) => void) {
    this.proc = fork(GENERATOR.script, [], { cwd: ROOT, execArgv: GENERATOR.execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.proc.on('message', (message: FromGenerator) => {
      if (message.type === 'progress') return onProgress(index, message.acks);
      if (message.type === 'error') return this.fail(new Error(`generator ${index}: ${message.message}`));
      const at = this.waiters.findIndex((w) => w.type === message.type);
      if (at >= 0) this.waiters.splice(at, 1)[0]!.resolve(message);
    });
    this.proc.on('exit', (code, signal) => this.fail(new Error(`generator ${index} exited (${code ?? signal})`)));
  }

  get pid(): number {
    return this.proc.pid!;
  }

  get healthy(): boolean {
    return this.failure === undefined;
  }

  post(message: ToGenerator): void {
    if (this.proc.connected) this.proc.send(message);
  }

  request<T extends FromGenerator['type']>(message: ToGenerator, reply: T, timeoutMs: number): Promise<Reply<T>> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.fail(new Error(`generator ${this.index}: no ${reply} within ${timeoutMs} ms`)), timeoutMs);
      this.waiters.push({
        type: reply,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m as Reply<T>);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.post(message);
    });
  }

  private fail(error: Error): void {
    this.failure ??= error;
    for (const waiter of this.waiters.splice(0)) waiter.reject(this.failure);
  }

  async close(): Promise<void> {
    this.fail(new Error(`generator ${this.index} closed`));
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const exited = once(this.proc, 'exit');
    if (this.proc.connected) this.proc.disconnect();
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
}

/** The generators one case uses, and the routes of its publishers' progress. */
export class GeneratorSet {
  /** Publisher id -> the generator that hosts it, and the latest progress per reporting generator. */
  private readonly host = new Map<number, number>();
  private readonly reports = new Map<number, Map<number, number>>();
  private readonly forwarded = new Map<number, number>();

  constructor(readonly generators: Generator[]) {}

  get pids(): number[] {
    return this.generators.map((g) => g.pid);
  }

  /** Declares where publisher `p` runs and which generators hold its recipients. */
  route(p: number, host: number, recipientGenerators: number[]): void {
    this.host.set(p, host);
    this.reports.set(p, new Map(recipientGenerators.map((g) => [g, 0])));
  }

  /** Sends `message(g)` to every generator and waits for each one's `reply`. */
  all<T extends FromGenerator['type']>(message: (index: number) => ToGenerator, reply: T, timeoutMs: number): Promise<Array<Reply<T>>> {
    return Promise.all(this.generators.map((g) => g.request(message(g.index), reply, timeoutMs)));
  }

  post(message: ToGenerator): void {
    for (const g of this.generators) g.post(message);
  }

  /** Closes every client of the case (before its server stops). */
  async reset(): Promise<void> {
    await this.all(() => ({ type: 'reset' }), 'reset', 30_000).catch(() => {});
  }

  relay(from: number, acks: Array<[number, number]>): void {
    const byHost = new Map<number, Array<[number, number]>>();
    for (const [p, ack] of acks) {
      const reports = this.reports.get(p);
      if (!reports) continue;
      reports.set(from, ack);
      const slowest = Math.min(...reports.values());
      if (slowest > (this.forwarded.get(p) ?? 0)) {
        this.forwarded.set(p, slowest);
        const host = this.host.get(p)!;
        if (!byHost.has(host)) byHost.set(host, []);
        byHost.get(host)!.push([p, slowest]);
      }
    }
    for (const [host, hostAcks] of byHost) this.generators[host]!.post({ type: 'credit', acks: hostAcks });
  }
}

export class GeneratorPool {
  private readonly generators: Generator[] = [];
  private current: GeneratorSet | undefined;

  /** The first `count` generators for a new case, forking or replacing them as needed. */
  use(count: number): GeneratorSet {
    for (let i = 0; i < count; i++) {
      const existing = this.generators[i];
      if (existing?.healthy) continue;
      void existing?.close();
      this.generators[i] = new Generator(i, (from, acks) => this.current?.relay(from, acks));
    }
    this.current = new GeneratorSet(this.generators.slice(0, count));
    return this.current;
  }

  async close(): Promise<void> {
    await Promise.all(this.generators.map((g) => g.close()));
  }
}

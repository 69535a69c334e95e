// The single node's broker: a channel's order is the order its joins and messages arrive in,
// kept through the history store's (possibly asynchronous) calls.
//
// Every join and message becomes a step in one FIFO. A step's store call (append, history read)
// starts at once, so an asynchronous store can batch them, but steps take effect strictly in
// arrival order and only once their store call has settled. That gives the order guarantees of
// spec section 3 for any store: a newcomer's replay holds exactly the messages queued before its
// join, and it is a member for exactly the messages queued after. With a synchronous store and
// nothing queued, a message is delivered at once and allocates nothing.

import type { Broker, BrokerChannel, ChannelSink, Sender, SessionRegistry } from '../hub/broker.js';
import type { HistoryStore, Message, MaybePromise } from '../store/store.js';

interface Step {
  settled: boolean;
  failed: unknown;
  history: Message[] | undefined;
  run(step: Step): void;
  fail(error: unknown): void;
}

export function isPromise<T>(value: MaybePromise<T>): value is Promise<T> {
  return typeof (value as Promise<T> | undefined)?.then === 'function';
}

/** Runs a store call; a synchronous throw becomes a rejection, which the pipeline handles. */
function attempt<T>(call: () => MaybePromise<T>): MaybePromise<T> {
  try {
    return call();
  } catch (error) {
    return Promise.reject(error);
  }
}

export class LocalBroker implements Broker {
  constructor(private readonly store: HistoryStore, private readonly now: () => number) {}

  open(channel: string, sink: ChannelSink): BrokerChannel {
    return new LocalChannel(channel, sink, this.store, this.now);
  }

  async close(): Promise<void> {}
}

class LocalChannel implements BrokerChannel {
  private readonly steps: Step[] = [];
  private draining = false;

  constructor(
    private readonly name: string,
    private readonly sink: ChannelSink,
    private readonly store: HistoryStore,
    private readonly now: () => number,
  ) {}

  get busy(): boolean {
    return this.steps.length > 0;
  }

  join(joiner: Sender, frame: Message | undefined): void {
    const history = attempt(() => this.store.read(this.name));
    const stored = frame && attempt(() => this.store.append(this.name, frame, this.now()));
    const both = isPromise(history) || isPromise(stored) ? Promise.all([history, stored]).then(([h]) => h) : history;
    this.enqueue(both, {
      run: (step) => this.sink.admit(joiner, step.history!),
      fail: (error) => this.sink.joinFailed(joiner, error),
    });
  }

  publish(from: Sender, message: Message): MaybePromise<void> {
    // attempt() inlined: this runs for every message, and a closure per message is not free.
    let stored: MaybePromise<void>;
    try {
      stored = this.store.append(this.name, message, this.now());
    } catch (error) {
      stored = Promise.reject(error);
    }
    // The common case (synchronous store, nothing queued) delivers at once, allocating nothing.
    if (this.steps.length === 0 && !isPromise(stored)) {
      this.sink.deliver(message, from.id);
      return stored;
    }
    this.enqueue(stored, {
      run: () => this.sink.deliver(message, from.id),
      fail: (error) => this.sink.notStored(from, error),
    });
    return stored;
  }

  close(): void {}

  private enqueue(ready: MaybePromise<Message[] | void>, actions: Pick<Step, 'run' | 'fail'>): void {
    const step: Step = { settled: true, failed: undefined, history: undefined, ...actions };
    if (isPromise(ready)) {
      step.settled = false;
      ready.then(
        (value) => this.settle(step, value ?? undefined, undefined),
        (error: unknown) => this.settle(step, undefined, error ?? new Error('store failed')),
      );
    } else {
      step.history = ready ?? undefined;
    }
    this.steps.push(step);
    this.drain();
  }

  private settle(step: Step, history: Message[] | undefined, failed: unknown): void {
    step.settled = true;
    step.history = history;
    step.failed = failed;
    this.drain();
  }

  private drain(): void {
    if (this.draining) return;
    this.draining = true;
    try {
      while (this.steps.length > 0 && this.steps[0]!.settled) {
        const step = this.steps.shift()!;
        if (step.failed === undefined) step.run(step);
        else step.fail(step.failed);
      }
    } finally {
      this.draining = false;
    }
    if (this.steps.length === 0) this.sink.settled();
  }
}

/** The single node's session registry: a set. */
export class LocalSessions implements SessionRegistry {
  private readonly keys = new Set<string>();

  claim(key: string): boolean {
    if (this.keys.has(key)) return false;
    this.keys.add(key);
    return true;
  }

  release(key: string): void {
    this.keys.delete(key);
  }

  get size(): number {
    return this.keys.size;
  }

  close(): void {
    this.keys.clear();
  }
}

// One channel: its members and its ordered pipeline of joins and messages.
//
// Every join and message of a channel becomes a step in one FIFO. A step's store call (append,
// history read) starts at once, so an asynchronous store can batch them, but steps take effect
// strictly in arrival order and only once their store call has settled. That gives the order
// guarantees of spec section 3 for any store: a newcomer's replay holds exactly the messages
// queued before its join, and it is a member for exactly the messages queued after.

import type { Member } from './member.js';
import { Close } from '../protocol/close-codes.js';
import type { Message, MaybePromise } from '../store/store.js';
import { DedupSet } from '../protocol/dedup.js';
import { siphash24Key } from '../protocol/siphash.js';

interface Step {
  settled: boolean;
  failed: unknown;
  history: Message[] | undefined;
  run(step: Step): void;
  fail(error: unknown): void;
}

function isPromise<T>(value: MaybePromise<T>): value is Promise<T> {
  return typeof (value as Promise<T> | undefined)?.then === 'function';
}

export class Channel {
  readonly members = new Set<Member>();
  /** Members whose join is queued; one that leaves meanwhile must not become a member later. */
  private readonly joining = new Set<Member>();
  private readonly steps: Step[] = [];
  private draining = false;
  /** Members that are people, not peer links; peers link a channel only while it has users. */
  private users = 0;
  /**
   * Hashes of what this channel stored, kept once peers are involved: a message reaching this
   * server both over its own link and over a neighbour's link to it is stored once (spec 8).
   */
  private stored: DedupSet | undefined;

  /**
   * `onIdle` runs when nobody is joined and nothing is queued: the hub may forget the channel.
   * `onUsers` runs when the number of joined people changes.
   */
  constructor(
    readonly name: string,
    private readonly stats: { deliveries: number },
    private readonly onIdle: () => void,
    private readonly onUsers: (users: number) => void,
    private readonly onAppendError: (error: unknown) => void,
  ) {}

  leave(member: Member): void {
    this.joining.delete(member);
    if (this.members.delete(member) && !member.peer) this.onUsers(--this.users);
    this.checkIdle();
  }

  /** Adds a peer link as a member at once: it gets later messages, not the replay. */
  attach(link: Member): void {
    this.members.add(link);
  }

  /**
   * Starts remembering what this channel stores, seeded with its history, so that repeats
   * arriving from peers can be dropped.
   */
  trackStored(history: MaybePromise<Message[]>, capacity: number): void {
    if (this.stored) return;
    const stored = new DedupSet(capacity);
    this.stored = stored;
    const seed = (messages: Message[]): void => {
      for (const message of messages) stored.add(siphash24Key(message.data));
    };
    if (isPromise(history)) history.then(seed, () => {});
    else seed(history);
  }

  /**
   * Whether to store and fan out `message` from `from`: repeats of what this channel already
   * stored are dropped when they come from a peer. People's messages are always taken (a
   * client may send the same payload twice), and remembered.
   */
  admit(from: Member, message: Message): boolean {
    if (!this.stored) return true;
    return this.stored.add(siphash24Key(message.data)) || !from.peer;
  }

  /** How many people (not peer links) are joined now. */
  get userCount(): number {
    return this.users;
  }

  /** Tells the hub it may forget this channel if nobody is joined and nothing is queued. */
  checkIdle(): void {
    if (this.members.size === 0 && this.steps.length === 0) this.onIdle();
  }

  /** Queue a message from `from`; it is fanned out once `stored` settles. */
  publish(from: Member, message: Message, stored: MaybePromise<void>): void {
    // The common case (synchronous store, nothing queued) fans out at once, allocating nothing.
    if (this.steps.length === 0 && !isPromise(stored)) return this.fanOut(from, message);
    this.enqueue(stored, {
      run: () => this.fanOut(from, message),
      // A message that could not be stored is delivered to no one; its sender must know.
      fail: (error) => {
        this.onAppendError(error);
        from.close(Close.notStored);
      },
    });
  }

  private fanOut(from: Member, message: Message): void {
    for (const member of this.members) {
      if (member !== from) member.deliver(message);
    }
    this.stats.deliveries += this.members.has(from) ? this.members.size - 1 : this.members.size;
  }

  /**
   * Queue a join: once `history` (read before the join frame was appended) and the join frame's
   * append settle, the newcomer gets the history and becomes a member.
   */
  join(
    member: Member,
    history: MaybePromise<Message[]>,
    stored: MaybePromise<void>,
    onError: (e: unknown) => void,
  ): void {
    const both = isPromise(history) || isPromise(stored)
      ? Promise.all([history, stored]).then(([h]) => h)
      : history;
    this.joining.add(member);
    this.enqueue(both, {
      run: (step) => {
        if (!this.joining.delete(member) || !member.open) return;
        member.replay(step.history!);
        this.members.add(member);
        if (!member.peer) this.onUsers(++this.users);
      },
      fail: (error) => {
        this.joining.delete(member);
        onError(error);
      },
    });
  }

  private enqueue(
    ready: MaybePromise<Message[] | void>,
    actions: Pick<Step, 'run' | 'fail'>,
  ): void {
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
    this.checkIdle();
  }
}

// The hub with real stores (spec 2 duplicates, spec 3 channels/history): no sockets, members
// are plain objects that record what the hub delivers to them.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Hub, DAY_MS, type Session } from '../src/hub/hub.js';
import type { Member } from '../src/hub/member.js';
import { MemoryStore } from '../src/store/memory.js';
import type { HistoryStore, Message } from '../src/store/store.js';
import { parseJoin, authHash, type Join } from '../src/protocol/join.js';
import { Close, CloseCode, type CloseReason } from '../src/protocol/close-codes.js';

class TestMember implements Member {
  open = true;
  session: Session | undefined;
  closedWith: CloseReason | undefined;
  readonly received: Message[] = [];
  private waiters: Array<() => void> = [];

  constructor(readonly uid: string) {}

  deliver(message: Message): void {
    this.received.push(message);
    for (const wake of this.waiters.splice(0)) wake();
  }

  replay(history: readonly Message[]): void {
    for (const message of history) this.deliver(message);
  }

  close(reason: CloseReason): void {
    this.closedWith = reason;
    this.leave();
    for (const wake of this.waiters.splice(0)) wake();
  }

  /** What a closing socket does: stop receiving, then leave the hub. */
  leave(): void {
    this.open = false;
    this.session?.leave();
  }

  texts(): string[] {
    return this.received.map((m) => m.data.toString());
  }

  async waitFor(n: number): Promise<void> {
    while (this.received.length < n) {
      if (this.closedWith) throw new Error(`closed (${this.closedWith.reason}) after ${this.received.length} of ${n}`);
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }
}

function joinFrame(uid: string, channel: string, extra: Record<string, unknown> = {}): Join {
  const result = parseJoin(Buffer.from(JSON.stringify({ uid, channel, ...extra })), false, undefined);
  assert.ok(result.ok);
  return result.join;
}

function join(hub: Hub, uid: string, channel: string, extra: Record<string, unknown> = {}): TestMember {
  const member = new TestMember(uid);
  const session = hub.join(member, joinFrame(uid, channel, extra));
  if (!('publish' in session)) assert.fail(`join of ${uid} refused: ${JSON.stringify(session)}`);
  member.session = session;
  return member;
}

const text = (s: string): Message => ({ data: Buffer.from(s), binary: false });
const binary = (bytes: number[]): Message => ({ data: Buffer.from(bytes), binary: true });
const isJoinFrame = (m: Message): boolean => !m.binary && m.data.toString().startsWith('{');

/** A deterministic PRNG (mulberry32) so a failing interleaving can be replayed from its seed. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * An asynchronous store over MemoryStore. It applies each call at once, in call order (as the
 * HistoryStore contract requires), but settles the returned promises after random delays, so
 * later calls often settle before earlier ones. With `inOrder`, calls settle in call order
 * instead, like a store that commits one queue (SQLite group commit, Redis pipeline).
 */
class DelayedStore implements HistoryStore {
  readonly inner: MemoryStore;
  private last: Promise<unknown> = Promise.resolve();
  private readonly pending = new Set<Promise<unknown>>();

  constructor(limit: number, private readonly random: () => number, private readonly inOrder: boolean) {
    this.inner = new MemoryStore(limit);
  }

  append(channel: string, message: Message, now: number): Promise<void> {
    this.inner.append(channel, message, now);
    return this.later(undefined);
  }

  read(channel: string): Promise<Message[]> {
    return this.later(this.inner.read(channel));
  }

  count(channel: string): Promise<number> {
    return this.later(this.inner.count(channel));
  }

  expire(before: number, keep: (channel: string) => boolean): Promise<string[]> {
    return this.later(this.inner.expire(before, keep));
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  /** Resolves once every call so far has settled and the hub has acted on it. */
  async settled(): Promise<void> {
    while (this.pending.size > 0) await Promise.all(this.pending);
    await new Promise((resolve) => setImmediate(resolve));
  }

  private later<T>(value: T): Promise<T> {
    // Queued calls add up their delays, so those are mostly a turn of the event loop.
    const delay = this.inOrder ? (this.random() < 0.1 ? 1 : 0) : Math.floor(this.random() * 4);
    const wait = (): Promise<T> => new Promise((resolve) => {
      if (delay === 0) setImmediate(() => resolve(value));
      else setTimeout(() => resolve(value), delay);
    });
    const settled = this.inOrder ? this.last.then(wait) : wait();
    this.last = settled;
    this.pending.add(settled);
    void settled.then(() => this.pending.delete(settled));
    return settled;
  }
}

test('spec 3: a newcomer gets the history oldest first with frame types, then its join frame is appended', () => {
  const store = new MemoryStore(200);
  const hub = new Hub({ store });
  const alice = join(hub, 'alice', 'ch');
  alice.session!.publish(text('one'));
  alice.session!.publish(binary([0, 1, 2]));
  alice.session!.publish(text('three'));
  const bob = join(hub, 'bob', 'ch', { note: 'kept verbatim' });
  assert.deepEqual(bob.received.map((m) => m.binary), [false, false, true, false]);
  assert.equal(JSON.parse(bob.texts()[0]!).uid, 'alice');
  assert.deepEqual(bob.texts().slice(1), ['one', '\u0000\u0001\u0002', 'three']);
  const stored = store.read('ch');
  assert.equal(stored.length, 5);
  assert.equal(stored[4]!.data.toString(), JSON.stringify({ uid: 'bob', channel: 'ch', note: 'kept verbatim' }));
  assert.deepEqual(alice.received, [], 'the join frame is not sent live, and nothing is echoed');
});

test('spec 3: messages go to every other member, never back to the sender', () => {
  const hub = new Hub({ store: new MemoryStore(200) });
  const [a, b, c] = ['a', 'b', 'c'].map((uid) => join(hub, uid, 'fan'));
  const historyLengths = [a!, b!, c!].map((m) => m.received.length);
  a!.session!.publish(text('from a'));
  b!.session!.publish(binary([9]));
  const live = (m: TestMember, i: number): Message[] => m.received.slice(historyLengths[i]!);
  assert.deepEqual(live(a!, 0), [binary([9])]);
  assert.deepEqual(live(b!, 1), [text('from a')]);
  assert.deepEqual(live(c!, 2), [text('from a'), binary([9])]);
  assert.equal(hub.stats.deliveries, 4);
});

test('spec 3: channels are independent', () => {
  const store = new MemoryStore(200);
  const hub = new Hub({ store });
  const red = join(hub, 'a', 'red');
  const blue = join(hub, 'b', 'blue');
  red.session!.publish(text('red message'));
  assert.deepEqual(blue.received, []);
  const blue2 = join(hub, 'c', 'blue');
  assert.deepEqual(blue2.texts().map((t) => JSON.parse(t).uid), ['b']);
  assert.equal(store.read('red').length, 2);
});

test('spec 3: history keeps the newest --limit messages, oldest dropped first', () => {
  const store = new MemoryStore(3);
  const hub = new Hub({ store });
  const alice = join(hub, 'alice', 'ch');
  for (let i = 1; i <= 5; i++) alice.session!.publish(text(`m${i}`));
  const bob = join(hub, 'bob', 'ch');
  assert.deepEqual(bob.texts(), ['m3', 'm4', 'm5']);
  assert.deepEqual(store.read('ch').map((m) => m.data.toString()).slice(0, 2), ['m4', 'm5']);
});

test('spec 3: history outlives its members, and leaving stores nothing', () => {
  const store = new MemoryStore(200);
  const hub = new Hub({ store });
  const alice = join(hub, 'alice', 'kept');
  alice.session!.publish(text('still here'));
  alice.leave();
  assert.equal(hub.channelCount, 0, 'an empty channel is forgotten by the hub');
  assert.equal(store.read('kept').length, 2, 'leaving appends nothing');
  const bob = join(hub, 'bob', 'kept');
  assert.deepEqual(bob.texts().slice(1), ['still here']);
});

test('spec 2: a duplicate (uid, channel, auth) is refused while the first keeps working', () => {
  const store = new MemoryStore(200);
  const hub = new Hub({ store });
  const first = join(hub, 'alice', 'dup');
  const refused = hub.join(new TestMember('alice'), joinFrame('alice', 'dup'));
  assert.deepEqual(refused, Close.duplicate);
  assert.equal(refused.code, 4409);
  assert.equal(hub.stats.duplicates, 1);
  assert.equal(store.read('dup').length, 1, 'the refused join frame is not stored');
  const bob = join(hub, 'bob', 'dup');
  bob.session!.publish(text('hello'));
  assert.deepEqual(first.texts(), ['hello'], 'the first session still receives');
  // Another channel, or another auth, is another session.
  join(hub, 'alice', 'elsewhere');
  join(hub, 'alice', 'dup', { auth: authHash('alice', 'dup') });
  first.leave();
  const again = join(hub, 'alice', 'dup');
  assert.equal(again.received.length, 4, 'accepted again once the first left: it gets the history');
});

test('spec 2: auth written in upper case is the same session as in lower case', () => {
  const hub = new Hub({ store: new MemoryStore(200) });
  join(hub, 'alice', 'example', { auth: '9b3b95527f7c2d80' });
  const refused = hub.join(new TestMember('alice'), joinFrame('alice', 'example', { auth: '9B3B95527F7C2D80' }));
  assert.deepEqual(refused, Close.duplicate);
});

test('spec 3: 30-day inactive cleanup with an injected clock', async () => {
  let clock = Date.UTC(2024, 0, 1);
  const store = new MemoryStore(200);
  const hub = new Hub({ store, now: () => clock });
  const start = clock;

  const quiet = join(hub, 'a', 'quiet');
  quiet.session!.publish(text('old news'));
  quiet.leave();
  const busy = join(hub, 'b', 'busy');
  busy.leave();
  const occupied = join(hub, 'c', 'occupied');

  clock = start + 10 * DAY_MS;
  const busyAgain = join(hub, 'b2', 'busy');
  busyAgain.session!.publish(text('activity resets the clock'));
  busyAgain.leave();

  clock = start + 30 * DAY_MS - 1;
  assert.deepEqual(await hub.expireIdle(), [], 'not yet 30 days');
  assert.equal(store.read('quiet').length, 2);

  clock = start + 30 * DAY_MS + 1;
  assert.deepEqual(await hub.expireIdle(), ['quiet']);
  assert.deepEqual(store.read('quiet'), []);
  assert.equal(store.read('busy').length, 3, 'active 20 days ago: kept');
  assert.equal(store.read('occupied').length, 1, 'a channel with members is kept');

  clock = start + 40 * DAY_MS + 1;
  assert.deepEqual(await hub.expireIdle(), ['busy']);

  const newcomer = join(hub, 'd', 'quiet');
  assert.deepEqual(newcomer.received, [], 'an expired channel starts empty');
  occupied.leave();
});

test('spec 3: the default expiry is 30 days', async () => {
  let clock = 0;
  const store = new MemoryStore(10);
  const hub = new Hub({ store, now: () => clock });
  join(hub, 'a', 'ch').leave();
  clock = 30 * DAY_MS;
  assert.deepEqual(await hub.expireIdle(), []);
  clock = 30 * DAY_MS + 1;
  assert.deepEqual(await hub.expireIdle(), ['ch']);
});

for (const inOrder of [false, true]) {
  const mode = inOrder ? 'settling in order' : 'settling in random order';
  test(`spec 3: async store ${mode}: newcomers get the whole history, then every later message once`, async () => {
    for (const seed of [1, 2, 3, 4, 5]) {
      const random = prng(seed);
      const store = new DelayedStore(100_000, random, inOrder);
      const hub = new Hub({ store });
      const publisher = join(hub, 'publisher', 'race');
      const newcomers: TestMember[] = [];
      const total = 300;
      for (let i = 0; i < total; i++) {
        publisher.session!.publish(i % 7 === 0 ? binary([i & 0xff, i >> 8]) : text(`m${i}`));
        if (random() < 0.05) newcomers.push(join(hub, `n${newcomers.length}`, 'race'));
        // Most messages are sent in later ticks, some in the same tick as a join.
        if (random() < 0.7) await new Promise((resolve) => setImmediate(resolve));
      }
      publisher.session!.publish(text('end'));
      const log = await store.read('race');
      assert.equal(log.length, 1 + total + 1 + newcomers.length);
      const published = log.filter((m) => !isJoinFrame(m));
      assert.equal(published.length, total + 1, `seed ${seed}: each message stored once`);
      for (const member of newcomers) {
        const at = log.findIndex((m) => !m.binary && m.data.toString().includes(`"${member.uid}"`));
        const expected = [...log.slice(0, at), ...log.slice(at + 1).filter((m) => !isJoinFrame(m))];
        await store.settled();
        assert.deepEqual(member.received, expected, `seed ${seed}: ${member.uid} joined at ${at}`);
      }
      assert.ok(newcomers.length > 3, 'the run had several newcomers');
      assert.equal(publisher.received.length, 0, 'no join frame or own message reached the publisher');
    }
  });
}

test('spec 2: frames sent right after the join, then a close, are handled in order after the join', async () => {
  const store = new DelayedStore(1000, prng(7), false);
  const hub = new Hub({ store });
  const listener = join(hub, 'listener', 'burst');
  const quick = join(hub, 'quick', 'burst');
  quick.session!.publish(text('1'));
  quick.session!.publish(binary([2]));
  quick.session!.publish(text('3'));
  quick.leave(); // the socket closed before the store answered the join
  await listener.waitFor(3);
  assert.deepEqual(listener.received, [text('1'), binary([2]), text('3')]);
  assert.deepEqual(quick.received, [], 'a member that left gets nothing');
  assert.equal((await store.read('burst')).length, 5);
});

test('spec 3: a session that leaves before its join settled never becomes a member', async () => {
  const store = new DelayedStore(1000, prng(8), true);
  const hub = new Hub({ store });
  const ghost = new TestMember('ghost');
  const session = hub.join(ghost, joinFrame('ghost', 'gone'));
  assert.ok('leave' in session);
  session.leave(); // left through the hub while its member object still reports open
  const talker = join(hub, 'talker', 'gone');
  talker.session!.publish(text('anyone?'));
  const late = join(hub, 'late', 'gone');
  await late.waitFor(3);
  assert.deepEqual(ghost.received, []);
  talker.leave();
  late.leave();
  await store.settled();
  assert.equal(hub.channelCount, 0, 'the channel is forgotten once everyone left');
});

class FailingStore extends MemoryStore {
  failReads: 'sync' | 'async' | false = false;
  failAppends: 'sync' | 'async' | false = false;

  override read(channel: string): Message[] {
    if (this.failReads === 'sync') throw new Error('disk on fire');
    if (this.failReads === 'async') return Promise.reject(new Error('disk on fire')) as unknown as Message[];
    return super.read(channel);
  }

  override append(channel: string, message: Message, now: number): void {
    if (this.failAppends === 'sync') throw new Error('disk full');
    if (this.failAppends === 'async') return Promise.reject(new Error('disk full')) as unknown as void;
    super.append(channel, message, now);
  }
}

for (const how of ['sync', 'async'] as const) {
  test(`spec 3: a store that fails (${how}) closes the joiner with 1011 and never throws into the caller`, async () => {
    const store = new FailingStore(100);
    const errors: string[] = [];
    const hub = new Hub({ store, onError: (_e, context) => errors.push(context) });
    const alice = join(hub, 'alice', 'ch');
    store.failReads = how;
    const bob = new TestMember('bob');
    const session = hub.join(bob, joinFrame('bob', 'ch'));
    assert.ok('publish' in session);
    bob.session = session;
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(bob.closedWith?.code, CloseCode.internalError);
    assert.deepEqual(bob.closedWith, Close.historyUnavailable);
    store.failReads = false;

    store.failAppends = how;
    alice.session!.publish(text('lost'));
    await new Promise((resolve) => setImmediate(resolve));
    store.failAppends = false;
    assert.equal(hub.stats.storeErrors, 2);
    assert.deepEqual(errors, ['join ch', 'append ch']);
    assert.deepEqual(alice.closedWith, Close.notStored, 'the sender of a message that was not stored is told');

    const carol = join(hub, 'carol', 'ch');
    const dave = join(hub, 'dave', 'ch');
    const historyLength = carol.received.length;
    dave.session!.publish(text('after the failure'));
    await carol.waitFor(historyLength + 1);
    assert.equal(carol.texts()[historyLength], 'after the failure', 'the channel keeps working');
    assert.ok(!carol.texts().includes('lost'), 'a message that could not be stored is not forwarded');
  });
}

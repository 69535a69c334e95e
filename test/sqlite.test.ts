// Durable history (issue 5, points 1-3): the SQLite store on its own, and a real server killed
// with SIGKILL mid-stream that must come back with every message any client had received.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { SqliteStore } from '../src/store/sqlite.js';
import { createServer } from '../src/server.js';
import { DAY_MS } from '../src/hub/hub.js';
import { runCli, startServer } from './helpers/server.js';
import { TestClient } from './helpers/client.js';

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mles-sqlite-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const text = (s: string) => ({ data: Buffer.from(s), binary: false });

test('sqlite store keeps the newest --limit messages per channel, in order, across reopen', async (t) => {
  const file = path.join(tempDir(t), 'h.db');
  const store = new SqliteStore(file, 3);
  const appends = ['a', 'b', 'c', 'd', 'e'].map((s, i) => store.append('one', text(s), 1000 + i));
  store.append('two', { data: Buffer.from([0, 1, 2]), binary: true }, 1000);
  // A read sees every append called before it, committed or not.
  assert.deepEqual(store.read('one').map((m) => m.data.toString()), ['c', 'd', 'e']);
  await Promise.all(appends);
  await store.close();

  const reopened = new SqliteStore(file, 3);
  assert.deepEqual(reopened.read('one').map((m) => m.data.toString()), ['c', 'd', 'e']);
  const [binary] = reopened.read('two');
  assert.equal(binary!.binary, true);
  assert.deepEqual([...binary!.data], [0, 1, 2]);
  await reopened.append('one', text('f'), 2000);
  assert.deepEqual(reopened.read('one').map((m) => m.data.toString()), ['d', 'e', 'f']);
  await reopened.close();
});

test('issue 14.4: old rows are deleted in bulk, within a bounded slack beyond the limits; reads honour the limits exactly, also after reopen', async (t) => {
  const file = path.join(tempDir(t), 'h.db');
  const rows = (): number => {
    const db = new Database(file, { readonly: true });
    try {
      return db.prepare('SELECT count(*) FROM messages WHERE channel = ?').pluck().get('c') as number;
    } finally {
      db.close();
    }
  };
  const limit = 100;
  const store = new SqliteStore(file, limit, { historyBytes: 0 });
  const counts: number[] = [];
  for (let i = 0; i < 500; i++) {
    await store.append('c', text(String(i)), 1000 + i);
    assert.deepEqual(store.read('c').map((m) => m.data.toString()), Array.from({ length: Math.min(i + 1, limit) }, (_, k) => String(Math.max(0, i + 1 - limit) + k)));
    if (i % 10 === 0) counts.push(store.count('c'));
  }
  assert.ok(counts.every((count) => count <= limit), 'count() is within --limit');
  await store.close();
  // Deleted in bulk: the rows kept never exceed the limit plus its slack (a quarter of it).
  const kept = rows();
  assert.ok(kept >= limit && kept <= limit + 25, `${kept} rows kept on disk`);
  const reopened = new SqliteStore(file, limit, { historyBytes: 0 });
  assert.deepEqual(reopened.read('c').map((m) => m.data.toString()), Array.from({ length: limit }, (_, k) => String(400 + k)));
  await reopened.close();

  // The byte cap likewise: 10 bytes each, a cap of 200 bytes keeps the newest 20 messages.
  const capped = new SqliteStore(file, 1000, { historyBytes: 200 });
  for (let i = 0; i < 300; i++) await capped.append('b', text(`m${String(i).padStart(9, '0')}`), 5000 + i);
  assert.deepEqual(capped.read('b').map((m) => m.data.toString()), Array.from({ length: 20 }, (_, k) => `m${String(280 + k).padStart(9, '0')}`));
  await capped.close();
  const db = new Database(file, { readonly: true });
  const bytes = db.prepare("SELECT coalesce(sum(length(data)), 0) FROM messages WHERE channel = 'b'").pluck().get() as number;
  db.close();
  assert.ok(bytes >= 200 && bytes <= 250 + 10, `${bytes} payload bytes kept on disk for a cap of 200`);
});

test('sqlite store drops channels idle past the expiry, except those kept', async (t) => {
  const store = new SqliteStore(path.join(tempDir(t), 'h.db'), 10);
  await Promise.all([
    store.append('old', text('x'), 1_000),
    store.append('busy', text('y'), 1_000),
    store.append('new', text('z'), 5_000),
  ]);
  assert.deepEqual(store.expire(2_000, (name) => name === 'busy'), ['old']);
  assert.deepEqual(store.read('old'), []);
  assert.equal(store.read('busy').length, 1);
  assert.equal(store.read('new').length, 1);
  await store.close();
});

test('sqlite store commits a turn of appends as one batch that settles together', async (t) => {
  const store = new SqliteStore(path.join(tempDir(t), 'h.db'), 100_000);
  const sent: string[][] = [[], [], []];
  const settled: string[][] = [[], [], []];
  // 1,500 appends over three channels in one turn: one transaction, not one per append.
  const all = Array.from({ length: 1_500 }, (_, i) => {
    const m = `m${i}`;
    sent[i % 3]!.push(m);
    return store.append(`c${i % 3}`, text(m), 1).then(() => settled[i % 3]!.push(m));
  });
  await Promise.all(all);
  assert.equal(store.stats.commits, 1);
  // Each channel's appends settle in the order they were called, and are stored in it.
  assert.deepEqual(settled, sent);
  sent.forEach((messages, i) => assert.deepEqual(store.read(`c${i}`).map((m) => m.data.toString()), messages));
  // The next turn is the next transaction.
  await store.append('c0', text('later'), 2);
  assert.equal(store.stats.commits, 2);
  await store.close();
});

test('a file that is not a database stops start-up with an error naming the file', async (t) => {
  const file = path.join(tempDir(t), 'history.db');
  const garbage = Buffer.alloc(8192, 'not a database, someone else\'s data ');
  fs.writeFileSync(file, garbage);
  assert.throws(() => new SqliteStore(file, 10), (error: Error) => error.message.includes(file));
  const { code, stderr } = await runCli(['--port', '0', '--history', `sqlite:${file}`]);
  assert.notEqual(code, 0);
  assert.match(stderr, /--history/);
  assert.ok(stderr.includes(file), stderr);
  assert.deepEqual(fs.readFileSync(file), garbage, 'the file must be left untouched');
});

test('issue 11.5: a second server on the same file refuses to start, naming it; the files are private', async (t) => {
  const dir = path.join(tempDir(t), 'made-by-mles');
  const file = path.join(dir, 'history.db');
  const first = await startServer(['--history', `sqlite:${file}`]);
  try {
    assert.equal(fs.statSync(dir).mode & 0o777, 0o700);
    for (const created of [file, `${file}-wal`]) assert.equal(fs.statSync(created).mode & 0o777, 0o600, created);
    assert.equal(fs.existsSync(`${file}-shm`), false, 'in exclusive mode the WAL index stays in the process');

    const second = await runCli(['--port', '0', '--history', `sqlite:${file}`]);
    assert.notEqual(second.code, 0);
    assert.match(second.stderr, /--history/);
    assert.ok(second.stderr.includes(`history database ${file} is in use by another mles process`), second.stderr);
    assert.throws(() => new SqliteStore(file, 10), /is in use by another mles process/);

    // The first server goes on storing as before.
    const alice = await TestClient.join(first.url, 'alice', 'locked');
    alice.send('kept');
    await alice.close();
    const bob = await TestClient.join(first.url, 'bob', 'locked');
    assert.equal((await bob.waitFor(2))[1]!.text, 'kept');
    await bob.close();
  } finally {
    assert.equal(await first.stop(), 0);
  }
  // The lock goes with the process that held it.
  const next = await startServer(['--history', `sqlite:${file}`]);
  assert.equal(await next.stop(), 0);
});

test('issue 11.5: a failed append fails its own channel only; the rest of the batch commits', async (t) => {
  const file = path.join(tempDir(t), 'h.db');
  await new SqliteStore(file, 10).close(); // creates the schema
  // Refuses the second row of channel "doomed", so its failure comes after one of its rows went in.
  const db = new Database(file);
  db.exec(`CREATE TRIGGER doom BEFORE INSERT ON messages WHEN NEW.channel = 'doomed' AND NEW.seq > 0
           BEGIN SELECT RAISE(ABORT, 'doomed channel refuses'); END`);
  db.close();

  const store = new SqliteStore(file, 10);
  const results = await Promise.allSettled([
    store.append('fine', text('a'), 1),
    store.append('doomed', text('x'), 1),
    store.append('doomed', text('y'), 1),
    store.append('fine', text('b'), 1),
  ]);
  assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'rejected', 'rejected', 'fulfilled']);
  assert.match(String((results[1] as PromiseRejectedResult).reason), /doomed channel refuses/);
  assert.equal(store.stats.commits, 1, 'one transaction: the failure did not split the batch');
  assert.deepEqual(store.read('doomed'), [], 'the row that went in was taken back');
  // Both channels go on from what is stored: "doomed" takes its first row again.
  await Promise.all([store.append('doomed', text('z'), 2), store.append('fine', text('c'), 2)]);
  await store.close();

  const reopened = new SqliteStore(file, 10);
  assert.deepEqual(reopened.read('fine').map((m) => m.data.toString()), ['a', 'b', 'c']);
  assert.deepEqual(reopened.read('doomed').map((m) => m.data.toString()), ['z']);
  await reopened.close();
});

test('issue 11.2: every read of a channel shares its Message objects; the cache follows appends, trims and expiry', async (t) => {
  const file = path.join(tempDir(t), 'h.db');
  const texts = (messages: Array<{ data: Buffer }>): string[] => messages.map((m) => m.data.toString());
  const store = new SqliteStore(file, 3);
  await Promise.all([store.append('c', text('a'), 1_000), store.append('c', text('b'), 1_000)]);
  const first = store.read('c');
  const second = store.read('c');
  assert.deepEqual(texts(first), ['a', 'b']);
  first.forEach((message, i) => assert.equal(second[i], message, 'the same object, payload and all'));

  const d = text('d');
  await Promise.all([store.append('c', text('c'), 1_000), store.append('c', d, 1_000)]); // --limit 3 trims 'a'
  const third = store.read('c');
  assert.deepEqual(texts(third), ['b', 'c', 'd']);
  assert.equal(third[0], first[1], 'a kept message is still the object read before');
  assert.equal(third[2], d, 'an appended message is the object appended');

  await store.append('other', text('o'), 5_000);
  assert.deepEqual(store.expire(2_000, () => false), ['c']);
  assert.deepEqual(store.read('c'), []);
  await store.append('c', text('again'), 6_000);
  assert.deepEqual(texts(store.read('c')), ['again']);
  await store.close();

  // What the cache served is what the database holds.
  const reopened = new SqliteStore(file, 3);
  assert.deepEqual(texts(reopened.read('c')), ['again']);
  assert.deepEqual(texts(reopened.read('other')), ['o']);
  await reopened.close();
});

test('issue 11.2: the read cache is bounded; the least recently read channel is read again from the database', async (t) => {
  // Room for two of these channels, not three, whatever a cached message costs besides its payload.
  const store = new SqliteStore(path.join(tempDir(t), 'h.db'), 10, { cacheBytes: 25_000 });
  await Promise.all(['a', 'b', 'c'].map((name) => store.append(name, text(name.repeat(10_000)), 1)));
  const [a] = store.read('a');
  const [b] = store.read('b');
  assert.equal(store.read('a')[0], a, 'a and b fit');
  store.read('c'); // pushes out b, the least recently read
  assert.equal(store.read('a')[0], a);
  const [bAgain] = store.read('b');
  assert.notEqual(bAgain, b);
  assert.deepEqual(bAgain, b);
  await store.close();
});

test('issue 11.13: a channel idle for over 30 days is expired as soon as a server starts on the file', async (t) => {
  const file = path.join(tempDir(t), 'history.db');
  const store = new SqliteStore(file, 10);
  await Promise.all([
    store.append('stale', text('old'), Date.now() - 31 * DAY_MS),
    store.append('fresh', text('new'), Date.now() - 29 * DAY_MS),
  ]);
  await store.close();
  const server = await createServer({ port: 0, history: `sqlite:${file}` });
  try {
    assert.deepEqual(await server.hub.store.read('stale'), []);
    assert.equal((await server.hub.store.read('fresh')).length, 1);
  } finally {
    await server.close();
  }
});

test('the CLI keeps history in SQLite by default and prints where', async () => {
  const server = await startServer();
  try {
    assert.match(server.stderr(), /history: sqlite:.*mles[/\\]history\.db/);
  } finally {
    await server.stop();
  }
});

test('spec 3 + issue 5: nothing a client received is lost when the server is SIGKILLed mid-stream', async (t) => {
  const history = `sqlite:${path.join(tempDir(t), 'history.db')}`;
  const server = await startServer(['--history', history, '--limit', '10000']);
  let restarted: Awaited<ReturnType<typeof startServer>> | undefined;
  try {
    const alice = await TestClient.join(server.url, 'alice', 'durable');
    const bob = await TestClient.join(server.url, 'bob', 'durable');
    const total = 3_000;
    for (let i = 0; i < total; i++) alice.send(`message ${i}`);
    // Kill the server while messages are still flowing: some have reached bob, some have not.
    await bob.waitFor(500);
    assert.equal(await server.stop('SIGKILL'), 'SIGKILL');
    await bob.closed;
    const seenByBob = bob.texts().filter((m) => m.startsWith('message '));
    assert.ok(seenByBob.length >= 500);

    restarted = await startServer(['--history', history, '--limit', '10000']);
    const carol = await TestClient.join(restarted.url, 'carol', 'durable');
    const replayLength = seenByBob.length + 2; // plus alice's and bob's join frames
    const replay = (await carol.waitFor(replayLength)).map((m) => m.text);
    const replayedMessages = replay.filter((m) => m.startsWith('message '));
    // Every message bob received is in the replay, in the same order, as a prefix of what was sent.
    assert.deepEqual(replayedMessages.slice(0, seenByBob.length), seenByBob);
    assert.deepEqual(replayedMessages, replayedMessages.map((_, i) => `message ${i}`));
    await carol.close();
  } finally {
    await server.stop('SIGKILL');
    await restarted?.stop();
  }
});

test('sqlite: a directory that cannot be created is an error naming the file, not a hang', { timeout: 10_000 }, () => {
  // mkdir under /proc answers ENOENT although /proc exists; Node's recursive mkdir spins on that.
  assert.throws(() => new SqliteStore('/proc/mles-no-such-dir/history.db', 10), /cannot open history database \/proc\/mles-no-such-dir\/history\.db/);
});

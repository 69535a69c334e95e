// Durable history (issue 5, points 1-3): the SQLite store on its own, and a real server killed
// with SIGKILL mid-stream that must come back with every message any client had received.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SqliteStore } from '../src/store/sqlite.js';
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
  const settled: number[] = [];
  const all = Array.from({ length: 5_000 }, (_, i) => store.append('c', text(`m${i}`), 1).then(() => settled.push(i)));
  await Promise.all(all);
  assert.equal(settled.length, 5_000);
  assert.deepEqual(settled, [...settled].sort((a, b) => a - b));
  assert.equal(store.read('c').length, 5_000);
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

// `npm run bench:store`: what one history append costs the process (user + system CPU), in the
// stores alone, next to better-sqlite3 doing nothing but the inserts and commits a store needs:
// the floor of any SQLite history with the same durability (WAL, synchronous=NORMAL, a commit
// before delivery). Shapes: appends to 1 or 500 channels, 1 or 8 to a commit (one per event-loop
// turn). Writes nothing but a temporary folder, removed at the end.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import Database from 'better-sqlite3';
import { MemoryStore } from '../src/store/memory.js';
import { SqliteStore } from '../src/store/sqlite.js';
import type { HistoryStore, Message } from '../src/store/store.js';

const LIMIT = 200;
const PAYLOAD = 64;

interface Shape {
  channels: number;
  perCommit: number;
}

/** Spreads consecutive appends over the channels the way chat does: rarely twice in a row. */
const channelOf = (i: number, channels: number): number => (i * 7_919) % channels;

const message = (): Message => ({ data: Buffer.alloc(PAYLOAD, 120), binary: false });

/** CPU µs per append of `appends` made by `step` (which makes `perCommit` of them per call). */
async function cpuPerAppend(appends: number, perCommit: number, step: () => Promise<void> | void): Promise<number> {
  const calls = Math.ceil(appends / perCommit);
  const before = process.cpuUsage();
  for (let i = 0; i < calls; i++) await step();
  const used = process.cpuUsage(before);
  return (used.user + used.system) / (calls * perCommit);
}

/** A store as the hub drives it: a turn's appends, awaited together (the commit), then the next turn. */
async function storeCase(store: HistoryStore, shape: Shape, appends: number): Promise<number> {
  let n = 0;
  const turn = async (): Promise<void> => {
    const stored = [];
    for (let i = 0; i < shape.perCommit; i++) stored.push(store.append(`channel-${channelOf(n++, shape.channels)}`, message(), Date.now()));
    await Promise.all(stored);
    await new Promise((resolve) => setImmediate(resolve));
  };
  for (let c = 0; c < shape.channels; c++) for (let i = 0; i < LIMIT; i++) store.append(`channel-${c}`, message(), Date.now());
  await turn();
  await cpuPerAppend(Math.min(appends, 2_000), shape.perCommit, turn); // warm-up
  const result = await cpuPerAppend(appends, shape.perCommit, turn);
  await store.close();
  return result;
}

/**
 * better-sqlite3 alone, the store's settings: a transaction per commit with its inserts, into
 * rows kept by channel (`clustered`: the store's table, and its oldest rows deleted as the store
 * does, 50 at a time once over --limit by a quarter) or into one table in arrival order (`log`:
 * never deleted from, which no history can afford; what the commits alone cost).
 */
function rawCase(file: string, layout: 'clustered' | 'log', shape: Shape, appends: number): Promise<number> {
  const db = new Database(file);
  db.pragma('locking_mode = EXCLUSIVE');
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.exec(layout === 'clustered'
    ? 'CREATE TABLE messages (channel TEXT NOT NULL, seq INTEGER NOT NULL, binary INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (channel, seq)) WITHOUT ROWID'
    : 'CREATE TABLE messages (id INTEGER PRIMARY KEY, channel TEXT NOT NULL, seq INTEGER NOT NULL, binary INTEGER NOT NULL, data BLOB NOT NULL)');
  const insert = db.prepare('INSERT INTO messages (channel, seq, binary, data) VALUES (?, ?, ?, ?)');
  const trim = db.prepare('DELETE FROM messages WHERE channel = ? AND seq < ?');
  const next = new Array<number>(shape.channels).fill(0);
  const append = (c: number): void => {
    const channel = `channel-${c}`;
    insert.run(channel, next[c]!++, 0, message().data);
    if (layout === 'clustered' && next[c]! % (LIMIT / 4) === 0 && next[c]! > LIMIT) trim.run(channel, next[c]! - LIMIT);
  };
  db.transaction(() => {
    for (let c = 0; c < shape.channels; c++) for (let i = 0; i < LIMIT; i++) append(c);
  })();
  let n = 0;
  const commit = db.transaction(() => {
    for (let i = 0; i < shape.perCommit; i++) append(channelOf(n++, shape.channels));
  });
  return cpuPerAppend(appends, shape.perCommit, commit).finally(() => db.close());
}

async function main(): Promise<void> {
  const options = new Command()
    .description('history append cost: the stores against better-sqlite3 alone')
    .option('--appends <n>', 'appends measured per case', (value) => {
      if (!/^\d+$/.test(value) || Number(value) < 100) throw new InvalidArgumentError('must be a whole number >= 100');
      return Number(value);
    }, 20_000)
    .parse()
    .opts<{ appends: number }>();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mles-store-floor-'));
  let files = 0;
  const file = (): string => path.join(dir, `${files++}.db`);
  try {
    const shapes: Shape[] = [
      { channels: 1, perCommit: 8 },
      { channels: 1, perCommit: 1 },
      { channels: 500, perCommit: 8 },
      { channels: 500, perCommit: 1 },
    ];
    console.log(`CPU µs per append (user + system), ${options.appends} appends per case, ${PAYLOAD}-byte messages, --limit ${LIMIT}, ${LIMIT} messages per channel before`);
    console.log('channels  per commit  memory store  sqlite store  better-sqlite3: by channel  in arrival order');
    for (const shape of shapes) {
      const memory = await storeCase(new MemoryStore(LIMIT), shape, options.appends);
      const sqlite = await storeCase(new SqliteStore(file(), LIMIT), shape, options.appends);
      const clustered = await rawCase(file(), 'clustered', shape, options.appends);
      const log = await rawCase(file(), 'log', shape, options.appends);
      console.log([
        String(shape.channels).padStart(8), String(shape.perCommit).padStart(11), memory.toFixed(2).padStart(13),
        sqlite.toFixed(2).padStart(13), clustered.toFixed(2).padStart(27), log.toFixed(2).padStart(17),
      ].join(' '));
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

await main();

// Durable history in an embedded SQLite database (better-sqlite3, WAL).
//
// Appends are group-committed: every append of one event-loop turn (capped at MAX_BATCH rows)
// goes into one transaction, and all of them settle together when it commits. The hub delivers
// a message only after its append settled, so what anyone received is on disk. WAL with
// synchronous=NORMAL survives a killed process (SIGKILL, crash), not a power loss.

import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { HistoryStore, Message } from './store.js';

/** Rows per transaction before a batch is committed without waiting for the turn to end. */
const MAX_BATCH = 2_000;

interface Pending {
  channel: string;
  message: Message;
  now: number;
}

export class StoreOpenError extends Error {
  constructor(readonly file: string, cause: unknown) {
    super(`cannot open history database ${file}: ${(cause as Error).message ?? String(cause)}`);
    this.name = 'StoreOpenError';
  }
}

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS channels (
    name TEXT PRIMARY KEY,
    last_active INTEGER NOT NULL,
    next_seq INTEGER NOT NULL
  ) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS messages (
    channel TEXT NOT NULL,
    seq INTEGER NOT NULL,
    binary INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (channel, seq)
  ) WITHOUT ROWID;
`;

function openDatabase(file: string): Database.Database {
  let db: Database.Database | undefined;
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    db = new Database(file);
    // better-sqlite3 opens any file; the first statement is what finds out it is not a database.
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.exec(SCHEMA);
    db.prepare('SELECT count(*) FROM channels').get();
    return db;
  } catch (error) {
    db?.close();
    throw new StoreOpenError(file, error);
  }
}

export class SqliteStore implements HistoryStore {
  private readonly db: Database.Database;
  private readonly nextSeq = new Map<string, number>();
  private pending: Pending[] = [];
  private batch: Promise<void> | undefined;
  private settleBatch: ((error?: unknown) => void) | undefined;
  private flushScheduled = false;
  private readonly statements;

  constructor(readonly file: string, private readonly limit: number) {
    this.db = openDatabase(file);
    this.statements = {
      insert: this.db.prepare('INSERT INTO messages (channel, seq, binary, data) VALUES (?, ?, ?, ?)'),
      trim: this.db.prepare('DELETE FROM messages WHERE channel = ? AND seq < ?'),
      upsertChannel: this.db.prepare(
        'INSERT INTO channels (name, last_active, next_seq) VALUES (?, ?, ?) ' +
          'ON CONFLICT(name) DO UPDATE SET last_active = excluded.last_active, next_seq = excluded.next_seq',
      ),
      channelSeq: this.db.prepare('SELECT next_seq FROM channels WHERE name = ?').pluck(),
      read: this.db.prepare('SELECT binary, data FROM messages WHERE channel = ? ORDER BY seq'),
      idle: this.db.prepare('SELECT name FROM channels WHERE last_active < ?').pluck(),
      dropMessages: this.db.prepare('DELETE FROM messages WHERE channel = ?'),
      dropChannel: this.db.prepare('DELETE FROM channels WHERE name = ?'),
      count: this.db.prepare('SELECT count(*) FROM messages').pluck(),
    };
  }

  append(channel: string, message: Message, now: number): Promise<void> {
    this.pending.push({ channel, message, now });
    if (!this.batch) {
      this.batch = new Promise<void>((resolve, reject) => {
        this.settleBatch = (error) => (error === undefined ? resolve() : reject(error));
      });
    }
    const batch = this.batch;
    if (this.pending.length >= MAX_BATCH) this.flush();
    else if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
    return batch;
  }

  read(channel: string): Message[] {
    this.flush(); // a read sees every append called before it
    return (this.statements.read.all(channel) as Array<{ binary: number; data: Buffer }>).map((row) => ({
      data: row.data,
      binary: row.binary === 1,
    }));
  }

  expire(before: number, keep: (channel: string) => boolean): string[] {
    this.flush();
    const idle = (this.statements.idle.all(before) as string[]).filter((name) => !keep(name));
    this.db.transaction(() => {
      for (const name of idle) {
        this.statements.dropMessages.run(name);
        this.statements.dropChannel.run(name);
        this.nextSeq.delete(name);
      }
    })();
    return idle;
  }

  countMessages(): number {
    return this.statements.count.get() as number;
  }

  async close(): Promise<void> {
    this.flush();
    this.db.close();
  }

  /** Commits every pending append in one transaction and settles their shared promise. */
  private flush(): void {
    this.flushScheduled = false;
    if (this.pending.length === 0) return;
    const rows = this.pending;
    const settle = this.settleBatch!;
    this.pending = [];
    this.batch = undefined;
    this.settleBatch = undefined;
    try {
      this.commit(rows);
      settle();
    } catch (error) {
      this.nextSeq.clear(); // the cached sequence numbers may be ahead of what was committed
      settle(error);
    }
  }

  private commit(rows: Pending[]): void {
    this.db.transaction(() => {
      const touched = new Map<string, number>();
      for (const { channel, message, now } of rows) {
        const seq = this.seqFor(channel);
        this.statements.insert.run(channel, seq, message.binary ? 1 : 0, message.data);
        this.nextSeq.set(channel, seq + 1);
        touched.set(channel, now);
      }
      for (const [channel, now] of touched) {
        const next = this.nextSeq.get(channel)!;
        this.statements.upsertChannel.run(channel, now, next);
        this.statements.trim.run(channel, next - this.limit);
      }
    })();
  }

  private seqFor(channel: string): number {
    let seq = this.nextSeq.get(channel);
    if (seq === undefined) {
      seq = (this.statements.channelSeq.get(channel) as number | undefined) ?? 0;
      this.nextSeq.set(channel, seq);
    }
    return seq;
  }
}

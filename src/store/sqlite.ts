// Durable history in an embedded SQLite database (better-sqlite3, WAL).
//
// Appends are group-committed: every append of one event-loop turn (capped at MAX_BATCH rows)
// goes into one transaction. Under load, while appends keep arriving, a commit waits a few turns
// (at most GROUP_COMMIT_MS after the previous one) and takes them all: a commit costs as much as
// ten appends. A quiet server commits at the end of the turn, and a read commits at once. If a
// commit fails, it is done again with each channel's appends in a savepoint of their own, so a
// failure (a constraint or a trigger, say) rejects that channel's appends only; the others
// commit. The hub delivers a message only after its append settled, so what anyone received is
// on disk. WAL with synchronous=NORMAL survives a killed process (SIGKILL, crash), not a power
// loss.
//
// The database is this process's alone: it is opened in exclusive locking mode and a second
// server on the same file is refused at start-up (two writers would collide on sequence numbers
// and lose messages). That also makes this process's view of each channel (next sequence number,
// row count, payload bytes) authoritative, so it is kept in memory.
//
// Reads come from a cache of recently read channels' histories, kept in step with every commit:
// every joiner of a channel gets the same Message objects instead of a copy of the history each.

import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { History } from './history.js';
import { MESSAGE_OVERHEAD, overLimits, type HistoryLimits, type HistoryStore, type Message } from './store.js';

/** Rows per transaction before a batch is committed without waiting for the turn to end. */
const MAX_BATCH = 2_000;
/** Under load, how long after the previous commit the next may wait for more appends. */
const GROUP_COMMIT_MS = 1;
/**
 * A channel's last activity is written when it is this much older than the stored one, not on
 * every commit (the 30-day expiry does not need the millisecond; an update per turn costs more
 * than the appends it goes with).
 */
const ACTIVITY_GRANULARITY_MS = 60_000;
/** The read cache's smallest default budget. */
const MIN_CACHE_BYTES = 64 * 1024 * 1024;

export interface SqliteOptions {
  /** Payload bytes kept per channel (`--history-bytes`); 0 or absent: no byte cap. */
  historyBytes?: number;
  /**
   * What the read cache may hold (payload bytes + 128 per message). Default: 64 MiB, or one
   * channel full to both limits if that is more; a channel bigger than this is read per join.
   */
  cacheBytes?: number;
}

export class StoreOpenError extends Error {
  constructor(readonly file: string, cause: unknown) {
    super(
      (cause as { code?: unknown }).code === 'SQLITE_BUSY'
        ? `history database ${file} is in use by another mles process (give each server its own --history)`
        : `cannot open history database ${file}: ${(cause as Error).message ?? String(cause)}`,
      { cause },
    );
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

/**
 * Creates `dir` and its missing parents, mode 0700. Not mkdirSync's `recursive`: where mkdir
 * answers ENOENT under an existing parent (e.g. anywhere in /proc) Node 20 retries it forever.
 */
function makeDirectory(dir: string): void {
  if (fs.existsSync(dir)) return;
  makeDirectory(path.dirname(dir));
  try {
    fs.mkdirSync(dir, { mode: 0o700 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
}

/** History is people's messages: a database this server creates is readable by its user only. */
function createPrivately(file: string): void {
  makeDirectory(path.dirname(file));
  // 'a' creates a missing file (with this mode) and leaves an existing one as it is.
  fs.closeSync(fs.openSync(file, 'a', 0o600));
}

function openDatabase(file: string): Database.Database {
  let db: Database.Database | undefined;
  try {
    createPrivately(file);
    // No busy wait: the only other holder of the lock can be another server, and it keeps it.
    db = new Database(file, { timeout: 0 });
    // Exclusive before WAL is first used: SQLite then keeps the WAL index in this process's
    // memory (no -shm file for another process to share) and never releases the lock it takes.
    db.pragma('locking_mode = EXCLUSIVE');
    // better-sqlite3 opens any file; the first statement is what finds out it is not a database
    // (or that another server holds it).
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    // Take the write lock now, at start-up, rather than at the first append.
    db.exec('BEGIN EXCLUSIVE; COMMIT');
    db.exec(SCHEMA);
    db.prepare('SELECT count(*) FROM channels').get();
    return db;
  } catch (error) {
    db?.close();
    throw new StoreOpenError(file, error);
  }
}

/** One channel's appends of one batch: they commit or fail together, and settle one promise. */
interface ChannelBatch {
  readonly messages: Message[];
  /** When the newest of them was appended: the channel's last activity. */
  now: number;
  readonly settled: Promise<void>;
  resolve(): void;
  reject(error: unknown): void;
}

function channelBatch(now: number): ChannelBatch {
  let resolve!: () => void;
  let reject!: (error: unknown) => void;
  const settled = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { messages: [], now, settled, resolve, reject };
}

/**
 * What a channel's rows may exceed its limits by before the oldest are deleted, in one go: a read
 * applies the limits itself (History.trim), so rows need not be deleted on every commit (two
 * statements per channel and turn). A quarter of each limit, at least 16 rows.
 */
function overSlack(limits: HistoryLimits, count: number, bytes: number): boolean {
  const rows = limits.limit + Math.max(16, Math.ceil(limits.limit / 4));
  const payload = limits.historyBytes + Math.ceil(limits.historyBytes / 4);
  return count > rows || (limits.historyBytes > 0 && count > 1 && bytes > payload);
}

/** What the database holds of a channel: its rows are seq next-count .. next-1. */
interface ChannelState {
  next: number;
  count: number;
  bytes: number;
  /** The last activity its channels row holds (see ACTIVITY_GRANULARITY_MS); undefined: no row yet. */
  active: number | undefined;
}

/** A channel's part of a commit: its new state. */
type Outcome = { ok: true; state: ChannelState } | { ok: false; error: unknown };

export class SqliteStore implements HistoryStore {
  /** Transactions committed: all appends of a turn share one. */
  readonly stats = { commits: 0 };
  private readonly db: Database.Database;
  private readonly limits: HistoryLimits;
  private readonly cache: ReadCache;
  /** Channels' states as of the last commit, loaded when first appended to. */
  private readonly states = new Map<string, ChannelState>();
  private pending = new Map<string, ChannelBatch>();
  private pendingRows = 0;
  private flushScheduled = false;
  /** pendingRows when the scheduled commit last looked: more since then means load. */
  private rowsSeen = 0;
  /** performance.now() of the last commit. */
  private lastCommit = -Infinity;
  private readonly statements;
  /** Commits a batch: one transaction, a savepoint in it per channel. */
  private readonly commitBatch: (batches: Map<string, ChannelBatch>) => Map<string, Outcome>;

  constructor(readonly file: string, limit: number, options: SqliteOptions = {}) {
    this.limits = { limit, historyBytes: options.historyBytes ?? 0 };
    const fullChannel = this.limits.historyBytes > 0 ? this.limits.historyBytes + limit * MESSAGE_OVERHEAD : 0;
    this.cache = new ReadCache(options.cacheBytes ?? Math.max(MIN_CACHE_BYTES, fullChannel), this.limits);
    this.db = openDatabase(file);
    this.statements = {
      insert: this.db.prepare('INSERT INTO messages (channel, seq, binary, data) VALUES (?, ?, ?, ?)'),
      // length() of a blob reads the row's header, not the payload.
      bytesBefore: this.db.prepare('SELECT coalesce(sum(length(data)), 0) FROM messages WHERE channel = ? AND seq < ?').pluck(),
      sizesFrom: this.db.prepare('SELECT length(data) FROM messages WHERE channel = ? AND seq >= ? ORDER BY seq').pluck(),
      trim: this.db.prepare('DELETE FROM messages WHERE channel = ? AND seq < ?'),
      upsertChannel: this.db.prepare(
        'INSERT INTO channels (name, last_active, next_seq) VALUES (?, ?, ?) ' +
          'ON CONFLICT(name) DO UPDATE SET last_active = excluded.last_active, next_seq = excluded.next_seq',
      ),
      channelRow: this.db.prepare('SELECT next_seq, last_active FROM channels WHERE name = ?').raw(),
      channelSize: this.db.prepare('SELECT count(*), coalesce(sum(length(data)), 0), coalesce(max(seq) + 1, 0) FROM messages WHERE channel = ?').raw(),
      read: this.db.prepare('SELECT binary, data FROM messages WHERE channel = ? ORDER BY seq').raw(),
      idle: this.db.prepare('SELECT name FROM channels WHERE last_active < ?').pluck(),
      dropMessages: this.db.prepare('DELETE FROM messages WHERE channel = ?'),
      dropChannel: this.db.prepare('DELETE FROM channels WHERE name = ?'),
      count: this.db.prepare('SELECT count(*) FROM messages').pluck(),
    };
    // Every channel in one transaction, without savepoints: a failure is rare, and then the whole
    // commit is rolled back and done again with a savepoint per channel (two statements a channel
    // less on every commit).
    const commitAll = this.db.transaction((batches: Map<string, ChannelBatch>) => {
      const outcomes = new Map<string, Outcome>();
      for (const [channel, batch] of batches) outcomes.set(channel, { ok: true, ...this.appendChannel(channel, batch) });
      return outcomes;
    });
    // Called inside a transaction, a better-sqlite3 transaction function is a savepoint.
    const appendChannel = this.db.transaction((channel: string, batch: ChannelBatch) => this.appendChannel(channel, batch));
    const commitEach = this.db.transaction((batches: Map<string, ChannelBatch>) => {
      const outcomes = new Map<string, Outcome>();
      for (const [channel, batch] of batches) {
        try {
          outcomes.set(channel, { ok: true, ...appendChannel(channel, batch) });
        } catch (error) {
          // Some errors (disk full, I/O) make SQLite roll back the whole transaction; then no
          // channel's appends are stored and all of them must fail.
          if (!this.db.inTransaction) throw error;
          outcomes.set(channel, { ok: false, error });
        }
      }
      return outcomes;
    });
    this.commitBatch = (batches) => {
      try {
        return commitAll(batches);
      } catch (error) {
        if (batches.size === 1) throw error; // its failure is the commit's
        return commitEach(batches);
      }
    };
  }

  append(channel: string, message: Message, now: number): Promise<void> {
    let batch = this.pending.get(channel);
    if (!batch) {
      batch = channelBatch(now);
      this.pending.set(channel, batch);
    }
    batch.messages.push(message);
    batch.now = now;
    if (++this.pendingRows >= MAX_BATCH) this.flush();
    else if (!this.flushScheduled) {
      this.flushScheduled = true;
      this.rowsSeen = this.pendingRows;
      setImmediate(this.commitWhenDue);
    }
    return batch.settled;
  }

  read(channel: string): Message[] {
    this.flush(); // a read sees every append called before it
    let history = this.cache.get(channel);
    if (!history) {
      history = new History();
      for (const [binary, data] of this.statements.read.all(channel) as Array<[number, Buffer]>) {
        history.push({ data, binary: binary === 1 });
      }
      history.trim(this.limits); // rows within the slack beyond the limits (see overSlack)
      this.cache.add(channel, history);
    }
    return history.toArray();
  }

  count(channel: string): number {
    // The limits apply to what is read, not to every row kept (see overSlack).
    return this.read(channel).length;
  }

  expire(before: number, keep: (channel: string) => boolean): string[] {
    this.flush();
    const idle = (this.statements.idle.all(before) as string[]).filter((name) => !keep(name));
    this.db.transaction(() => {
      for (const name of idle) {
        this.statements.dropMessages.run(name);
        this.statements.dropChannel.run(name);
      }
    })();
    for (const name of idle) {
      this.states.delete(name);
      this.cache.delete(name);
    }
    return idle;
  }

  clear(channel: string): void {
    this.flush(); // appends called before the clear are cleared too
    this.db.transaction(() => {
      this.statements.dropMessages.run(channel);
      this.statements.dropChannel.run(channel);
    })();
    // Sequence numbers restart with the channel's row; the cached history would still serve it.
    this.states.delete(channel);
    this.cache.delete(channel);
  }

  countMessages(): number {
    return this.statements.count.get() as number;
  }

  async close(): Promise<void> {
    this.flush();
    this.cache.clear();
    this.db.close();
  }

  /** Commits every pending append in one transaction and settles each channel's promise. */
  /**
   * The scheduled commit: now, unless appends arrived in the turn just gone and the previous
   * commit was less than GROUP_COMMIT_MS ago; then a turn later (setImmediate, not a timer: a
   * timer's wake-up of an idle loop costs several commits, and this only repeats under load).
   */
  private readonly commitWhenDue = (): void => {
    if (!this.flushScheduled) return; // a read or a full batch committed meanwhile
    if (this.pendingRows > this.rowsSeen && performance.now() - this.lastCommit < GROUP_COMMIT_MS) {
      this.rowsSeen = this.pendingRows;
      setImmediate(this.commitWhenDue);
      return;
    }
    this.flush();
  };

  private flush(): void {
    this.flushScheduled = false;
    if (this.pending.size === 0) return;
    const batches = this.pending;
    this.pending = new Map();
    this.pendingRows = 0;
    let outcomes: Map<string, Outcome>;
    try {
      outcomes = this.commitBatch(batches);
    } catch (error) {
      // The transaction as a whole failed: nothing of it is stored, and the states are as before.
      for (const batch of batches.values()) batch.reject(error);
      return;
    }
    this.stats.commits++;
    this.lastCommit = performance.now();
    for (const [channel, batch] of batches) {
      const outcome = outcomes.get(channel)!;
      if (!outcome.ok) {
        batch.reject(outcome.error);
        continue;
      }
      this.states.set(channel, outcome.state);
      this.cache.committed(channel, batch.messages);
      batch.resolve();
    }
  }

  /** Inserts a channel's batch (and trims it, see overSlack); works on a copy of its state, kept once committed. */
  private appendChannel(channel: string, batch: ChannelBatch): { state: ChannelState } {
    const state = { ...this.stateOf(channel) };
    for (const message of batch.messages) {
      this.statements.insert.run(channel, state.next++, message.binary ? 1 : 0, message.data);
      state.count++;
      state.bytes += message.data.length;
    }
    if (state.active === undefined || batch.now - state.active >= ACTIVITY_GRANULARITY_MS) {
      this.statements.upsertChannel.run(channel, batch.now, state.next);
      state.active = batch.now;
    }
    if (overSlack(this.limits, state.count, state.bytes)) this.trim(channel, state);
    return { state };
  }

  /**
   * Deletes the channel's oldest rows while it is over the limits (see overLimits): first those
   * beyond --limit, in one go, then one by one while over the byte cap. Its rows are contiguous
   * (seq next-count .. next-1), so the first one to keep is a sequence number.
   */
  private trim(channel: string, state: ChannelState): void {
    let keep = state.next - state.count;
    if (state.count > this.limits.limit) {
      keep += state.count - this.limits.limit;
      state.bytes -= this.statements.bytesBefore.get(channel, keep) as number;
      this.statements.trim.run(channel, keep);
      state.count = this.limits.limit;
    }
    if (overLimits(this.limits, state.count, state.bytes)) {
      for (const size of this.statements.sizesFrom.iterate(channel, keep) as Iterable<number>) {
        state.count--;
        state.bytes -= size;
        keep++;
        if (!overLimits(this.limits, state.count, state.bytes)) break;
      }
      this.statements.trim.run(channel, keep);
    }
  }

  private stateOf(channel: string): ChannelState {
    let state = this.states.get(channel);
    if (!state) {
      const [count, bytes, afterLast] = this.statements.channelSize.get(channel) as [number, number, number];
      const row = this.statements.channelRow.get(channel) as [number, number] | undefined;
      // The row's next_seq is written with its activity only: the rows may be further on.
      state = { next: Math.max(row?.[0] ?? 0, afterLast), count, bytes, active: row?.[1] };
      this.states.set(channel, state);
    }
    return state;
  }
}

/**
 * Recently read channels' histories, shared by every read of them. Bounded by what its messages
 * cost (payload + MESSAGE_OVERHEAD each): the least recently read channels go first.
 */
class ReadCache {
  /** In order of use, least recent first (a Map iterates in insertion order). */
  private readonly entries = new Map<string, History>();
  private cost = 0;

  constructor(private readonly budget: number, private readonly limits: HistoryLimits) {}

  get(channel: string): History | undefined {
    const history = this.entries.get(channel);
    if (history) {
      this.entries.delete(channel);
      this.entries.set(channel, history);
    }
    return history;
  }

  add(channel: string, history: History): void {
    if (costOf(history) > this.budget) return; // it would only push out everything else
    this.entries.set(channel, history);
    this.cost += costOf(history);
    this.evict();
  }

  /** A commit appended `messages` to `channel`: follow it, within the limits. */
  committed(channel: string, messages: Message[]): void {
    const history = this.entries.get(channel);
    if (!history) return;
    this.cost -= costOf(history);
    for (const message of messages) history.push(message);
    history.trim(this.limits);
    if (costOf(history) > this.budget) {
      this.entries.delete(channel);
      return;
    }
    this.cost += costOf(history);
    this.evict();
  }

  delete(channel: string): void {
    const history = this.entries.get(channel);
    if (!history) return;
    this.entries.delete(channel);
    this.cost -= costOf(history);
  }

  clear(): void {
    this.entries.clear();
    this.cost = 0;
  }

  private evict(): void {
    for (const [channel, history] of this.entries) {
      if (this.cost <= this.budget) return;
      this.entries.delete(channel);
      this.cost -= costOf(history);
    }
  }
}

function costOf(history: History): number {
  return history.bytes + history.size * MESSAGE_OVERHEAD;
}

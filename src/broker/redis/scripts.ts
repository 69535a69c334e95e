// What the cluster keeps in Redis, and the Lua scripts that change it atomically.
//
// Per channel (one hash tag, so a channel's keys share a Redis Cluster slot; <ns> is empty on a
// Redis server, where databases keep clusters apart, and "<n>:" on a Redis Cluster, which has
// only database 0, when its seed URL names database n):
//   mles:<ns>{<channel>}:seq      the channel's sequence counter: every stored frame takes the next number
//   mles:<ns>{<channel>}:history  list of stored frames, oldest first, each a type byte + payload
//   mles:<ns>{<channel>}:bytes    the history's payload bytes (its entries less their type bytes)
//   mles:<ns>{<channel>}:live:<db>  pub/sub (sharded on a Redis Cluster) channel carrying batches of
//                             sequenced messages to every node (pub/sub ignores databases: the
//                             number keeps clusters on one Redis apart)
//   mles:<ns>{<channel>}:session:<triplet>  a joined (uid, channel, auth), valued with its owner's token
//   mles:<ns>{<channel>}:presence  who is online: a sorted set of "<token> <uid>", one per person's
//                             session, scored with the time (Redis's clock, ms) it expires unless refreshed

import type { Message } from '../../store/store.js';

export interface ChannelKeys {
  seq: string;
  history: string;
  bytes: string;
  live: string;
  presence: string;
}

/** Where one cluster's keys live: a database (Redis server) or a namespace (Redis Cluster). */
export class KeySpace {
  private readonly prefix: string;

  constructor(private readonly db: number, namespace: number) {
    this.prefix = namespace > 0 ? `mles:${namespace}:{` : 'mles:{';
  }

  channel(channel: string): ChannelKeys {
    const prefix = `${this.prefix}${channel}}:`;
    return {
      seq: `${prefix}seq`, history: `${prefix}history`, bytes: `${prefix}bytes`, live: `${prefix}live:${this.db}`, presence: `${prefix}presence`,
    };
  }

  session(channel: string, triplet: string): string {
    return `${this.prefix}${channel}}:session:${triplet}`;
  }

  /** The channel name carried in a `live` pub/sub channel name. */
  channelOfLive(live: string): string {
    return live.slice(this.prefix.length, live.lastIndexOf('}:live:'));
  }

  /** A SCAN pattern for every channel's history key. */
  get histories(): string {
    return `${this.prefix}*}:history`;
  }

  /** A SCAN pattern for every channel's presence key. */
  get presences(): string {
    return `${this.prefix}*}:presence`;
  }

  /** The channel name in a presence key. */
  channelOfPresence(key: string): string {
    return key.slice(this.prefix.length, key.lastIndexOf('}:presence'));
  }
}

const TEXT = 0x74; // 't'
const BINARY = 0x62; // 'b'
const JOIN = 0x6a; // 'j': a join frame (text), kept in history but never delivered live

/** A message as stored in the history list: one type byte, then the payload. */
export function encodeEntry(message: Message, join = false): Buffer {
  const entry = Buffer.allocUnsafe(message.data.length + 1);
  entry[0] = join ? JOIN : message.binary ? BINARY : TEXT;
  message.data.copy(entry, 1);
  return entry;
}

export function decodeEntry(entry: Buffer): Message {
  return { data: entry.subarray(1), binary: entry[0] === BINARY };
}

export function isJoinEntry(entry: Buffer): boolean {
  return entry[0] === JOIN;
}

/** Lua's unpack() is bounded by the C stack (8000 values): batches stay well below. */
export const MAX_BATCH = 1000;

/**
 * Pushes `entries[from..]` to a history and drops its oldest entries while it is over the limits,
 * by the rule of every store (overLimits in src/store/store.ts): more than `limit` entries, or
 * more than `cap` payload bytes (0: no cap) and more than one entry. Keeps the payload total in
 * the bytes key; a history without one (kept by a version before the byte cap) is summed once.
 * Entries are pushed 1000 at a time: Lua's unpack() is bounded by the C stack.
 */
const APPEND_HISTORY = `
local function append_history(history, bytes, limit, cap, entries, from)
  local total = 0
  if redis.call('LLEN', history) > 0 then
    total = tonumber(redis.call('GET', bytes) or '-1')
    if total < 0 then
      total = 0
      for _, entry in ipairs(redis.call('LRANGE', history, 0, -1)) do total = total + #entry - 1 end
    end
  end
  local count = 0
  for i = from, #entries, 1000 do
    local last = math.min(i + 999, #entries)
    count = redis.call('RPUSH', history, unpack(entries, i, last))
    for j = i, last do total = total + #entries[j] - 1 end
  end
  while count > limit or (cap > 0 and count > 1 and total > cap) do
    total = total - #redis.call('LPOP', history) + 1
    count = count - 1
  end
  redis.call('SET', bytes, total)
end
`;

/**
 * Appends a batch of frames to a channel: assigns consecutive sequence numbers, pushes them to
 * history trimmed to the limits, refreshes the inactivity expiry and publishes the batch as ONE
 * pub/sub message (cheaper for Redis than one per frame), with PUBLISH or, on a Redis Cluster,
 * SPUBLISH: "<firstSeq> <header>\n" then per frame "<origin> <length>\n<entry>". A frame sent
 * while its sender's session claim was on its way carries the claim's key and token: it is
 * dropped unless the key holds the token. Returns { firstSeq, one '1' (stored) or '0' per frame }.
 * KEYS: seq, history, bytes. ARGV: limit, cap, expirySeconds, publish command, live channel,
 * header, then per frame: origin, guard key ('' for none), guard token, entry.
 */
export const PUBLISH_SCRIPT = `${APPEND_HISTORY}
local parts, entries, kept = {}, {}, {}
for i = 7, #ARGV, 4 do
  local guard = ARGV[i + 1]
  if guard == '' or redis.call('GET', guard) == ARGV[i + 2] then
    local entry = ARGV[i + 3]
    entries[#entries + 1] = entry
    parts[#parts + 1] = ARGV[i] .. ' ' .. #entry .. '\\n'
    parts[#parts + 1] = entry
    kept[#kept + 1] = '1'
  else
    kept[#kept + 1] = '0'
  end
end
local n = #entries
if n == 0 then return { 0, table.concat(kept) } end
local first = redis.call('INCRBY', KEYS[1], n) - n + 1
append_history(KEYS[2], KEYS[3], tonumber(ARGV[1]), tonumber(ARGV[2]), entries, 1)
for k = 1, 3 do redis.call('EXPIRE', KEYS[k], ARGV[3]) end
redis.call(ARGV[4], ARGV[5], first .. ' ' .. ARGV[6] .. '\\n' .. table.concat(parts))
return { first, table.concat(kept) }
`;

/**
 * A join, atomically: the history read and the join frame's append (published like a batch of
 * one, so the stream has no gap; nodes never deliver it live). Returns { joinSeq, history }: the
 * stream's messages with seq > joinSeq are exactly those missing from that history. A join
 * without a frame (a proven peer link) appends nothing; joinSeq is then the channel's last seq.
 * A guarded join (its session's claim was sent just before, on the same connection) counts only
 * if the session key holds its token; else it returns nil and changes nothing.
 * KEYS: seq, history, bytes, session key (seq when unguarded). ARGV: limit, cap, expirySeconds,
 * publish command, live channel, header, join entry ('' for none), guard token ('' for none).
 */
export const JOIN_SCRIPT = `${APPEND_HISTORY}
if ARGV[8] ~= '' and redis.call('GET', KEYS[4]) ~= ARGV[8] then return nil end
local history = redis.call('LRANGE', KEYS[2], 0, -1)
local entry = ARGV[7]
if entry == '' then return { tonumber(redis.call('GET', KEYS[1]) or '0'), history } end
local seq = redis.call('INCR', KEYS[1])
append_history(KEYS[2], KEYS[3], tonumber(ARGV[1]), tonumber(ARGV[2]), { entry }, 1)
for k = 1, 3 do redis.call('EXPIRE', KEYS[k], ARGV[3]) end
redis.call(ARGV[4], ARGV[5], seq .. ' ' .. ARGV[6] .. '\\nj ' .. #entry .. '\\n' .. entry)
return { seq, history }
`;

/**
 * What a node missed: the channel's last seq and the history entries after `since`, oldest
 * first (fewer if history no longer holds them all). KEYS: seq, history. ARGV: since.
 */
export const FETCH_SCRIPT = `
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local missed = last - tonumber(ARGV[1])
if missed <= 0 then return { last, {} } end
return { last, redis.call('LRANGE', KEYS[2], -missed, -1) }
`;

/** Redis's clock in milliseconds: every node's presence expires by the same clock. */
const NOW_MS = `
local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
`;

/**
 * Takes a session key for a token (only if free, with `nx` = '1'; else overwrites it, as after an
 * outage) and, for a person's session, lists it in the channel's presence. Returns 1 if taken.
 * KEYS: session, presence. ARGV: token, ttlMs, presence member ('' for none), nx.
 */
export const CLAIM_SCRIPT = `${NOW_MS}
local ttl = tonumber(ARGV[2])
local taken
if ARGV[4] == '1' then taken = redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl, 'NX')
else taken = redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl) end
if not taken then return 0 end
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[2], now_ms() + ttl, ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return 1
`;

/**
 * Keeps a channel's sessions of this node alive for another TTL, and drops presence entries
 * whose node stopped refreshing them. KEYS: presence, then the session keys. ARGV: ttlMs, then
 * per session its presence member ('' for none).
 */
export const REFRESH_SCRIPT = `${NOW_MS}
local ttl = tonumber(ARGV[1])
local now = now_ms()
local people = 0
for i = 2, #KEYS do
  if redis.call('PEXPIRE', KEYS[i], ttl) == 1 and ARGV[i] ~= '' then
    redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
    people = people + 1
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if people > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return people
`;

/**
 * Deletes a session key, and its presence entry, only if this node still owns it.
 * KEYS: session, presence. ARGV: token, presence member ('' for none).
 */
export const RELEASE_SCRIPT = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' then redis.call('ZREM', KEYS[2], ARGV[2]) end
return redis.call('DEL', KEYS[1])
`;

/** Who is online on a channel: its live presence entries. KEYS: presence. */
export const PRESENCE_SCRIPT = `${NOW_MS}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms())
return redis.call('ZRANGE', KEYS[1], 0, -1)
`;

/**
 * Sends a message on a channel's stream that is not a batch (an operator's disconnect); KEYS[1]
 * only places the script on the channel's shard. KEYS: seq. ARGV: publish command, live channel, payload.
 */
export const SIGNAL_SCRIPT = `
redis.call(ARGV[1], ARGV[2], ARGV[3])
return 0
`;

/**
 * After an outage: if Redis lost the channel (its counter is behind what this node saw, and its
 * history is empty, as after a restart without persistence), put back the history this node
 * holds, so nothing its members received vanishes; and never let the counter go backwards.
 * KEYS: seq, history, bytes. ARGV: lastSeq, limit, cap, expirySeconds, entries...
 */
export const RESEED_SCRIPT = `${APPEND_HISTORY}
local seen = tonumber(ARGV[1])
if tonumber(redis.call('GET', KEYS[1]) or '0') >= seen then return 0 end
redis.call('SET', KEYS[1], seen)
local pushed = 0
if redis.call('LLEN', KEYS[2]) == 0 and #ARGV > 4 then
  append_history(KEYS[2], KEYS[3], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV, 5)
  pushed = #ARGV - 4
end
for k = 1, 3 do redis.call('EXPIRE', KEYS[k], ARGV[4]) end
return pushed
`;

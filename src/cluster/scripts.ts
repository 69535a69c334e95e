// What the cluster keeps in Redis, and the Lua scripts that change it atomically.
//
// Per channel (one hash tag, so a channel's keys share a Redis Cluster slot):
//   mles:{<channel>}:seq      the channel's sequence counter: every stored frame takes the next number
//   mles:{<channel>}:history  list of stored frames, oldest first, each a type byte ('t'/'b') + payload
//   mles:{<channel>}:bytes    the history's payload bytes (its entries less their type bytes)
//   mles:{<channel>}:live:<db>  pub/sub channel carrying batches of sequenced messages to every
//                             node (pub/sub ignores databases: the number keeps clusters on one Redis apart)
//   mles:{<channel>}:session:<triplet>  a joined (uid, channel, auth), valued with its owner's token

import type { Message } from '../store/store.js';

export interface ChannelKeys {
  seq: string;
  history: string;
  bytes: string;
  live: string;
}

export function channelKeys(channel: string, db: number): ChannelKeys {
  const prefix = `mles:{${channel}}:`;
  return { seq: `${prefix}seq`, history: `${prefix}history`, bytes: `${prefix}bytes`, live: `${prefix}live:${db}` };
}

export function sessionKeyOf(channel: string, triplet: string): string {
  return `mles:{${channel}}:session:${triplet}`;
}

/** The channel name carried in a `live` pub/sub channel name. */
export function channelOfLive(live: string): string {
  return live.slice('mles:{'.length, live.lastIndexOf('}:live:'));
}

const TEXT = 0x74; // 't'
const BINARY = 0x62; // 'b'

/** A message as stored in the history list: one type byte, then the payload. */
export function encodeEntry(message: Message): Buffer {
  const entry = Buffer.allocUnsafe(message.data.length + 1);
  entry[0] = message.binary ? BINARY : TEXT;
  message.data.copy(entry, 1);
  return entry;
}

export function decodeEntry(entry: Buffer): Message {
  return { data: entry.subarray(1), binary: entry[0] === BINARY };
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
 * pub/sub message (cheaper for Redis than one per frame):
 *   "<firstSeq> <header>\n" then per frame "<origin> <length>\n<entry>".
 * A frame sent while its sender's join is still in flight carries a guard (its session key and
 * token): it is dropped unless that join was accepted.
 * KEYS: seq, history, bytes. ARGV: limit, cap, expirySeconds, live channel, header, then per
 * frame: origin, guard key ('' for none), guard token, entry.
 */
export const PUBLISH_SCRIPT = `${APPEND_HISTORY}
local parts, entries = {}, {}
for i = 6, #ARGV, 4 do
  local guard = ARGV[i + 1]
  if guard == '' or redis.call('GET', guard) == ARGV[i + 2] then
    local entry = ARGV[i + 3]
    entries[#entries + 1] = entry
    parts[#parts + 1] = ARGV[i] .. ' ' .. #entry .. '\\n'
    parts[#parts + 1] = entry
  end
end
local n = #entries
if n == 0 then return 0 end
local first = redis.call('INCRBY', KEYS[1], n) - n + 1
append_history(KEYS[2], KEYS[3], tonumber(ARGV[1]), tonumber(ARGV[2]), entries, 1)
for k = 1, 3 do redis.call('EXPIRE', KEYS[k], ARGV[3]) end
redis.call('PUBLISH', ARGV[4], first .. ' ' .. ARGV[5] .. '\\n' .. table.concat(parts))
return first
`;

/**
 * A join, atomically: the cluster-wide duplicate check (a session key with a TTL), the history
 * read, and the join frame's append. Returns nil for a duplicate, else { joinSeq, history }:
 * the live stream's messages with seq > joinSeq are exactly those missing from that history.
 * KEYS: session, seq, history, bytes. ARGV: token, ttlMs, join entry, limit, cap, expirySeconds.
 */
export const JOIN_SCRIPT = `${APPEND_HISTORY}
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return nil end
local history = redis.call('LRANGE', KEYS[3], 0, -1)
local seq = redis.call('INCR', KEYS[2])
append_history(KEYS[3], KEYS[4], tonumber(ARGV[4]), tonumber(ARGV[5]), { ARGV[3] }, 1)
for k = 2, 4 do redis.call('EXPIRE', KEYS[k], ARGV[6]) end
return { seq, history }
`;

/** Deletes a session key only if this node still owns it. KEYS: session. ARGV: token. */
export const RELEASE_SCRIPT = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
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

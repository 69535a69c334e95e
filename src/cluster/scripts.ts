// What the cluster keeps in Redis, and the Lua scripts that change it atomically.
//
// Per channel (one hash tag, so a channel's keys share a Redis Cluster slot):
//   mles:{<channel>}:seq      the channel's sequence counter: every stored frame takes the next number
//   mles:{<channel>}:history  list of stored frames, oldest first, each a type byte ('t'/'b') + payload
//   mles:{<channel>}:live:<db>  pub/sub channel carrying batches of sequenced messages to every
//                             node (pub/sub ignores databases: the number keeps clusters on one Redis apart)
//   mles:{<channel>}:session:<triplet>  a joined (uid, channel, auth), valued with its owner's token

import type { Message } from '../store/store.js';

export interface ChannelKeys {
  seq: string;
  history: string;
  live: string;
}

export function channelKeys(channel: string, db: number): ChannelKeys {
  const prefix = `mles:{${channel}}:`;
  return { seq: `${prefix}seq`, history: `${prefix}history`, live: `${prefix}live:${db}` };
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
 * Appends a batch of frames to a channel: assigns consecutive sequence numbers, pushes them to
 * history trimmed to the limit, refreshes the inactivity expiry and publishes the batch as ONE
 * pub/sub message (cheaper for Redis than one per frame):
 *   "<firstSeq> <header>\n" then per frame "<origin> <length>\n<entry>".
 * A frame sent while its sender's join is still in flight carries a guard (its session key and
 * token): it is dropped unless that join was accepted.
 * KEYS: seq, history. ARGV: limit, expirySeconds, live channel, header, then per frame: origin,
 * guard key ('' for none), guard token, entry.
 */
export const PUBLISH_SCRIPT = `
local parts, entries = {}, {}
for i = 5, #ARGV, 4 do
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
redis.call('RPUSH', KEYS[2], unpack(entries))
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[1]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[3], first .. ' ' .. ARGV[4] .. '\\n' .. table.concat(parts))
return first
`;

/**
 * A join, atomically: the cluster-wide duplicate check (a session key with a TTL), the history
 * read, and the join frame's append. Returns nil for a duplicate, else { joinSeq, history }:
 * the live stream's messages with seq > joinSeq are exactly those missing from that history.
 * KEYS: session, seq, history. ARGV: token, ttlMs, join entry, limit, expirySeconds.
 */
export const JOIN_SCRIPT = `
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return nil end
local history = redis.call('LRANGE', KEYS[3], 0, -1)
local seq = redis.call('INCR', KEYS[2])
redis.call('RPUSH', KEYS[3], ARGV[3])
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[4]), -1)
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[5])
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
 * KEYS: seq, history. ARGV: lastSeq, limit, expirySeconds, entries...
 */
export const RESEED_SCRIPT = `
local seen = tonumber(ARGV[1])
if tonumber(redis.call('GET', KEYS[1]) or '0') >= seen then return 0 end
redis.call('SET', KEYS[1], seen)
local pushed = 0
if redis.call('LLEN', KEYS[2]) == 0 and #ARGV > 3 then
  for i = 4, #ARGV, 1000 do
    redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
  end
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
  pushed = #ARGV - 3
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return pushed
`;

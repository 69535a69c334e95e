// The proof that a join frame's `"peer": true` comes from a server linking to this one, not from
// a person who wants to join unseen (issue 11, finding 10). Servers that share the secret
// MLES_PEER_KEY put `"peerauth": "<hex>"` in their links' join frames:
//
//   peerauth = hex(HMAC-SHA256(key = UTF-8 bytes of MLES_PEER_KEY,
//                              message = "mles-peer-v1:" ‖ decimal length of uid ‖ ":" ‖ uid ‖ channel))
//
// The length prefix makes (uid "ab", channel "c") and ("a", "bc") different messages. Only a
// join whose proof checks out stays out of history. The proof is the same on every connection
// (a Mles server says nothing before the join, so there is no challenge to answer): whoever reads
// a link's join frame off the wire can reuse it for that uid and channel, hence wss:// between
// peers. Kept apart from src/protocol/join.ts, which the browser client kit imports, because it
// needs node:crypto.

import { createHmac, timingSafeEqual } from 'node:crypto';
import type { Join } from './join.js';

const PROOF = /^[0-9a-fA-F]{64}$/;

function mac(uid: string, channel: string, peerKey: string): Buffer {
  return createHmac('sha256', peerKey).update(`mles-peer-v1:${uid.length}:${uid}${channel}`).digest();
}

/** The `peerauth` value a link joining `channel` as `uid` sends: 64 lower-case hex digits. */
export function peerProof(uid: string, channel: string, peerKey: string): string {
  return mac(uid, channel, peerKey).toString('hex');
}

/**
 * True if `join` is a peer link's join proven with `peerKey` (hex compared case-insensitively,
 * in constant time). Without a peer key nothing is proven: every join is stored.
 */
export function provesPeer(join: Pick<Join, 'uid' | 'channel' | 'peer' | 'peerAuth'>, peerKey: string | undefined): boolean {
  if (!join.peer || peerKey === undefined || join.peerAuth === undefined || !PROOF.test(join.peerAuth)) return false;
  return timingSafeEqual(Buffer.from(join.peerAuth, 'hex'), mac(join.uid, join.channel, peerKey));
}

// The first frame of a Mles session (spec section 2): parsing, validation and auth.

import { siphash24Hex } from './siphash.js';
import { Close, invalidJoin, type CloseReason } from './close-codes.js';

/** A validated join frame. `text` is the frame exactly as received; it goes into history. */
export interface Join {
  uid: string;
  channel: string;
  auth: string | undefined;
  /**
   * The frame claims to come from a server linking to this one (spec section 8); other servers
   * ignore the field. Anyone can claim it: only `peerAuth` proves it (src/protocol/peer-proof.ts).
   */
  peer: boolean;
  /** The `peerauth` field, a link's proof of the shared MLES_PEER_KEY, if the frame has one. */
  peerAuth: string | undefined;
  text: Buffer;
}

export type JoinResult = { ok: true; join: Join } | { ok: false; close: CloseReason };

/** Join frames are tiny JSON objects; anything larger is refused before parsing. */
export const MAX_JOIN_BYTES = 64 * 1024;

const ASCII = /^[\x00-\x7f]+$/;
const HEX = /^[0-9a-fA-F]{1,16}$/;

const encoder = new TextEncoder();

/** The auth value a client must send: SipHash-2-4 (zero key) of uid ‖ channel ‖ key. */
export function authHash(uid: string, channel: string, key?: string): string {
  return siphash24Hex(encoder.encode(uid + channel + (key ?? '')));
}

/** A uid or a channel as the protocol has them: a non-empty ASCII string. */
export function isName(value: string): boolean {
  return ASCII.test(value);
}

/** Whether `auth` is the auth hash of (uid, channel, key), compared as numbers: case and leading zeros do not matter. */
export function authMatches(auth: string, uid: string, channel: string, key: string | undefined): boolean {
  return HEX.test(auth) && BigInt('0x' + auth) === BigInt('0x' + authHash(uid, channel, key));
}

function requiredAscii(value: unknown, name: string): string | CloseReason {
  if (value === undefined) return invalidJoin(`missing ${name}`);
  if (typeof value !== 'string') return invalidJoin(`${name} must be a string`);
  if (value.length === 0) return invalidJoin(`empty ${name}`);
  if (!isName(value)) return invalidJoin(`${name} must be ASCII`);
  return value;
}

/**
 * Validate a first frame. `key` is the server's MLES_KEY: when set, auth is required and keyed;
 * when unset, auth is optional but must match the unkeyed hash if present.
 */
export function parseJoin(data: Buffer, isBinary: boolean, key: string | undefined): JoinResult {
  if (isBinary) return { ok: false, close: Close.binaryJoin };
  if (data.length > MAX_JOIN_BYTES) return { ok: false, close: Close.joinTooBig };
  let frame: unknown;
  try {
    frame = JSON.parse(data.toString('utf8'));
  } catch {
    return { ok: false, close: invalidJoin('not JSON') };
  }
  if (typeof frame !== 'object' || frame === null || Array.isArray(frame)) {
    return { ok: false, close: invalidJoin('not a JSON object') };
  }
  const fields = frame as Record<string, unknown>;
  const uid = requiredAscii(fields.uid, 'uid');
  if (typeof uid !== 'string') return { ok: false, close: uid };
  const channel = requiredAscii(fields.channel, 'channel');
  if (typeof channel !== 'string') return { ok: false, close: channel };
  const auth = fields.auth;
  if (auth !== undefined && typeof auth !== 'string') {
    return { ok: false, close: invalidJoin('auth must be a string') };
  }
  if (auth === undefined ? key !== undefined : !authMatches(auth, uid, channel, key)) {
    return { ok: false, close: Close.authFailed };
  }
  // A `peerauth` that is not a string proves nothing; like any unknown field it is ignored.
  const peerAuth = typeof fields.peerauth === 'string' ? fields.peerauth : undefined;
  return { ok: true, join: { uid, channel, auth, peer: fields.peer === true, peerAuth, text: data } };
}

/** The identity the duplicate-session rule compares: the (uid, channel, auth) triplet. */
export function sessionKey(join: Pick<Join, 'uid' | 'channel' | 'auth'>): string {
  // Auth is a hex number: the same value written in another case or with leading zeros is the same auth.
  const auth = join.auth?.toLowerCase().replace(/^0+(?=.)/, '') ?? null;
  return JSON.stringify([join.uid, join.channel, auth]);
}

/**
 * The join frame a peer link sends. The extra `peer` field marks it as a server rather than a
 * person: this server drops repeats of what it already stored from such members, and keeps the
 * frame out of history only when `peerAuth` (the proof of MLES_PEER_KEY) checks out. Servers
 * that do not know the fields ignore them, as the spec says.
 */
export function linkJoinFrame(uid: string, channel: string, key: string | undefined, peerAuth: string | undefined): string {
  const auth = key === undefined ? {} : { auth: authHash(uid, channel, key) };
  const proof = peerAuth === undefined ? {} : { peerauth: peerAuth };
  return JSON.stringify({ uid, channel, ...auth, peer: true, ...proof });
}

/** True for a peer link's join frame, as found in a peer's history replay. */
export function isLinkJoinFrame(data: Buffer): boolean {
  if (data.length > MAX_JOIN_BYTES || data[0] !== 0x7b /* { */ || !data.includes('"peer":true')) return false;
  try {
    const frame = JSON.parse(data.toString('utf8')) as Record<string, unknown>;
    return frame.peer === true && typeof frame.uid === 'string' && typeof frame.channel === 'string';
  } catch {
    return false;
  }
}

// What travels on a channel's stream: mostly the batches of frames the publish and join scripts
// send, parsed back into frames with their sequence numbers and origins; now and then a signal.

import { decodeEntry, isJoinEntry } from './scripts.js';
import type { Message } from '../../store/store.js';

/** Origin of a join frame: stored in history, never delivered live. */
export const JOIN_ORIGIN = 'j';

/** The batch header's flag: frames sent live, or frames replayed from a node's outage. */
export const enum BatchKind {
  live = 'l',
  replay = 'r',
}

/** The header's flag of a signal: an operator disconnects a uid (the payload) on every node. */
const DISCONNECT = 'd';

/** A signal on a channel's stream: no seq, no frames, outside the channel's order. */
export interface Disconnect {
  kind: typeof DISCONNECT;
  uid: string;
}

export interface SequencedMessage {
  seq: number;
  /** The sending member's id on the origin node, or JOIN_ORIGIN. */
  origin: string;
  message: Message;
}

export interface Batch {
  node: string;
  kind: BatchKind;
  messages: SequencedMessage[];
}

const NEWLINE = 0x0a;

function line(buffer: Buffer, start: number): [string[], number] {
  const end = buffer.indexOf(NEWLINE, start);
  if (end < 0) throw new Error('truncated cluster batch');
  return [buffer.toString('latin1', start, end).split(' '), end + 1];
}

/**
 * A batch: "<firstSeq> <node> <kind>\n" then, per frame, "<origin> <length>\n<entry>"; or a
 * signal: "0 <node> d\n<uid>".
 */
export function parseStream(buffer: Buffer): Batch | Disconnect {
  const [header, start] = line(buffer, 0);
  const [first, node, kind] = header as [string, string, BatchKind | typeof DISCONNECT];
  if (kind === DISCONNECT) return { kind, uid: buffer.toString('latin1', start) };
  let at = start;
  const messages: SequencedMessage[] = [];
  let seq = Number(first);
  while (at < buffer.length) {
    const [[origin, length], entryStart] = line(buffer, at) as [[string, string], number];
    at = entryStart + Number(length);
    messages.push({ seq: seq++, origin, message: decodeEntry(buffer.subarray(entryStart, at)) });
  }
  return { node, kind, messages };
}

/** History entries fetched after `since`, as sequenced messages whose origin is unknown. */
export function sequenceEntries(entries: Buffer[], last: number): SequencedMessage[] {
  const first = last - entries.length + 1;
  return entries.map((entry, i) => ({
    seq: first + i,
    origin: isJoinEntry(entry) ? JOIN_ORIGIN : '',
    message: decodeEntry(entry),
  }));
}

export function batchHeader(node: string, kind: BatchKind): string {
  return `${node} ${kind}`;
}

export function disconnectSignal(node: string, uid: string): string {
  return `0 ${node} ${DISCONNECT}\n${uid}`;
}

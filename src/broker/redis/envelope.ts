// The pub/sub message the publish and join scripts send for a batch of frames, parsed back into
// frames with their sequence numbers and origins.

import { decodeEntry, isJoinEntry } from './scripts.js';
import type { Message } from '../../store/store.js';

/** Origin of a join frame: stored in history, never delivered live. */
export const JOIN_ORIGIN = 'j';

/** The batch header's flag: frames sent live, or frames replayed from a node's outage. */
export const enum BatchKind {
  live = 'l',
  replay = 'r',
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

/** "<firstSeq> <node> <kind>\n" then, per frame, "<origin> <length>\n<entry>". */
export function parseBatch(buffer: Buffer): Batch {
  const [header, start] = line(buffer, 0);
  const [first, node, kind] = header as [string, string, BatchKind];
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

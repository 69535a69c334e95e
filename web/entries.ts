// What the demo shows for each received message. Mles carries opaque payloads, so the demo
// sends its chat lines as small JSON objects, and recognises join frames ({uid, channel}) in
// the history. `time` keeps two identical lines distinct (they would otherwise be deduplicated).

import type { MlesMessage } from '../client/index.js';

export type Entry =
  | { kind: 'join'; uid: string }
  | { kind: 'chat'; uid: string; text: string; time: number }
  | { kind: 'other'; text: string };

export function encodeChat(uid: string, text: string, time: number): string {
  return JSON.stringify({ uid, text, time });
}

function parseObject(text: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

export function toEntry(message: MlesMessage): Entry {
  if (message.type === 'binary') return { kind: 'other', text: `[binary message, ${message.data.length} bytes]` };
  const fields = parseObject(message.text);
  if (fields && typeof fields.uid === 'string') {
    if (typeof fields.text === 'string') {
      return { kind: 'chat', uid: fields.uid, text: fields.text, time: typeof fields.time === 'number' ? fields.time : Date.now() };
    }
    if (typeof fields.channel === 'string') return { kind: 'join', uid: fields.uid };
  }
  return { kind: 'other', text: message.text };
}

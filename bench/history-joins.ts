// The generator side of join-history: per join, a fresh channel is filled with `messages`
// messages (kept as history by Mles, as retained messages by MQTT), then a new client opens a
// connection and the time from opening to the last history message is measured.

import { clockUs, decode, encode } from './payload.js';
import { PROTOCOLS, type BenchClient, type Protocol } from './protocols.js';
import type { JoinHistoryRequest } from './messages.js';

const TIMEOUT_MS = 30_000;

/** Connects a client and resolves once it has received `count` data messages. */
function receiver(protocol: Protocol, url: string, uid: string, channel: string, count: number): { client: BenchClient; all: Promise<void> } {
  let received = 0;
  let done: () => void = () => {};
  const all = new Promise<void>((resolve, reject) => {
    done = resolve;
    setTimeout(() => reject(new Error(`${uid}: ${received} of ${count} history messages in ${TIMEOUT_MS} ms`)), TIMEOUT_MS).unref();
  });
  const client = protocol.connect(url, { uid, channel, history: true }, {
    message: (payload) => {
      if (decode(payload)?.kind === 'data' && ++received === count) done();
    },
    closed: () => {},
  });
  return { client, all };
}

/**
 * Fills `channel` with `messages` messages (history for Mles, retained messages for MQTT); resolves
 * once a witness has seen them all live, so all of them are stored.
 */
export async function fillChannel(protocol: Protocol, url: string, channel: string, messages: number, payloadBytes: number): Promise<void> {
  const witness = receiver(protocol, url, `witness-${channel}`, channel, messages);
  await witness.client.ready;
  const filler = protocol.connect(url, { uid: `filler-${channel}`, channel }, { message: () => {}, closed: () => {} });
  await filler.ready;
  for (let k = 0; k < messages; k++) filler.send(encode('data', 0, k, payloadBytes), k);
  await witness.all;
  filler.close();
  witness.client.close();
}

/** Milliseconds from open to the last history message, one entry per join. */
export async function joinHistory(request: JoinHistoryRequest): Promise<number[]> {
  const protocol = PROTOCOLS[request.target];
  const times: number[] = [];
  for (let j = 0; j < request.joins; j++) {
    const channel = `history-${j}`;
    await fillChannel(protocol, request.url, channel, request.messages, request.payloadBytes);

    const started = clockUs();
    const joiner = receiver(protocol, request.url, `joiner-${j}`, channel, request.messages);
    await joiner.all;
    times.push((clockUs() - started) / 1000);
    joiner.client.close();
  }
  return times;
}

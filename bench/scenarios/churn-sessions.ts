// The generator side of churn: short sessions, two at a time per channel, as fast as they go.
// A pair is two clients of one channel: b connects and joins, then a; each publishes one message
// and reads the other's (live, or for Mles possibly from the history replay), then both leave.
// Every other Mles pair leaves abruptly (the socket dropped, as a phone going out of range does)
// instead of with a close handshake.

import WebSocket from 'ws';
import { decode, encode } from '../payload.js';
import { PROTOCOLS, type BenchClient, type Protocol } from '../protocols.js';
import type { ChurnRequest, Reply } from '../messages.js';

/** A pair that has not finished in this time failed (both clients are dropped). */
const PAIR_TIMEOUT_MS = 15_000;

interface Session {
  /** Resolves once connected and joined, as far as the protocol tells. */
  ready: Promise<void>;
  send(payload: Buffer): void;
  /** Leaves: a close handshake, or with `abrupt` a dropped connection. */
  leave(abrupt: boolean): void;
  /** Resolves once the partner's message arrived. */
  read: Promise<void>;
}

/** An Mles client of its own (the bench's only terminates), so that half the sessions close cleanly. */
function mlesClient(url: string, uid: string, channel: string, onMessage: (payload: Uint8Array) => void, onClosed: () => void): Omit<Session, 'read'> {
  const ws = new WebSocket(url, ['mles-websocket'], { perMessageDeflate: false });
  const ready = new Promise<void>((resolve, reject) => {
    ws.once('open', () => {
      ws.send(JSON.stringify({ uid, channel }));
      ws.on('close', onClosed);
      resolve();
    });
    ws.once('error', reject);
    ws.once('close', () => reject(new Error(`${uid}: closed before it opened`)));
  });
  ready.catch(() => {});
  ws.on('error', () => {});
  ws.on('message', (data: Buffer, isBinary: boolean) => {
    if (isBinary) onMessage(data);
  });
  return {
    ready,
    send: (payload) => ws.send(payload, { binary: true }),
    leave: (abrupt) => (abrupt || ws.readyState !== WebSocket.OPEN ? ws.terminate() : ws.close(1000)),
  };
}

function session(protocol: Protocol, request: ChurnRequest, uid: string, channel: string, partner: number, pair: number): Session {
  let done: () => void = () => {};
  let fail: (error: Error) => void = () => {};
  const read = new Promise<void>((resolve, reject) => {
    done = resolve;
    fail = reject;
  });
  read.catch(() => {});
  const message = (payload: Uint8Array): void => {
    const m = decode(payload);
    if (m?.kind === 'data' && m.publisher === partner && m.seq === pair) done();
  };
  const closed = (): void => fail(new Error(`${uid}: closed by the server`));
  if (protocol.history === 'replay') return { ...mlesClient(request.url, uid, channel, message, closed), read };
  // The other targets through the bench's own clients (their close is what a client library does).
  const client: BenchClient = protocol.connect(request.url, { uid, channel }, { message, closed });
  return { ready: client.ready, send: (payload) => client.send(payload), leave: () => client.close(), read };
}

async function runPair(protocol: Protocol, request: ChurnRequest, pair: number): Promise<void> {
  const channel = `churn-${pair % request.channels}`;
  const [aId, bId] = [2 * pair, 2 * pair + 1];
  const b = session(protocol, request, `churn-${pair}-b`, channel, aId, pair);
  let a: Session | undefined;
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      (async () => {
        // b is joined (or for Mles at least its join is on its way) before a connects: then
        // either gets the other's message live, or for Mles from the channel's history.
        await b.ready;
        a = session(protocol, request, `churn-${pair}-a`, channel, bId, pair);
        await a.ready;
        a.send(encode('data', aId, pair, request.payloadBytes));
        b.send(encode('data', bId, pair, request.payloadBytes));
        await Promise.all([a.read, b.read]);
      })(),
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`pair ${pair}: not done in ${PAIR_TIMEOUT_MS} ms`)), PAIR_TIMEOUT_MS))),
    ]);
  } finally {
    clearTimeout(timer);
    const abrupt = pair % 2 === 1;
    b.leave(abrupt);
    a?.leave(abrupt);
  }
}

/** Runs this generator's pairs, `concurrency` at a time, until all ran or the time is up. */
export async function churn(request: ChurnRequest): Promise<Omit<Reply<'churned'>, 'type'>> {
  const protocol = PROTOCOLS[request.target];
  const started = performance.now();
  const deadline = started + request.timeLimitMs;
  let next = 0;
  let pairs = 0;
  let failed = 0;
  const failures: string[] = [];
  const lane = async (): Promise<void> => {
    while (next < request.pairs && performance.now() < deadline) {
      // Pairs are numbered across generators, so uids and channels never collide.
      const pair = request.firstPair + (next++) * request.generators + request.generator;
      try {
        await runPair(protocol, request, pair);
        pairs++;
      } catch (error) {
        failed++;
        if (failures.length < 5) failures.push((error as Error).message);
      }
    }
  };
  await Promise.all(Array.from({ length: request.concurrency }, lane));
  return { pairs, failed, failures, elapsedMs: performance.now() - started };
}

// The generator side of the reconnect storm: this generator's share of the clients connect at
// once, each joins its channel and waits for the channel's whole history, as after a server
// restart. With `resume`, each first makes one connection of its own and the storm's connections
// offer its TLS session (TLS 1.3 resumption with the server's ticket), instead of full handshakes.

import tls from 'node:tls';
import WebSocket from 'ws';
import { clockUs, decode } from './payload.js';
import { fillChannel } from './history-joins.js';
import { PROTOCOLS } from './protocols.js';
import type { FillRequest, StormRequest } from './messages.js';

const TIMEOUT_MS = 60_000;

/** Fills each channel with `messages` messages of history. */
export async function fill(request: FillRequest): Promise<void> {
  for (const channel of request.channels) await fillChannel(PROTOCOLS.mles, request.url, channel, request.messages, request.payloadBytes);
}

/** A TLS session of this server, from one connection's ticket; undefined over plain ws. */
async function sessionOf(url: string): Promise<Buffer | undefined> {
  if (!url.startsWith('wss:')) return undefined;
  let session: Buffer | undefined;
  let ws: WebSocket | undefined;
  await new Promise<void>((resolve) => {
    ws = new WebSocket(url, ['mles-websocket'], {
      createConnection: (options: tls.ConnectionOptions) => {
        const socket = tls.connect(options);
        socket.once('session', (ticket: Buffer) => {
          session = ticket;
          resolve();
        });
        return socket;
      },
    } as WebSocket.ClientOptions);
    ws.on('error', () => {});
    setTimeout(resolve, 5_000).unref();
  });
  ws?.terminate();
  return session;
}

/** Milliseconds from the storm's start to each client's last history message, and how many failed. */
export async function storm(request: StormRequest): Promise<{ timesMs: number[]; failed: number; resumed: number }> {
  const session = request.resume ? await sessionOf(request.url) : undefined;
  if (request.resume && !session) throw new Error('no TLS session ticket to resume with');
  let resumed = 0;
  const started = clockUs();
  const clients = Array.from({ length: request.clients }, (_, i) => new Promise<number | undefined>((resolve) => {
    const channel = request.channels[i % request.channels.length]!;
    const options: WebSocket.ClientOptions = { perMessageDeflate: false };
    if (session) {
      (options as { createConnection?: unknown }).createConnection = (connect: tls.ConnectionOptions) => {
        const socket = tls.connect({ ...connect, session });
        socket.once('secureConnect', () => socket.isSessionReused() && resumed++);
        return socket;
      };
    }
    const ws = new WebSocket(request.url, ['mles-websocket'], options);
    let seen = 0;
    const timer = setTimeout(() => finish(undefined), TIMEOUT_MS);
    const finish = (ms: number | undefined): void => {
      clearTimeout(timer);
      ws.terminate();
      resolve(ms);
    };
    ws.on('error', () => finish(undefined));
    ws.once('open', () => ws.send(JSON.stringify({ uid: `storm-${request.firstClient + i}`, channel })));
    ws.on('message', (data: Buffer, binary: boolean) => {
      if (binary && decode(data)?.kind === 'data' && ++seen === request.messages) finish((clockUs() - started) / 1000);
    });
  }));
  const times = await Promise.all(clients);
  const done = times.filter((t): t is number => t !== undefined);
  return { timesMs: done, failed: times.length - done.length, resumed };
}

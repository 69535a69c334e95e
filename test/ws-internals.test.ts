// The ws internals mles depends on (src/net/ws-internals.ts). If an upgrade of ws moves any of
// them, this test says which one, before the protocol suites fail in puzzling ways.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';
import * as wsModule from 'ws';
import { closeCodeOf, onCloseFrame, onPing, onPong, onProtocolError, receiverOf, socketOf, trimReceiver } from '../src/net/ws-internals.js';
import { RawClient, Opcode, encodeFrame } from './helpers/raw-ws.js';
import type { Writable } from 'node:stream';

/** ws's frame parser, which ws exports but its type definitions do not. */
const { Receiver } = wsModule as unknown as { Receiver: new (options: { isServer: boolean }) => Writable };

async function serverSide(): Promise<{ port: number; accepted: Promise<WebSocket>; next(): Promise<WebSocket>; close(): Promise<void> }> {
  const server = http.createServer();
  // As the endpoint runs it: pings are answered by the connection, not by ws.
  const wss = new WebSocketServer({ server, maxPayload: 64, autoPong: false });
  const next = (): Promise<WebSocket> => once(wss, 'connection').then(([ws]) => ws as WebSocket);
  const accepted = next();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    accepted,
    next,
    close: () => new Promise((resolve) => {
      server.closeAllConnections();
      wss.close();
      server.close(() => resolve());
    }),
  };
}

test('ws internals: socketOf is the net.Socket under the WebSocket', async () => {
  const side = await serverSide();
  try {
    const client = new WebSocket(`ws://127.0.0.1:${side.port}`);
    const ws = await side.accepted;
    const socket = socketOf(ws);
    assert.ok(socket instanceof net.Socket, 'ws._socket is a net.Socket');
    assert.equal(socket.remotePort, (await once(client, 'open'), (client as unknown as { _socket: net.Socket })._socket.localPort));
    client.terminate();
  } finally {
    await side.close();
  }
});

test("ws internals: onCloseFrame fires at the peer's close frame, before the TCP teardown", async () => {
  const side = await serverSide();
  try {
    const client = await RawClient.connect(side.port);
    const ws = await side.accepted;
    let concluded = false;
    const closeFrameSeen = new Promise<void>((resolve) => onCloseFrame(ws, () => {
      concluded = true;
      resolve();
    }));
    const payload = Buffer.alloc(2);
    payload.writeUInt16BE(1000, 0);
    client.write(encodeFrame(Opcode.close, payload));
    await closeFrameSeen;
    assert.ok(concluded);
    assert.equal(ws.readyState, WebSocket.CLOSING, 'the TCP connection is still there');
    client.destroy();
  } finally {
    await side.close();
  }
});

test('ws internals: onProtocolError runs before ws closes, with the close code ws would send', async () => {
  const side = await serverSide();
  try {
    const client = await RawClient.connect(side.port);
    const ws = await side.accepted;
    const seen = new Promise<{ code: number | undefined; state: number }>((resolve) => {
      onProtocolError(ws, (error) => resolve({ code: closeCodeOf(error), state: ws.readyState }));
    });
    ws.on('error', () => {});
    client.write(encodeFrame(Opcode.binary, Buffer.alloc(100))); // over maxPayload 64
    const { code, state } = await seen;
    assert.equal(code, 1009, 'the status code symbol of ws receiver errors');
    assert.equal(state, WebSocket.OPEN, 'our listener runs before ws starts closing');
    client.destroy();
  } finally {
    await side.close();
  }
});

test('ws internals: onPing and onPong hear control frames on the receiver, with their payloads', async () => {
  const side = await serverSide();
  try {
    const client = await RawClient.connect(side.port);
    const ws = await side.accepted;
    const heard: string[] = [];
    const both = new Promise<void>((resolve) => {
      onPing(ws, (data) => heard.push(`ping ${data.toString()}`));
      onPong(ws, (data) => {
        heard.push(`pong ${data.toString()}`);
        resolve();
      });
    });
    client.write(encodeFrame(Opcode.ping, 'p1'), encodeFrame(Opcode.pong, 'p2'));
    await both;
    assert.deepEqual(heard, ['ping p1', 'pong p2']);
    assert.equal(ws.listenerCount('ping') + ws.listenerCount('pong'), 0, 'nothing on the WebSocket');
    client.destroy();
  } finally {
    await side.close();
  }
});

test('ws internals: each hooked receiver event keeps one listener, shared by every connection', async () => {
  const side = await serverSide();
  try {
    const clients = [await RawClient.connect(side.port)];
    const first = await side.accepted;
    const second = side.next();
    clients.push(await RawClient.connect(side.port));
    const sockets = [first, await second];
    const noop = (): void => {};
    for (const ws of sockets) {
      onCloseFrame(ws, noop);
      onProtocolError(ws, noop);
      onPing(ws, noop);
      onPong(ws, noop);
    }
    for (const event of ['conclude', 'error', 'ping', 'pong']) {
      const [a, b] = sockets.map((ws) => receiverOf(ws).rawListeners(event));
      assert.equal(a!.length, 1, `one '${event}' listener: ws's and ours in one (an array otherwise)`);
      assert.equal(a![0], b![0], `the same '${event}' function on every connection`);
    }
    for (const client of clients) client.destroy();
  } finally {
    await side.close();
  }
});

test("ws internals: trimReceiver empties ws's list of unparsed reads only when it is empty", () => {
  // ws's own frame parser, fed by hand: each write is parsed (and its messages emitted) at once.
  const receiver = new Receiver({ isServer: true });
  const ws = { _receiver: receiver } as unknown as WebSocket;
  assert.ok(Array.isArray((receiver as unknown as { _buffers?: unknown })._buffers), 'ws keeps the unparsed reads in receiver._buffers');
  const messages: string[] = [];
  receiver.on('message', (data: Buffer) => {
    messages.push(data.toString());
    trimReceiver(ws);
  });
  // The second frame comes in two reads: trimmed between them, the list must keep the first half.
  const second = encodeFrame(Opcode.text, 'second');
  receiver.write(Buffer.concat([encodeFrame(Opcode.text, 'first'), second.subarray(0, 4)]));
  assert.deepEqual(messages, ['first']);
  receiver.write(second.subarray(4));
  assert.deepEqual(messages, ['first', 'second']);
});

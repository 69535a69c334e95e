// The ws internals mles depends on (src/net/ws-internals.ts). If an upgrade of ws moves any of
// them, this test says which one, before the protocol suites fail in puzzling ways.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';
import { closeCodeOf, onCloseFrame, onProtocolError, socketOf } from '../src/net/ws-internals.js';
import { RawClient, Opcode, encodeFrame } from './helpers/raw-ws.js';

async function serverSide(): Promise<{ port: number; accepted: Promise<WebSocket>; close(): Promise<void> }> {
  const server = http.createServer();
  const wss = new WebSocketServer({ server, maxPayload: 64 });
  const accepted = once(wss, 'connection').then(([ws]) => ws as WebSocket);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    accepted,
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

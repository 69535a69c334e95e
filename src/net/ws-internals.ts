// The one place that reaches into `ws` internals. ws has no public API for what these do, and
// each is load-bearing; test/ws-internals.test.ts fails loudly if an upgrade of ws breaks one.
//
// - socketOf: the fan-out writes pre-built frames straight to the TCP/TLS socket.
// - onCloseFrame: a session ends when the client's close frame arrives, not at TCP teardown.
// - onProtocolError: ws closes a connection that breaks the framing rules with a bare code; we
//   want to close it first, with a reason.

import type { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';

interface WsInternals {
  _socket: Socket;
  _receiver: EventEmitter;
}

export function socketOf(ws: WebSocket): Socket {
  return (ws as unknown as WsInternals)._socket;
}

/**
 * Calls `listener` (with `this` = the receiver) when the peer's close frame arrives. ws's own
 * listener runs first and has already queued the close reply.
 */
export function onCloseFrame(ws: WebSocket, listener: (this: EventEmitter) => void): EventEmitter {
  const receiver = (ws as unknown as WsInternals)._receiver;
  receiver.on('conclude', listener);
  return receiver;
}

/**
 * Calls `listener` with the close code ws is about to send and the error's message when a frame
 * breaks the protocol (bad opcode, invalid UTF-8, payload over maxPayload...). It runs before
 * ws's own handler, so a close sent from it is the one the client receives.
 */
export function onProtocolError(ws: WebSocket, listener: (this: EventEmitter, error: Error) => void): void {
  (ws as unknown as WsInternals)._receiver.prependListener('error', listener);
}

/** The close code ws attached to a receiver error (ws keeps it under a private symbol). */
export function closeCodeOf(error: Error): number | undefined {
  for (const symbol of Object.getOwnPropertySymbols(error)) {
    if (symbol.description === 'status-code') {
      const code = (error as unknown as Record<symbol, unknown>)[symbol];
      return typeof code === 'number' ? code : undefined;
    }
  }
  return undefined;
}

// The one place that reaches into `ws` internals. ws has no public API for what these do, and
// each is load-bearing; test/ws-internals.test.ts fails loudly if an upgrade of ws breaks one.
//
// - socketOf: the fan-out writes pre-built frames straight to the TCP/TLS socket.
// - onCloseFrame: a session ends when the client's close frame arrives, not at TCP teardown.
// - onProtocolError: ws closes a connection that breaks the framing rules with a bare code; we
//   want to close it first, with a reason.
// - onPing, onPong: heard on the receiver rather than the WebSocket, whose listeners then stay
//   as few as a bare relay's (see besideOwn).
// - trimReceiver: an idle member's receiver keeps no capacity its join frame made it grow.

import type { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';

interface WsInternals {
  _socket: Socket;
  _receiver: EventEmitter;
}

type Listener = (this: EventEmitter, ...args: unknown[]) => void;

export function socketOf(ws: WebSocket): Socket {
  return (ws as unknown as WsInternals)._socket;
}

/** The frame parser of `ws`: the `this` of every listener added below. */
export function receiverOf(ws: WebSocket): EventEmitter {
  return (ws as unknown as WsInternals)._receiver;
}

/** Shared combined listeners, by ws's listener and then ours: a handful in all. */
const combined = new Map<Listener, Map<Listener, Listener>>();
/** ws's own listener per receiver event, as found on the first connection. */
const wsListeners = new Map<string, Listener>();

/** ws's only listener for `event` on `receiver`, or undefined if it has none or several. */
function wsListener(receiver: EventEmitter, event: string): Listener | undefined {
  // Checked without listing the listeners: that would allocate an array per connection.
  if (receiver.listenerCount(event) !== 1) return undefined;
  const known = wsListeners.get(event);
  if (known !== undefined && receiver.listenerCount(event, known) === 1) return known;
  const own = receiver.rawListeners(event)[0] as Listener;
  if (own !== receiver.listeners(event)[0]) return undefined; // a `once` wrapper: left as it is
  wsListeners.set(event, own);
  return own;
}

function combine(own: Listener, listener: Listener, first: 'own' | 'ours'): Listener {
  let byOurs = combined.get(own);
  if (byOurs === undefined) combined.set(own, (byOurs = new Map()));
  let both = byOurs.get(listener);
  if (both === undefined) {
    both = first === 'own'
      ? function (this: EventEmitter, ...args: unknown[]) { own.apply(this, args); listener.apply(this, args); }
      : function (this: EventEmitter, ...args: unknown[]) { listener.apply(this, args); own.apply(this, args); };
    byOurs.set(listener, both);
  }
  return both;
}

/**
 * Adds `listener` for `event` on the receiver, to run just after (or before) ws's own. ws adds
 * exactly one listener per receiver event; a second would turn the event's entry into an array
 * on every connection (64 bytes each, on idle clients too), so the two are replaced by one
 * function, made once and shared by every connection. Should ws ever add its listener some
 * other way, ours is simply added next to it.
 */
function besideOwn(ws: WebSocket, event: string, listener: Listener, first: 'own' | 'ours'): void {
  const receiver = receiverOf(ws);
  const own = wsListener(receiver, event);
  if (own === undefined) {
    if (first === 'own') receiver.on(event, listener);
    else receiver.prependListener(event, listener);
    return;
  }
  receiver.removeListener(event, own);
  receiver.on(event, combine(own, listener, first));
}

/**
 * Calls `listener` (with `this` = the receiver) when the peer's close frame arrives. ws's own
 * listener runs first and has already queued the close reply.
 */
export function onCloseFrame(ws: WebSocket, listener: (this: EventEmitter) => void): void {
  besideOwn(ws, 'conclude', listener as Listener, 'own');
}

/**
 * Calls `listener` with the close code ws is about to send and the error's message when a frame
 * breaks the protocol (bad opcode, invalid UTF-8, payload over maxPayload...). It runs before
 * ws's own handler, so a close sent from it is the one the client receives.
 */
export function onProtocolError(ws: WebSocket, listener: (this: EventEmitter, error: Error) => void): void {
  besideOwn(ws, 'error', listener as Listener, 'ours');
}

/**
 * Calls `listener` with each ping's payload, as the WebSocket's 'ping' event would, without a
 * listener on the WebSocket. With autoPong off, ws's own listener only re-emits it there.
 */
export function onPing(ws: WebSocket, listener: (this: EventEmitter, data: Buffer) => void): void {
  besideOwn(ws, 'ping', listener as Listener, 'own');
}

/** Calls `listener` with each pong's payload, as the WebSocket's 'pong' event would. */
export function onPong(ws: WebSocket, listener: (this: EventEmitter, data: Buffer) => void): void {
  besideOwn(ws, 'pong', listener as Listener, 'own');
}

/**
 * Lets ws's list of unparsed socket reads drop the capacity it grew to, when the list is empty
 * (~150 bytes on a connection that read its join frame and then idles). Emptying an empty array
 * changes nothing for ws; V8 frees the backing store of an array whose length is set to 0.
 */
export function trimReceiver(ws: WebSocket): void {
  const buffers = (receiverOf(ws) as unknown as { _buffers?: unknown })._buffers;
  if (Array.isArray(buffers) && buffers.length === 0) buffers.length = 0;
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

// What every listener (public, redirect, admin) does so that no client can take the process down
// or hold a connection open for free: a handler that throws (or whose promise rejects) costs
// only its own request a 500, or its upgrade socket, and a log line; errors the server itself
// emits after listening are logged; request heads and bodies have deadlines well below Node's
// 300 s default (Node answers 408 itself when one passes).

import type { IncomingMessage, ServerOptions, ServerResponse } from 'node:http';
import type { Server } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { sendText } from './respond.js';

/** Deadlines for the HTTP part of a connection; an upgraded WebSocket is past them. */
export const REQUEST_TIMEOUTS = {
  /** From the first byte of a request (or the connection) to the end of its headers. */
  headersTimeout: 10_000,
  /** From the first byte to the end of the body. */
  requestTimeout: 30_000,
  /** How often Node checks those deadlines (its default, 30 s, would triple the head one). */
  connectionsCheckingInterval: 1_000,
} as const satisfies ServerOptions;

type RequestHandler = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>;
type UpgradeHandler = (req: IncomingMessage, socket: Duplex, head: Buffer) => void;

function requestFailed(log: Logger, req: IncomingMessage, res: ServerResponse, error: unknown): void {
  log.error({ err: error, method: req.method, url: req.url }, 'request handler failed');
  if (res.writableEnded) return;
  // Part of an answer is out: only cutting the connection tells the client it is incomplete.
  if (res.headersSent) res.destroy();
  else sendText(res, 500);
}

/** `handler`, answering 500 for anything it throws or rejects with. */
export function guardRequests(log: Logger, handler: RequestHandler): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    try {
      handler(req, res)?.catch((error: unknown) => requestFailed(log, req, res, error));
    } catch (error) {
      requestFailed(log, req, res, error);
    }
  };
}

/** `handler`, destroying the socket of an upgrade it throws on. */
export function guardUpgrades(log: Logger, handler: UpgradeHandler): UpgradeHandler {
  return (req, socket, head) => {
    try {
      handler(req, socket, head);
    } catch (error) {
      log.error({ err: error, url: req.url }, 'upgrade handler failed');
      socket.destroy();
    }
  };
}

/**
 * Logs the errors a listening server emits (an accept() failing on EMFILE, say): without a
 * listener each would be an uncaught exception. Call it once the server listens.
 */
export function logServerErrors(server: Server, log: Logger, listener: string): void {
  server.on('error', (error) => log.error({ err: error, listener }, 'listener error'));
}

// The Mles WebSocket endpoint: takes HTTP upgrades from any server (plain or TLS), refuses
// those that do not speak `mles-websocket`, and runs a Connection per accepted socket.

import type { IncomingMessage, Server as HttpServer } from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Logger } from 'pino';
import { Close, type CloseReason } from '../protocol/close-codes.js';
import type { Hub } from '../hub/hub.js';
import { Connection, type ConnectionContext, type ConnectionEvents, type ConnectionLimits, type TrafficStats } from './connection.js';
import { socketOf } from './ws-internals.js';

export const SUBPROTOCOL = 'mles-websocket';
/** How long a refused upgrade's socket may stay idle before it is destroyed. */
const REFUSED_LINGER_MS = 5_000;
const MAX_MISSED_PINGS = 3;

export interface EndpointOptions extends ConnectionLimits {
  maxMessageSize: number;
  pingIntervalMs: number;
  /** Open connections allowed from one client address; undefined: no cap. */
  maxConnectionsPerIp: number | undefined;
}

export interface EndpointStats extends TrafficStats {
  connectionsOpen: number;
  refusals: Map<string, number>;
  slowConsumerCloses: number;
}

/** True if the upgrade offers the Mles subprotocol anywhere in its (comma-separated) list. */
export function offersMles(header: string | undefined): boolean {
  return header !== undefined && header.split(',').some((p) => p.trim() === SUBPROTOCOL);
}

/**
 * Answers an upgrade with an HTTP error and lets the socket go. Node hands an upgrade's socket
 * over paused: unless it is read, bytes the client sends after its request hide the client's
 * close, and the socket would stay open for good. A client that keeps it open is cut off too.
 */
function refuseUpgrade(socket: Duplex, status: string, reason: string): void {
  // Node's HTTP server has let go of the socket's errors; an accepted one has ws's listener.
  socket.on('error', destroySocket);
  socket.resume();
  if (socket instanceof net.Socket) socket.setTimeout(REFUSED_LINGER_MS, destroySocket);
  socket.end(
    `HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Type: text/plain\r\n` +
      `Content-Length: ${Buffer.byteLength(reason) + 1}\r\n\r\n${reason}\n`,
  );
}

function destroySocket(this: Duplex): void {
  this.destroy();
}

export class MlesEndpoint implements ConnectionEvents {
  readonly stats: EndpointStats = { connectionsOpen: 0, refusals: new Map(), slowConsumerCloses: 0, bytesIn: 0, bytesOut: 0 };
  private readonly wss: WebSocketServer;
  private readonly connections = new Set<Connection>();
  /** Open connections per client address, kept only when --max-connections-per-ip is set. */
  private readonly perAddress = new Map<string, number>();
  private readonly pingTimer: NodeJS.Timeout;
  private readonly context: ConnectionContext;
  private onEmpty: (() => void) | undefined;

  constructor(
    hub: Hub,
    private readonly options: EndpointOptions,
    log: Logger,
  ) {
    this.context = { hub, limits: options, log, events: this, traffic: this.stats };
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: options.maxMessageSize,
      perMessageDeflate: false,
      clientTracking: false,
      // Connections answer pings themselves, so a client that pings and never reads is closed
      // with a reason instead of dropped silently at ws's pending-pong limit.
      autoPong: false,
      handleProtocols: () => SUBPROTOCOL,
    });
    this.pingTimer = setInterval(() => {
      for (const connection of this.connections) connection.heartbeat(MAX_MISSED_PINGS);
    }, options.pingIntervalMs);
    this.pingTimer.unref();
  }

  /** Routes `server`'s upgrade requests here. */
  attach(server: HttpServer): void {
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.upgrade(req, socket, head));
  }

  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (!offersMles(req.headers['sec-websocket-protocol'])) {
      this.countRefusal('no subprotocol');
      refuseUpgrade(socket, '400 Bad Request', `WebSocket upgrade must offer subprotocol ${SUBPROTOCOL}`);
      return;
    }
    const cap = this.options.maxConnectionsPerIp;
    // Read only to count: Node keeps what remoteAddress looks up on the socket for good.
    const address = cap === undefined ? undefined : req.socket.remoteAddress ?? '';
    if (address !== undefined && (this.perAddress.get(address) ?? 0) >= cap!) {
      this.countRefusal('too many connections from one address');
      refuseUpgrade(socket, '429 Too Many Requests', `at most ${cap} connections from one address`);
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.accept(ws, address));
  }

  /** Closes every client with `reason` (default 1001) and stops pinging. */
  close(reason: CloseReason = Close.shutdown): void {
    clearInterval(this.pingTimer);
    for (const connection of this.connections) connection.close(reason);
  }

  /**
   * Closes every client with `reason` (default 1001), waits up to `graceMs` for their close
   * handshakes, then drops the sockets that are still there.
   */
  async shutdown(graceMs: number, reason: CloseReason = Close.shutdown): Promise<void> {
    this.close(reason);
    if (this.connections.size > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, graceMs);
        this.onEmpty = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    for (const connection of this.connections) connection.terminate();
  }

  private accept(ws: WebSocket, address: string | undefined): void {
    const socket = socketOf(ws);
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 60_000);
    this.connections.add(new Connection(ws, this.context, address));
    this.stats.connectionsOpen++;
    if (address !== undefined) this.perAddress.set(address, (this.perAddress.get(address) ?? 0) + 1);
  }

  onClosed(connection: Connection): void {
    if (!this.connections.delete(connection)) return;
    this.stats.connectionsOpen--;
    const address = connection.remoteAddress;
    if (address !== undefined) {
      const open = this.perAddress.get(address)! - 1;
      if (open === 0) this.perAddress.delete(address);
      else this.perAddress.set(address, open);
    }
    if (this.connections.size === 0) this.onEmpty?.();
  }

  onRefused(reason: CloseReason): void {
    this.countRefusal(reason.reason);
  }

  onClosedForSlowness(): void {
    this.stats.slowConsumerCloses++;
  }

  private countRefusal(reason: string): void {
    this.stats.refusals.set(reason, (this.stats.refusals.get(reason) ?? 0) + 1);
  }
}

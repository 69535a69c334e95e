// How a benchmark client talks to each target: connect and join a channel, send a payload,
// hand every received payload on. Only benchmark payloads matter to the caller; everything else
// a target sends (Mles join frames and history) is left for payload.decode to ignore.

import WebSocket from 'ws';
import { io } from 'socket.io-client';
import mqtt from 'mqtt';
import type { TargetName } from './targets/index.js';

export interface ClientEvents {
  message(payload: Uint8Array): void;
  /** The connection ended (after it was ready). */
  closed(): void;
}

export interface JoinSpec {
  uid: string;
  channel: string;
  /** MQTT: subscribe to the channel's retained messages (`channel/#`) instead of `channel`. */
  history?: boolean;
}

export interface BenchClient {
  /** Resolves once connected and joined, as far as the protocol lets the client know. */
  readonly ready: Promise<void>;
  /** Sends to the others in the channel; with `historyKey`, as a message kept for later joiners. */
  send(payload: Buffer, historyKey?: number): void;
  close(): void;
}

export interface Protocol {
  /**
   * How a late joiner gets what was sent before: Mles replays the channel's history, MQTT
   * delivers retained messages; the bare relay and Socket.IO keep nothing.
   */
  readonly history: 'replay' | 'retained' | 'none';
  connect(url: string, join: JoinSpec, events: ClientEvents): BenchClient;
}

/** A raw `ws` client; `onOpen` runs first thing once the socket is open. */
function wsClient(url: string, protocols: string[], events: ClientEvents, onOpen: (ws: WebSocket) => void): BenchClient {
  const ws = new WebSocket(url, protocols, { perMessageDeflate: false });
  const ready = new Promise<void>((resolve, reject) => {
    ws.once('open', () => {
      onOpen(ws);
      ws.on('close', () => events.closed());
      resolve();
    });
    ws.once('error', reject);
    ws.once('close', () => reject(new Error('closed before it opened')));
  });
  ready.catch(() => {});
  ws.on('error', () => {});
  ws.on('message', (data: Buffer, isBinary: boolean) => {
    if (isBinary) events.message(data);
  });
  return {
    ready,
    send: (payload) => ws.send(payload, { binary: true }),
    close: () => ws.terminate(),
  };
}

const mles: Protocol = {
  history: 'replay',
  connect: (url, join, events) =>
    wsClient(url, ['mles-websocket'], events, (ws) => ws.send(JSON.stringify({ uid: join.uid, channel: join.channel }))),
};

const wsRelay: Protocol = {
  history: 'none',
  connect: (url, join, events) => wsClient(`${url}/${encodeURIComponent(join.channel)}`, [], events, () => {}),
};

// Socket.IO carries the payload as a string event argument (its ASCII bytes), the common way a
// chat uses it; a Buffer would become a two-frame binary packet.
const socketio: Protocol = {
  history: 'none',
  connect(url, join, events) {
    const socket = io(url, { transports: ['websocket'], reconnection: false, forceNew: true });
    const ready = new Promise<void>((resolve, reject) => {
      socket.once('connect', () => {
        socket.emit('join', join.channel, () => resolve());
        socket.on('disconnect', () => events.closed());
      });
      socket.once('connect_error', reject);
    });
    ready.catch(() => {});
    socket.on('m', (data: string) => events.message(Buffer.from(data, 'latin1')));
    return {
      ready,
      send: (payload) => socket.emit('m', payload.toString('latin1')),
      close: () => socket.disconnect(),
    };
  },
};

// MQTT 5 so that publishers can subscribe with No Local: like the others, a member then gets
// every other member's messages but not its own. QoS 0, as fire-and-forget as the others.
const mosquitto: Protocol = {
  history: 'retained',
  connect(url, join, events) {
    const client = mqtt.connect(url, {
      protocolVersion: 5,
      clientId: join.uid,
      clean: true,
      reconnectPeriod: 0,
      keepalive: 0,
      connectTimeout: 30_000,
    });
    const ready = new Promise<void>((resolve, reject) => {
      client.once('connect', () => {
        const topic = join.history ? `${join.channel}/#` : join.channel;
        client.subscribe(topic, { qos: 0, nl: true }, (error) => {
          if (error) return reject(error);
          client.on('close', () => events.closed());
          resolve();
        });
      });
      client.once('error', reject);
      client.once('close', () => reject(new Error('closed before it was ready')));
    });
    ready.catch(() => {});
    client.on('error', () => {});
    client.on('message', (_topic, payload) => events.message(payload));
    return {
      ready,
      send: (payload, historyKey) => {
        if (historyKey === undefined) client.publish(join.channel, payload, { qos: 0 });
        else client.publish(`${join.channel}/${historyKey}`, payload, { qos: 0, retain: true });
      },
      close: () => client.end(true),
    };
  },
};

export const PROTOCOLS: Record<TargetName, Protocol> = { mles, 'mles-sqlite': mles, ws: wsRelay, socketio, mosquitto, 'mles-cluster1': mles, 'mles-cluster2': mles, 'mles-rcluster2': mles };

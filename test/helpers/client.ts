// A raw WebSocket test client that speaks the Mles protocol by hand and lets a test wait for
// events (messages, close) instead of sleeping.

import { once } from 'node:events';
import WebSocket, { type ClientOptions } from 'ws';

export interface Received {
  data: Buffer;
  binary: boolean;
  text: string;
}

export class TestClient {
  readonly ws: WebSocket;
  readonly received: Received[] = [];
  /** Resolves with the close code and reason when the connection ends. */
  readonly closed: Promise<{ code: number; reason: string }>;
  private waiters: Array<() => void> = [];

  constructor(url: string, protocols: string | string[] | undefined = 'mles-websocket', options: ClientOptions = {}) {
    this.ws = new WebSocket(url, protocols, options);
    this.ws.on('message', (data: Buffer, binary: boolean) => {
      this.received.push({ data, binary, text: data.toString() });
      this.wake();
    });
    this.ws.on('error', () => {});
    this.closed = new Promise((resolve) => {
      this.ws.on('close', (code: number, reason: Buffer) => {
        resolve({ code, reason: reason.toString() });
        this.wake();
      });
    });
  }

  /** Opens and sends the join frame (any object or raw text). */
  static async join(url: string, uid: string, channel: string, extra: Record<string, unknown> = {}): Promise<TestClient> {
    const client = new TestClient(url);
    await client.opened();
    client.send(JSON.stringify({ uid, channel, ...extra }));
    return client;
  }

  async opened(): Promise<void> {
    if (this.ws.readyState === WebSocket.OPEN) return;
    await once(this.ws, 'open');
  }

  send(data: string | Buffer): void {
    this.ws.send(data);
  }

  /** Waits until at least `n` messages have arrived in total; returns the first `n`. */
  async waitFor(n: number): Promise<Received[]> {
    while (this.received.length < n) {
      if (this.ws.readyState === WebSocket.CLOSED) {
        throw new Error(`connection closed after ${this.received.length} of ${n} messages`);
      }
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    return this.received.slice(0, n);
  }

  texts(): string[] {
    return this.received.map((m) => m.text);
  }

  async close(): Promise<void> {
    if (this.ws.readyState !== WebSocket.CLOSED) {
      this.ws.close(1000);
      await this.closed;
    }
  }

  private wake(): void {
    for (const waiter of this.waiters.splice(0)) waiter();
  }
}

// The WebSocket implementation: the platform's own where there is one (browsers, Node >= 22),
// else the `ws` package, imported only then so that browser bundles never need it.

/** The part of the WHATWG WebSocket API the client uses; `ws` implements it too. */
export interface SocketLike {
  binaryType: string;
  readonly readyState: number;
  readonly protocol: string;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string | ArrayBufferView | ArrayBuffer): void;
  close(code?: number, reason?: string): void;
}

export type SocketConstructor = new (url: string, protocols: string | string[]) => SocketLike;

export const OPEN = 1;

let loaded: Promise<SocketConstructor> | undefined;

export function loadWebSocket(): Promise<SocketConstructor> {
  const native = (globalThis as { WebSocket?: unknown }).WebSocket;
  if (native) return Promise.resolve(native as SocketConstructor);
  loaded ??= import('ws').then((module) => module.default as unknown as SocketConstructor);
  return loaded;
}

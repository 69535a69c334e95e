// `mles connect`: a terminal client. Lines from stdin become messages; received messages go to
// stdout (join frames as "alice joined", the demo's chat messages as "alice: text", other text
// as-is, binary as a short hex summary; `raw` prints every text as-is); notices and errors go
// to stderr, so a pipe carries only the channel's traffic.

import { readFileSync } from 'node:fs';
import readline from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import WebSocket from 'ws';
import { connect, type CloseInfo, type MlesClient, type MlesMessage, type SocketConstructor } from '../client/index.js';

export interface ConnectFlags {
  uid: string;
  channel: string;
  key?: string;
  /** A PEM file of CA certificates to trust for wss:// instead of the system's (a self-signed server's own certificate works). */
  ca?: string;
  /** Skip certificate checks for wss:// (a self-signed server you cannot get the certificate of). */
  insecure?: boolean;
  /** Print every message exactly as received, without recognising joins and chat messages. */
  raw?: boolean;
  /** How long to stay after the end of input, so history and replies still print. */
  lingerMs: number;
}

export interface TerminalIo {
  stdin: Readable & { isTTY?: boolean };
  stdout: Writable;
  stderr: Writable;
}

/** Exit statuses a script can tell apart. */
export const ExitCode = { ok: 0, unreachable: 1, refused: 2, interrupted: 130 } as const;

const SUMMARY_BYTES = 32;

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** The JSON object a text holds, if it holds one. */
function parseObject(text: string): Record<string, unknown> | undefined {
  // Only texts that look like objects are parsed: most chat traffic is not JSON at all.
  if (!text.startsWith('{')) return undefined;
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A text as a person reads it. Recognises what web/entries.ts recognises (the demo's format):
 * a chat message `{"uid", "text", "time"}` and a join frame `{"uid", "channel"}`; anything else
 * is printed as it came, so no payload is ever hidden.
 */
function formatText(text: string): string {
  const fields = parseObject(text);
  if (fields && typeof fields.uid === 'string') {
    if (typeof fields.text === 'string') return `${visible(fields.uid)}: ${visible(fields.text)}`;
    if (typeof fields.channel === 'string') return `${visible(fields.uid)} joined`;
  }
  return text;
}

/** Control characters escaped, so that no uid or text can fake a line of someone else's. */
function visible(text: string): string {
  return text.replace(/[\x00-\x1f\x7f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

export function formatMessage(message: MlesMessage, raw = false): string {
  if (message.type === 'text') return raw ? message.text : formatText(message.text);
  const { data } = message;
  const more = data.length > SUMMARY_BYTES ? '…' : '';
  return `[binary ${data.length} bytes] ${hex(data.subarray(0, SUMMARY_BYTES))}${more}`;
}

function describe(info: CloseInfo): string {
  const why = info.reason || info.error || 'connection closed';
  return `${why} (${info.code})`;
}

/**
 * The `ws` WebSocket with the TLS options of --ca and --insecure, or undefined for the default
 * (the client kit's usual choice), which verifies against the system's CAs.
 */
function tlsWebSocket(flags: ConnectFlags): SocketConstructor | undefined {
  if (flags.ca === undefined && !flags.insecure) return undefined;
  const options: WebSocket.ClientOptions = flags.insecure ? { rejectUnauthorized: false } : {};
  if (flags.ca !== undefined) {
    try {
      options.ca = readFileSync(flags.ca);
    } catch (error) {
      throw new Error(`--ca: cannot read ${flags.ca}: ${(error as Error).message}`);
    }
  }
  return class extends WebSocket {
    constructor(address: string, protocols: string | string[]) {
      super(address, protocols, options);
    }
  } as unknown as SocketConstructor;
}

/** The usual causes of a failed TLS verification, for which --ca or --insecure is the answer. */
const CERTIFICATE_ERROR = /certificate|self[- ]signed|altnames|unable to verify/i;

/** Runs the client until input ends (then lingers and closes) or the server refuses; the exit status. */
export async function runConnect(url: string, flags: ConnectFlags, io: TerminalIo = process): Promise<number> {
  let client: MlesClient;
  try {
    const WebSocketImpl = tlsWebSocket(flags);
    client = connect(url, {
      uid: flags.uid,
      channel: flags.channel,
      ...(flags.key === undefined ? {} : { key: flags.key }),
      ...(WebSocketImpl === undefined ? {} : { WebSocket: WebSocketImpl }),
    });
  } catch (error) {
    io.stderr.write(`error: ${(error as Error).message}\n`);
    return ExitCode.unreachable;
  }

  let status: number | undefined;
  let exit: (code: number) => void = () => {};
  const exited = new Promise<number>((resolve) => {
    exit = (code) => {
      status ??= code;
      resolve(status);
    };
  });
  let joined = false;
  client.on('message', (message) => io.stdout.write(formatMessage(message, flags.raw) + '\n'));
  const firstOpen = new Promise<void>((resolve) =>
    client.on('open', ({ reconnect }) => {
      joined = true;
      if (reconnect) io.stderr.write('reconnected\n');
      else if (io.stdin.isTTY) io.stderr.write(`joined ${flags.channel} as ${flags.uid}; type a message and Enter, Ctrl-D to leave\n`);
      resolve();
    }),
  );
  client.on('close', (info) => {
    if (status !== undefined) return;
    if (info.refused) {
      io.stderr.write(`error: join refused: ${describe(info)}\n`);
      exit(ExitCode.refused);
    } else if (!joined) {
      // A self-signed server is the common case behind a certificate error: name the way out.
      const hint = info.error && CERTIFICATE_ERROR.test(info.error) ? ' (trust its CA with --ca FILE, or skip the check with --insecure)' : '';
      io.stderr.write(`error: cannot connect to ${url}: ${describe(info)}${hint}\n`);
      exit(ExitCode.unreachable);
      void client.close();
    } else if (info.willReconnect) {
      io.stderr.write(`connection lost: ${describe(info)}\n`);
    }
  });
  client.on('reconnecting', ({ delayMs }) => io.stderr.write(`reconnecting in ${(delayMs / 1000).toFixed(1)} s\n`));

  // Cooked terminal mode: the terminal edits the line, Ctrl-C raises SIGINT, Ctrl-D ends input.
  const lines = readline.createInterface({ input: io.stdin, terminal: false, crlfDelay: Infinity });
  lines.on('line', (line) => {
    if (line !== '' && client.state !== 'closed') client.send(line);
  });
  lines.once('close', () => {
    void (async () => {
      await Promise.race([firstOpen, exited]);
      await new Promise((resolve) => setTimeout(resolve, flags.lingerMs));
      await client.close(1000);
      exit(ExitCode.ok);
    })();
  });
  const interrupt = (): void => {
    void client.close(1000).then(() => exit(ExitCode.interrupted));
  };
  process.once('SIGINT', interrupt);

  const code = await exited;
  process.off('SIGINT', interrupt);
  lines.removeAllListeners('close');
  lines.close();
  return code;
}

// `mles connect`: a terminal client. Lines from stdin become messages; received messages go to
// stdout (text as-is, binary as a short hex summary); notices and errors go to stderr, so a
// pipe carries only the channel's traffic.

import readline from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { connect, type CloseInfo, type MlesClient, type MlesMessage } from '../client/index.js';

export interface ConnectFlags {
  uid: string;
  channel: string;
  key?: string;
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

export function formatMessage(message: MlesMessage): string {
  if (message.type === 'text') return message.text;
  const { data } = message;
  const more = data.length > SUMMARY_BYTES ? '…' : '';
  return `[binary ${data.length} bytes] ${hex(data.subarray(0, SUMMARY_BYTES))}${more}`;
}

function describe(info: CloseInfo): string {
  const why = info.reason || info.error || 'connection closed';
  return `${why} (${info.code})`;
}

/** Runs the client until input ends (then lingers and closes) or the server refuses; the exit status. */
export async function runConnect(url: string, flags: ConnectFlags, io: TerminalIo = process): Promise<number> {
  let client: MlesClient;
  try {
    client = connect(url, { uid: flags.uid, channel: flags.channel, ...(flags.key === undefined ? {} : { key: flags.key }) });
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
  client.on('message', (message) => io.stdout.write(formatMessage(message) + '\n'));
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
      io.stderr.write(`error: cannot connect to ${url}: ${describe(info)}\n`);
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

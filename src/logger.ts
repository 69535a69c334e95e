// Structured logs on stderr (stdout is kept for the one "listening on" line scripts wait for):
// JSON lines for machines, or readable lines for a person at a terminal (MLES_LOG_FORMAT).

import { pino, type Logger } from 'pino';

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
type Level = (typeof LEVELS)[number];

/**
 * The log level from MLES_LOG, else RUST_LOG (for people coming from the reference server,
 * whose values look like "mles=debug,warn": the last bare level wins), else warn.
 */
export function logLevelFrom(env: NodeJS.ProcessEnv): Level {
  for (const value of [env.MLES_LOG, env.RUST_LOG]) {
    if (!value) continue;
    const words = value.toLowerCase().split(/[,\s]+/).map((w) => w.split('=').pop()!);
    const level = words.reverse().find((w) => (LEVELS as readonly string[]).includes(w) || w === 'off');
    if (level) return level === 'off' ? 'silent' : (level as Level);
  }
  return 'warn';
}

export type LogFormat = 'json' | 'pretty';

/** MLES_LOG_FORMAT: json or pretty; anything else (or nothing) means pretty on a terminal, else json. */
export function logFormatFrom(env: NodeJS.ProcessEnv, stderrIsTerminal: boolean): LogFormat {
  const format = env.MLES_LOG_FORMAT?.toLowerCase();
  if (format === 'json' || format === 'pretty') return format;
  return stderrIsTerminal ? 'pretty' : 'json';
}

export function createLogger(
  level: string = logLevelFrom(process.env),
  format: LogFormat = logFormatFrom(process.env, process.stderr.isTTY === true),
): Logger {
  // Synchronous: the crash handler (src/crash.ts) logs and exits straight after.
  const stderr = pino.destination({ fd: 2, sync: true });
  const colors = format === 'pretty' && process.stderr.hasColors?.() === true;
  return pino({ level, base: { name: 'mles' } }, format === 'json' ? stderr : { write: (line: string) => stderr.write(pretty(line, colors)) });
}

const LABELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
/** ANSI colours by level, for a terminal that has them (NO_COLOR and FORCE_COLOR are honoured). */
const COLORS: Record<number, string> = { 10: '90', 20: '36', 30: '32', 40: '33', 50: '31', 60: '35' };

/**
 * One JSON log line as a person reads it: `12:00:01.250 WARN  join refused code=1003 reason="..."`,
 * an error's stack on the lines after. (No pino-pretty: this is all mles needs, and it writes
 * synchronously like the JSON logs.)
 */
function pretty(line: string, colors: boolean): string {
  // `name` is always "mles"; an error (pino's `err`) is shown by its stack.
  const { level, time, msg, name: _name, err, ...fields } = JSON.parse(line) as Record<string, unknown>;
  const label = (LABELS[level as number] ?? String(level)).padEnd(5);
  const shown = colors ? `\x1b[${COLORS[level as number] ?? '0'}m${label}\x1b[0m` : label;
  const clock = `${new Date(time as number).toTimeString().slice(0, 8)}.${String((time as number) % 1000).padStart(3, '0')}`;
  let stack = '';
  if (typeof err === 'object' && err !== null && 'stack' in err) {
    const { type: _type, message: _message, stack: trace, ...details } = err as Record<string, unknown>;
    stack = `\n    ${String(trace).replace(/\n/g, '\n    ')}`;
    if (Object.keys(details).length > 0) fields.err = details; // e.g. an errno code
  } else if (err !== undefined) {
    fields.err = err;
  }
  const pairs = Object.entries(fields).map(([key, value]) => ` ${key}=${typeof value === 'string' && /^[^\s"=]+$/.test(value) ? value : JSON.stringify(value)}`);
  return `${clock} ${shown} ${String(msg ?? '')}${pairs.join('')}${stack}\n`;
}

export type { Logger };

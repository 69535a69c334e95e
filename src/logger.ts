// Structured logs on stderr (stdout is kept for the one "listening on" line scripts wait for).

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

export function createLogger(level: string = logLevelFrom(process.env)): Logger {
  return pino({ level, base: { name: 'mles' } }, pino.destination({ fd: 2, sync: true }));
}

export type { Logger };

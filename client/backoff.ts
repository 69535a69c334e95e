// Reconnect delays: exponential growth from `minDelayMs`, capped at `maxDelayMs`, with "equal
// jitter" (a random half on top of a fixed half) so that many clients dropped by one server
// restart do not all come back in the same millisecond, yet none retries sooner than half the step.

export interface BackoffOptions {
  /** Delay before the first retry [default: 500]. */
  minDelayMs: number;
  /** Upper bound of any delay [default: 30000]. */
  maxDelayMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { minDelayMs: 500, maxDelayMs: 30_000 };

/** Delay before retry number `attempt` (1-based); `random` returns a number in [0, 1). */
export function backoffDelay(attempt: number, options: BackoffOptions, random: () => number = Math.random): number {
  const step = Math.min(options.maxDelayMs, options.minDelayMs * 2 ** Math.min(attempt - 1, 30));
  return Math.round(step / 2 + (random() * step) / 2);
}

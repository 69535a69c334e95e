// The last resort for an error nothing else caught (an uncaught exception or an unhandled
// rejection). Past one the process state cannot be trusted, so it is not carried on: the error
// is logged with its stack at fatal level, clients are closed with 1011 (they reconnect once a
// supervisor has restarted us), history is flushed, and the process exits non-zero. Listeners
// contain their handlers' errors themselves; no client input is meant to ever get here.

import type { Logger } from './logger.js';

/** What the handler stops: the running server (MlesServer.crash), once there is one. */
export interface Crashable {
  crash(): Promise<void>;
}

export interface CrashHandler {
  /** The server to stop from now on (until then a crash just exits: nothing to close yet). */
  setServer(server: Crashable): void;
}

/** The crash path may not hang a broken process: past this it exits anyway. */
const CRASH_DEADLINE_MS = 5_000;

/** Exit status after a crash. */
const CRASH_EXIT_CODE = 1;

/** Installs the process-wide handlers; do it first thing, so that start-up is covered too. */
export function installCrashHandler(log: Logger): CrashHandler {
  let server: Crashable | undefined;
  let crashing = false;
  const onFatal = (error: unknown, origin: string): void => {
    log.fatal({ err: error, origin }, 'uncaught error: closing clients and exiting');
    // A second error while closing is logged above, but the first crash is already on its way.
    if (crashing) return;
    crashing = true;
    // Whatever ends the process from here on, it does not end with 0.
    process.exitCode = CRASH_EXIT_CODE;
    setTimeout(() => {
      log.fatal('crash shutdown did not finish in time');
      process.exit(CRASH_EXIT_CODE);
    }, CRASH_DEADLINE_MS);
    if (server === undefined) process.exit(CRASH_EXIT_CODE);
    server.crash().then(
      () => process.exit(CRASH_EXIT_CODE),
      (failure: unknown) => {
        log.fatal({ err: failure }, 'crash shutdown failed');
        process.exit(CRASH_EXIT_CODE);
      },
    );
  };
  process.on('uncaughtException', (error, origin) => onFatal(error, origin));
  process.on('unhandledRejection', (reason) => onFatal(reason, 'unhandledRejection'));
  return { setServer: (running) => void (server = running) };
}

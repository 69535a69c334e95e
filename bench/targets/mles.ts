// This server as a bench target: its CLI in its own process, on port 0, without keep-alive
// pings (they would add traffic of their own) and quiet below warnings.

import { projectNode, startAnnounced, type ServerProcess } from './process.js';

/** Starts the CLI with `args` on top of the bench's common flags; `cleanup` runs after it exits. */
export function startMles(what: string, historyLimit: number, args: string[], cleanup?: () => void): Promise<ServerProcess> {
  const spec = projectNode('src/cli.ts', ['--port', '0', '--ping-interval', '600000', '--limit', String(historyLimit), ...args]);
  const env: NodeJS.ProcessEnv = { ...process.env, MLES_LOG: 'warn' };
  delete env.MLES_KEY;
  return startAnnounced(what, { ...spec, env, ...(cleanup ? { cleanup } : {}) });
}

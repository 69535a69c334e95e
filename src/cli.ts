#!/usr/bin/env node
// The `mles` command: flags and environment -> one Config -> createServer. Nothing else.

import cluster from 'node:cluster';
import os from 'node:os';
import path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { ConfigError, parseProxyRule, resolveConfig, defaults, type Config } from './config.js';
import { createServer } from './server.js';
import { createLogger } from './logger.js';
import { installCrashHandler } from './crash.js';
import { runWorkers } from './cluster/workers.js';

function integer(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError('must be a whole number');
  return Number(value);
}

const UNITS: Record<string, number> = { '': 1, k: 1024, kib: 1024, m: 1024 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gib: 1024 ** 3 };

/** Bytes, with an optional binary unit: 65536, 64k, 8MiB. */
function bytes(value: string): number {
  const match = /^(\d+)\s*([a-z]*)$/i.exec(value.trim());
  const unit = match && UNITS[match[2]!.toLowerCase()];
  if (!match || unit === undefined) throw new InvalidArgumentError('must be a size in bytes, e.g. 65536, 64KiB or 8MiB');
  return Number(match[1]) * unit!;
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

function proxyRule(value: string, previous: Config['proxies'] = []): Config['proxies'] {
  try {
    return [...previous, parseProxyRule(value)];
  } catch (error) {
    throw new InvalidArgumentError((error as ConfigError).message.replace(/^--proxy: /, ''));
  }
}

export function buildProgram(): Command {
  const program = new Command('mles')
    .description('Mles v2 server: lightweight, reliable, distributed publish-subscribe over TLS WebSocket')
    .showHelpAfterError('(run mles --help for usage)')
    .option('-d, --domains <DOMAINS>', 'domain(s) to serve with TLS, repeatable (none: local mode)', collect)
    .option('-e, --email <EMAIL>', 'ACME account contact e-mail, repeatable', collect)
    .option('-c, --cache <CACHE>', 'ACME cache directory')
    .option('-l, --limit <LIMIT>', 'history limit per channel', integer, defaults.limit)
    .option('--history-bytes <B>', 'history bytes kept per channel, newest kept (0: no byte cap)', bytes, defaults.historyBytes)
    .option('-f, --filelimit <N>', 'open files limit', integer, defaults.fileLimit)
    .option('-w, --wwwroot <WWWROOT>', 'static root; domain example.io is served from WWWROOT/example.io')
    .option('-s, --staging', "use Let's Encrypt's staging environment")
    .option('-p, --port <PORT>', 'listening port [default: 443 with domains, 8080 in local mode]', integer)
    .option('-r, --redirect', 'HTTP->HTTPS redirect listener (on --http-port)')
    .option('-C, --compression-cache <MB>', 'compression cache size in MB (0 disables)', integer, defaults.compressionCacheMb)
    .option('--rate-limit <N>', 'per-IP new connections per minute', integer)
    .option('--message-rate <N>', 'messages per second per connection (burst N); excess is read later, not dropped', integer)
    .option('--max-connections-per-ip <N>', 'open WebSocket connections per client IP; more are refused (HTTP 429)', integer)
    .option('-P, --proxy <PREFIX=URL>', 'reverse-proxy rule, repeatable', proxyRule)
    .option('--host <ADDR>', 'bind address [default: 127.0.0.1 in local mode, :: with domains]')
    .option('--http-port <PORT>', 'port of the --redirect listener', integer, defaults.httpPort)
    .option('--acme-directory <URL>', "ACME directory URL [default: Let's Encrypt]")
    .option('--acme-ca <FILE>', 'CA bundle to trust for the ACME API')
    .option('--tls-cert <FILE>', 'serve this certificate instead of using ACME (with --tls-key)')
    .option('--tls-key <FILE>', 'private key of --tls-cert')
    .option('--history <SPEC>', 'history store: memory | sqlite:<path> [default: sqlite in --cache, else in the data directory]')
    .option('--peer <URL>', 'link to a peer Mles server, repeatable', collect)
    .option('--peer-uid <UID>', 'uid this server uses on its peers')
    .option('--redis <URL>', 'join the cluster that shares this Redis')
    .option('--workers <N>', 'processes sharing the port', integer, defaults.workers)
    .option('--admin-port <PORT>', '/metrics and /healthz on loopback', integer)
    .option('--ping-interval <MS>', 'milliseconds between pings; 3 missed close the connection', integer, defaults.pingIntervalMs)
    .option('--max-message-size <B>', 'largest frame accepted, bytes (e.g. 8MiB)', bytes, defaults.maxMessageSize)
    .option('--max-buffered <B>', 'unsent bytes per connection before it is closed as too slow', bytes, defaults.maxBuffered)
    .option('--join-timeout <MS>', 'close connections that send no join frame in this time', integer, defaults.joinTimeoutMs)
    .addHelpText(
      'after',
      '\nEnvironment:\n  MLES_KEY   shared secret: joins must carry the keyed auth hash\n' +
        '  MLES_PEER_KEY  secret shared by linked servers: their links stay out of history\n' +
        '  MLES_LOG   log level (trace, debug, info, warn, error; RUST_LOG is honoured too) [default: warn]\n',
    );
  program.action(async (flags: Record<string, unknown>) => {
    await run({
      domains: flags.domains as string[] | undefined,
      emails: flags.email as string[] | undefined,
      cache: flags.cache as string | undefined,
      limit: flags.limit as number,
      historyBytes: flags.historyBytes as number,
      messageRate: flags.messageRate as number | undefined,
      maxConnectionsPerIp: flags.maxConnectionsPerIp as number | undefined,
      fileLimit: flags.filelimit as number,
      wwwroot: flags.wwwroot as string | undefined,
      staging: Boolean(flags.staging),
      port: flags.port as number | undefined,
      redirect: Boolean(flags.redirect),
      compressionCacheMb: flags.compressionCache as number,
      rateLimit: flags.rateLimit as number | undefined,
      proxies: flags.proxy as Config['proxies'] | undefined,
      host: flags.host as string | undefined,
      httpPort: flags.httpPort as number,
      acmeDirectory: flags.acmeDirectory as string | undefined,
      acmeCa: flags.acmeCa as string | undefined,
      tlsCert: flags.tlsCert as string | undefined,
      tlsKey: flags.tlsKey as string | undefined,
      history: (flags.history as string | undefined) ?? defaultHistory(flags.cache as string | undefined),
      peers: flags.peer as string[] | undefined,
      peerUid: flags.peerUid as string | undefined,
      redis: flags.redis as string | undefined,
      workers: flags.workers as number,
      adminPort: flags.adminPort as number | undefined,
      pingIntervalMs: flags.pingInterval as number,
      maxMessageSize: flags.maxMessageSize as number,
      maxBuffered: flags.maxBuffered as number,
      joinTimeoutMs: flags.joinTimeout as number,
    });
  });
  program
    .command('connect <url>')
    .description('terminal client: stdin lines are sent, received messages are printed')
    .requiredOption('--uid <UID>', 'user id to join as')
    .requiredOption('--channel <CH>', 'channel to join')
    .option('--key <KEY>', 'the server\'s MLES_KEY, to compute the auth hash')
    .option('--linger <MS>', 'stay this long after the end of input', integer, 1000)
    .addHelpText('after', '\nExit status: 0 done, 1 cannot connect, 2 join refused, 130 interrupted.\n')
    .action(async (url: string, flags: { uid: string; channel: string; key?: string; linger: number }) => {
      // Loaded on demand: the terminal client needs none of the server.
      const { runConnect } = await import('./connect.js');
      const code = await runConnect(url, { uid: flags.uid, channel: flags.channel, key: flags.key, lingerMs: flags.linger });
      process.stdout.write('', () => process.exit(code));
    });
  return program;
}

/**
 * The CLI keeps history durably by default: in the --cache directory when given, else in
 * $XDG_DATA_HOME/mles (~/.local/share/mles). Library users choose their store explicitly.
 */
function defaultHistory(cache: string | undefined): string {
  const dataHome = process.env.XDG_DATA_HOME || path.join(os.homedir(), '.local', 'share');
  return `sqlite:${path.join(cache ?? path.join(dataHome, 'mles'), 'history.db')}`;
}

/** Drops the keys commander left undefined so the config's own defaults apply. */
function defined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

async function run(flags: Partial<Config>): Promise<void> {
  const log = createLogger();
  const crashHandler = installCrashHandler(log);
  if ((flags.workers ?? 1) > 1 && cluster.isPrimary) {
    try {
      resolveConfig({ key: process.env.MLES_KEY, peerKey: process.env.MLES_PEER_KEY, ...defined(flags) }); // refuse bad flags once, not per worker
    } catch (error) {
      if (error instanceof ConfigError) fail(error.message);
      throw error;
    }
    return runWorkers(flags.workers!, log);
  }
  let server;
  try {
    server = await createServer({ ...defined(flags), logger: log });
  } catch (error) {
    if (error instanceof ConfigError) fail(error.message);
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES') fail(`--port: cannot listen: ${(error as Error).message}`);
    throw error;
  }
  crashHandler.setServer(server);
  process.stderr.write(`history: ${server.config.redis === undefined ? server.config.history : 'redis (cluster)'}\n`);
  process.stdout.write(`listening on ${server.address.url}\n`);
  const stop = (signal: string): void => {
    log.info({ signal }, 'shutting down');
    server.close().then(
      // Not exit(0): an uncaught error meanwhile has set exitCode 1 (src/crash.ts), and it stands.
      () => process.exit(),
      (error: unknown) => {
        log.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

function fail(message: string): never {
  process.stderr.write(`error: ${message}\n`);
  process.exit(1);
}

buildProgram().parseAsync(process.argv).catch((error: unknown) => {
  process.stderr.write(`error: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});

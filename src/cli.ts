#!/usr/bin/env node
// The `mles` command: config file, flags and environment -> one Config -> createServer. Nothing else.

import cluster from 'node:cluster';
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError, Option } from 'commander';
import type { TomlValue } from 'smol-toml';
import { ConfigError, maskPassword, parseProxyRule, resolveConfig, defaults, type Config } from './config.js';
// config-file.js (and its TOML parser) is imported only for --config and --print-config.
import type { FileSetting } from './config-file.js';
type ConfigFileModule = typeof import('./config-file.js');
import { createServer } from './server.js';
import { createLogger } from './logger.js';
import { installCrashHandler } from './crash.js';
import { runWorkers } from './workers.js';

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

const SIZE_UNITS = [['GiB', 1024 ** 3], ['MiB', 1024 ** 2], ['KiB', 1024]] as const;

/** A byte count as a person writes it: "8MiB" for 8388608, the bare number when no unit divides it. */
function sizeText(value: number): string | number {
  const unit = SIZE_UNITS.find(([, size]) => value > 0 && value % size === 0);
  return unit ? `${value / unit[1]}${unit[0]}` : value;
}

/** A size option, its default shown in help as the README writes it (64MiB, not 67108864). */
function sizeOption(flags: string, description: string, value: number): Option {
  return new Option(flags, description).argParser(bytes).default(value, String(sizeText(value)));
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

function proxyRule(value: string, previous: Config['proxies'] = []): Config['proxies'] {
  try {
    return [...previous, parseProxyRule(value)];
  } catch (error) {
    throw new InvalidArgumentError((error as ConfigError).detail);
  }
}

/** The parsers of the repeatable flags: in the config file their value is an array. */
const REPEATABLE: ReadonlySet<unknown> = new Set([collect, proxyRule]);

/**
 * Every setting's Config field, by its flag's attribute name (commander's camelCase of the
 * long name). The flags listed here are also the config file's keys, by their long names.
 */
const FIELDS = {
  domains: 'domains',
  email: 'emails',
  cache: 'cache',
  limit: 'limit',
  historyBytes: 'historyBytes',
  filelimit: 'fileLimit',
  wwwroot: 'wwwroot',
  staging: 'staging',
  port: 'port',
  redirect: 'redirect',
  compressionCache: 'compressionCacheMb',
  rateLimit: 'rateLimit',
  messageRate: 'messageRate',
  maxConnectionsPerIp: 'maxConnectionsPerIp',
  proxy: 'proxies',
  host: 'host',
  httpPort: 'httpPort',
  acmeDirectory: 'acmeDirectory',
  acmeCa: 'acmeCa',
  tlsCert: 'tlsCert',
  tlsKey: 'tlsKey',
  history: 'history',
  peer: 'peers',
  peerUid: 'peerUid',
  redis: 'redis',
  redisCluster: 'redisCluster',
  workers: 'workers',
  mqtt: 'mqtt',
  mqttPrefix: 'mqttPrefix',
  adminPort: 'adminPort',
  adminHost: 'adminHost',
  pingInterval: 'pingIntervalMs',
  maxMessageSize: 'maxMessageSize',
  maxBuffered: 'maxBuffered',
  joinTimeout: 'joinTimeoutMs',
} as const satisfies Record<string, keyof Config>;

/** The options that are settings (not --config, --print-config, --version), in help order. */
function settingOptions(program: Command): Option[] {
  return program.options.filter((option) => Object.hasOwn(FIELDS, option.attributeName()));
}

/** The config file's key for an option: its long name without the dashes. */
function fileKey(option: Option): string {
  return option.long!.slice(2);
}

export function buildProgram(): Command {
  const program = new Command('mles')
    .description('Mles v2 server: lightweight, reliable, distributed publish-subscribe over TLS WebSocket')
    .showHelpAfterError('(run mles --help for usage)')
    .option('-d, --domains <DOMAINS>', 'domain to serve with TLS, repeatable; one certificate covers all [default: none, local mode]', collect)
    .option('-e, --email <EMAIL>', 'ACME account contact e-mail, repeatable', collect)
    .option('-c, --cache <CACHE>', 'keeps the ACME account key and certificates, and (unless --history) the history database')
    .option('-l, --limit <LIMIT>', 'history messages kept per channel, 1..999999', integer, defaults.limit)
    .addOption(sizeOption('--history-bytes <B>', 'history payload bytes kept per channel, newest kept; 0: no byte cap', defaults.historyBytes))
    .option('-f, --filelimit <N>', 'files open at once for static serving; more requests wait', integer, defaults.fileLimit)
    .option('-w, --wwwroot <WWWROOT>', 'static root; with domains, example.io is served from WWWROOT/example.io [default: the bundled public/]')
    .option('-s, --staging', "use Let's Encrypt's staging environment")
    .option('-p, --port <PORT>', 'listening port, 0..65535; 0 takes a free port [default: 8080 in local mode, 443 with domains]', integer)
    .option('-r, --redirect', 'plain-HTTP listener on --http-port redirecting to https://')
    .option('-C, --compression-cache <MB>', 'memory for compressed static bodies, MB; 0 disables the cache', integer, defaults.compressionCacheMb)
    .option('--rate-limit <N>', 'new connections per minute per client IP (TLS and redirect ports) [default: off]', integer)
    .option('--message-rate <N>', 'messages per second per connection (burst N); excess is read later, not dropped [default: off]', integer)
    .option('--max-connections-per-ip <N>', 'open WebSocket connections per client IP; more are refused (HTTP 429) [default: off]', integer)
    .option('-P, --proxy <PREFIX=URL>', 'reverse-proxy rule, repeatable', proxyRule)
    .option('--host <ADDR>', 'bind address [default: 127.0.0.1 in local mode, :: with domains]')
    .option('--http-port <PORT>', 'port of the --redirect listener', integer, defaults.httpPort)
    .option('--acme-directory <URL>', "any RFC 8555 ACME directory [default: Let's Encrypt]")
    .option('--acme-ca <FILE>', 'CA bundle to trust for the ACME API')
    .option('--tls-cert <FILE>', 'serve this certificate instead of using ACME (with --tls-key); reloaded on change or SIGHUP')
    .option('--tls-key <FILE>', 'private key of --tls-cert')
    .option('--history <SPEC>', 'history store: memory | sqlite:<path> [default: sqlite in --cache, else in the data directory]')
    .option('--peer <URL>', 'link to a peer Mles server (ws:// or wss://), repeatable', collect)
    .option('--peer-uid <UID>', 'uid this server uses on its peers [default: mles-peer-<hostname>-<port>]')
    .option('--redis <URL>', 'join the cluster that shares this Redis (redis:// or rediss://)')
    .option('--redis-cluster <URL>', 'join the cluster on this Redis Cluster: a seed node (redis:// or rediss://, password in the first), repeatable; channels spread over its shards', collect)
    .option('--workers <N>', 'processes sharing the port, each a cluster node; more than 1 needs --redis or --redis-cluster', integer, defaults.workers)
    .option('--mqtt <URL>', 'bridge channels to this MQTT broker (mqtt://, mqtts://, ws://, wss://; user:password@ in the URL; on a cluster one node bridges each channel, MQTT 5) [default: off]')
    .option('--mqtt-prefix <P>', 'MQTT topic prefix: channel C is topic <P>C; empty or ending in /', defaults.mqttPrefix)
    .option('--admin-port <PORT>', '/metrics, /healthz and the HTTP API (/api/*, with MLES_API_KEY) [default: off]', integer)
    .option('--admin-host <ADDR>', 'bind address of --admin-port', defaults.adminHost)
    .option('--ping-interval <MS>', 'milliseconds between pings; 3 missed close the connection', integer, defaults.pingIntervalMs)
    .addOption(sizeOption('--max-message-size <B>', 'largest frame accepted (larger: close 1009); units k, M, G (binary)', defaults.maxMessageSize))
    .addOption(sizeOption('--max-buffered <B>', 'unsent bytes (+128 per message) per connection (also the bound of the MQTT queue and, on a cluster, of what waits for Redis) before it is closed as too slow', defaults.maxBuffered))
    .option('--join-timeout <MS>', 'close connections that send no join frame in this time', integer, defaults.joinTimeoutMs)
    .option('--config <FILE>', 'read settings from this TOML file (keys: the long flag names); flags given here win')
    .option('--print-config', 'print the effective settings as TOML for --config (secrets masked) and exit')
    .version(packageVersion(), '-V, --version', 'print the version and exit')
    .addHelpText(
      'after',
      '\nEnvironment:\n  MLES_KEY   shared secret: joins must carry the keyed auth hash\n' +
        '  MLES_PEER_KEY  secret shared by linked servers: their links stay out of history\n' +
        '  MLES_API_KEY  bearer token of the HTTP API on --admin-port [default: none, API off]\n' +
        '  MLES_LOG   log level (trace, debug, info, warn, error; RUST_LOG is honoured too) [default: warn]\n' +
        '  MLES_LOG_FORMAT  json | pretty (readable lines) [default: pretty if stderr is a terminal, else json]\n',
    );
  program.action(async (flags: Record<string, unknown>) => {
    let explain = (error: ConfigError): string => error.message;
    let input: Partial<Config>;
    let config: Config;
    const configFile = flags.config !== undefined || flags.printConfig ? await import('./config-file.js') : undefined;
    try {
      if (flags.config !== undefined) explain = applyConfigFile(configFile!, program, flags.config as string);
      input = configInput(program.opts());
      config = resolveConfig({
        key: process.env.MLES_KEY, peerKey: process.env.MLES_PEER_KEY, apiKey: process.env.MLES_API_KEY, ...input,
      });
    } catch (error) {
      if (error instanceof ConfigError) fail(explain(error));
      if (configFile && error instanceof configFile.ConfigFileError) fail(error.message);
      throw error;
    }
    if (flags.printConfig) process.stdout.write(printConfig(configFile!, program, config));
    else await run(input, explain);
  });
  program
    .command('connect <url>')
    .description('terminal client: stdin lines are sent, received messages are printed')
    .requiredOption('--uid <UID>', 'user id to join as')
    .requiredOption('--channel <CH>', 'channel to join')
    .option('--key <KEY>', 'the server\'s MLES_KEY, to compute the auth hash [default: $MLES_KEY]')
    .option('--ca <FILE>', 'for wss://, trust the CA certificates in this PEM file instead of the system\'s (e.g. a self-signed server\'s own certificate)')
    .option('--insecure', 'do not verify the server\'s certificate (wss://)')
    .option('--raw', 'print messages exactly as received, not "alice joined" / "alice: text"')
    .option('--linger <MS>', 'stay this long after the end of input', integer, 1000)
    .addHelpText('after', '\nExit status: 0 done, 1 cannot connect, 2 join refused, 130 interrupted.\n')
    .action(async (url: string, flags: { uid: string; channel: string; key?: string; ca?: string; insecure?: boolean; raw?: boolean; linger: number }) => {
      // Loaded on demand: the terminal client needs none of the server.
      const { runConnect } = await import('./connect.js');
      // The key is read from the environment as the server reads it, so one MLES_KEY serves
      // both; an empty MLES_KEY means none, as on the server.
      const key = flags.key ?? (process.env.MLES_KEY || undefined);
      const code = await runConnect(url, {
        uid: flags.uid,
        channel: flags.channel,
        key,
        ca: flags.ca,
        insecure: flags.insecure === true,
        raw: flags.raw === true,
        lingerMs: flags.linger,
      });
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

/** The settings commander holds (from flags and the config file), as Config fields; unset ones left out. */
function configInput(flags: Record<string, unknown>): Partial<Config> {
  const input: Record<string, unknown> = {};
  for (const [attribute, field] of Object.entries(FIELDS)) {
    if (flags[attribute] !== undefined) input[field] = flags[attribute];
  }
  const config = input as Partial<Config>;
  config.history ??= defaultHistory(config.cache);
  return config;
}

/**
 * Sets every option the command line did not give from the TOML file, through the flag's own
 * parser. Returns how to word a later ConfigError: by the file's key and line when that setting
 * came from the file (a range check in resolveConfig, a path that cannot be opened).
 */
function applyConfigFile(configFile: ConfigFileModule, program: Command, file: string): (error: ConfigError) => string {
  const { readConfigFile, settingError } = configFile;
  const options = new Map(settingOptions(program).map((option) => [fileKey(option), option]));
  const settings = new Map<string, FileSetting>();
  for (const setting of readConfigFile(file)) {
    const option = options.get(setting.key);
    if (option === undefined) {
      const near = [...options.keys()].find((key) => key === setting.key.toLowerCase().replace(/_/g, '-'));
      throw settingError(file, setting, `unknown setting${near ? `; did you mean ${near}?` : ''} (the settings are the long flag names, see mles --help)`);
    }
    let value: unknown;
    try {
      value = fromFile(option, setting.value);
    } catch (error) {
      if (error instanceof InvalidArgumentError) throw settingError(file, setting, error.message);
      throw error;
    }
    settings.set(setting.key, setting);
    if (program.getOptionValueSource(option.attributeName()) !== 'cli') {
      program.setOptionValueWithSource(option.attributeName(), value, 'config');
    }
  }
  return (error) => {
    const option = options.get(error.flag.replace(/^--/, ''));
    const setting = option && program.getOptionValueSource(option.attributeName()) === 'config' && settings.get(fileKey(option));
    return setting ? settingError(file, setting, error.detail).message : error.message;
  };
}

/** A value from the file, through the flag's parser, so that both accept the same text (8MiB). */
function fromFile(option: Option, value: TomlValue): unknown {
  if (option.isBoolean()) {
    if (typeof value !== 'boolean') throw new InvalidArgumentError('must be true or false');
    return value;
  }
  const parse = (text: string, previous: unknown): unknown => (option.parseArg ? option.parseArg(text, previous) : text);
  if (REPEATABLE.has(option.parseArg)) {
    const items = Array.isArray(value) ? value : [value];
    if (!items.every((item) => typeof item === 'string')) throw new InvalidArgumentError('must be a string or an array of strings');
    return items.reduce<unknown>((previous, item) => parse(item, previous), undefined);
  }
  if (typeof value !== 'string' && typeof value !== 'number') throw new InvalidArgumentError('must be a string or a number');
  return parse(String(value), undefined);
}

/** The resolved settings as a TOML file for --config, in help order; secrets only mentioned. */
function printConfig(configFile: ConfigFileModule, program: Command, config: Config): string {
  const settings: Record<string, TomlValue> = {};
  const masked: string[] = [];
  for (const option of settingOptions(program)) {
    const value = config[FIELDS[option.attributeName() as keyof typeof FIELDS]];
    if (value === undefined || (Array.isArray(value) && value.length === 0)) continue;
    // A URL with a password is only mentioned, masked: a printout must not carry it.
    const texts = typeof value === 'string' ? [value] : Array.isArray(value) && value.every((v) => typeof v === 'string') ? value : [];
    if (texts.some((text) => maskPassword(text) !== text)) {
      masked.push(`${fileKey(option)} = ${JSON.stringify(typeof value === 'string' ? maskPassword(value) : texts.map(maskPassword))}`);
    } else if (option.parseArg === proxyRule) settings[fileKey(option)] = config.proxies.map((rule) => `${rule.prefix}=${rule.url}`);
    else if (option.parseArg === bytes) settings[fileKey(option)] = sizeText(value as number);
    else settings[fileKey(option)] = value as TomlValue;
  }
  const secrets = [
    config.key === undefined ? [] : ['MLES_KEY'],
    config.peerKey === undefined ? [] : ['MLES_PEER_KEY'],
    config.apiKey === undefined ? [] : ['MLES_API_KEY'],
  ].flat();
  return configFile.formatConfigFile(settings, secrets, masked);
}

/** package.json's version, from the nearest one above this module (src/ under tsx, dist/src/ built). */
function packageVersion(): string {
  for (let dir = path.dirname(fileURLToPath(import.meta.url)); path.dirname(dir) !== dir; dir = path.dirname(dir)) {
    const file = path.join(dir, 'package.json');
    if (existsSync(file)) return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
  }
  throw new Error('package.json not found above the mles module');
}

async function run(flags: Partial<Config>, explain: (error: ConfigError) => string): Promise<void> {
  const log = createLogger();
  const crashHandler = installCrashHandler(log);
  // The action has checked the settings already: a bad one is refused before any worker starts.
  if ((flags.workers ?? 1) > 1 && cluster.isPrimary) return runWorkers(flags.workers!, log);
  let server;
  try {
    server = await createServer({ ...flags, logger: log });
  } catch (error) {
    if (error instanceof ConfigError) fail(explain(error));
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES') fail(explain(new ConfigError('--port', `cannot listen: ${(error as Error).message}`)));
    throw error;
  }
  crashHandler.setServer(server);
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
  // Before the listening line: whoever reads it may signal at once, and must get a clean stop.
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const clustered = server.config.redis !== undefined || server.config.redisCluster.length > 0;
  process.stderr.write(`history: ${clustered ? 'redis (cluster)' : server.config.history}\n`);
  process.stdout.write(`listening on ${server.address.url}\n`);
}

function fail(message: string): never {
  process.stderr.write(`error: ${message}\n`);
  process.exit(1);
}

buildProgram().parseAsync(process.argv).catch((error: unknown) => {
  process.stderr.write(`error: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});

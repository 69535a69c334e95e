// One validated configuration object, whether it comes from the command line or from code.
// Each field's error names the flag a person would set, so both entry points read the same.

export interface ProxyRule {
  /** Path prefix without surrounding slashes, possibly several segments ("api/v1"). */
  prefix: string;
  url: string;
}

export interface Config {
  /** Domains served with TLS; empty means local mode (plain HTTP + WebSocket). */
  domains: string[];
  emails: string[];
  cache: string | undefined;
  /** History messages kept per channel. */
  limit: number;
  /** History bytes (payloads) kept per channel, newest kept; 0 = no byte cap. */
  historyBytes: number;
  fileLimit: number;
  wwwroot: string | undefined;
  staging: boolean;
  host: string;
  port: number;
  redirect: boolean;
  httpPort: number;
  compressionCacheMb: number;
  rateLimit: number | undefined;
  /** Messages per second per connection (burst of the same size); excess waits, unread. */
  messageRate: number | undefined;
  /** Open WebSocket connections allowed from one client address. */
  maxConnectionsPerIp: number | undefined;
  proxies: ProxyRule[];
  acmeDirectory: string | undefined;
  acmeCa: string | undefined;
  tlsCert: string | undefined;
  tlsKey: string | undefined;
  history: string;
  peers: string[];
  peerUid: string | undefined;
  redis: string | undefined;
  /** Seed nodes of a sharded Redis Cluster (--redis-cluster); exclusive with `redis`. */
  redisCluster: string[];
  workers: number;
  /** MQTT broker to bridge channels to (mqtt://, mqtts://, ws://, wss://; credentials in the URL). */
  mqtt: string | undefined;
  /** Topic prefix of the bridge: channel C is topic `${mqttPrefix}C`. */
  mqttPrefix: string;
  adminPort: number | undefined;
  /** Where the admin listener binds; loopback unless asked, as it serves the HTTP API. */
  adminHost: string;
  pingIntervalMs: number;
  maxMessageSize: number;
  maxBuffered: number;
  /** A connection that sends no join frame within this time is closed. */
  joinTimeoutMs: number;
  /** A member over a quarter of maxBuffered that makes no progress this long is closed. */
  slowConsumerGraceMs: number;
  /** The shared secret MLES_KEY; when set, every join must carry the keyed auth hash. */
  key: string | undefined;
  /** MLES_PEER_KEY: servers that share it prove their links are links (kept out of history). */
  peerKey: string | undefined;
  /** MLES_API_KEY: the bearer token of the HTTP API on the admin listener; unset, the API is off. */
  apiKey: string | undefined;
}

export const LOCAL_PORT = 8080;
export const TLS_PORT = 443;
export const MiB = 1024 * 1024;

export const defaults = {
  limit: 200,
  historyBytes: 64 * 1024 * 1024,
  fileLimit: 256,
  httpPort: 80,
  compressionCacheMb: 24,
  history: 'memory',
  adminHost: '127.0.0.1',
  workers: 1,
  mqttPrefix: 'mles/',
  pingIntervalMs: 24_000,
  maxMessageSize: 8 * MiB,
  maxBuffered: 64 * MiB,
  joinTimeoutMs: 10_000,
  slowConsumerGraceMs: 5_000,
} as const;

export class ConfigError extends Error {
  /** `detail` is the message without the flag, for when the setting came from a config file. */
  constructor(readonly flag: string, readonly detail: string) {
    super(`${flag}: ${detail}`);
    this.name = 'ConfigError';
  }
}

function checkInteger(flag: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(flag, `must be an integer from ${min} to ${max}, got ${value}`);
  }
}

/** Parses a "PREFIX=URL" proxy rule. */
export function parseProxyRule(text: string): ProxyRule {
  const eq = text.indexOf('=');
  if (eq < 0) throw new ConfigError('--proxy', `rule "${text}" must be PREFIX=URL`);
  const prefix = text.slice(0, eq).replace(/^\/+|\/+$/g, '');
  const url = text.slice(eq + 1);
  if (prefix === '') throw new ConfigError('--proxy', `rule "${text}" has an empty prefix`);
  checkUrl('--proxy', url, ['http:', 'https:']);
  return { prefix, url: url.replace(/\/+$/, '') };
}

function checkUrl(flag: string, url: string, protocols: string[]): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ConfigError(flag, `"${maskPassword(url)}" is not a URL`);
  }
  if (!protocols.includes(parsed.protocol)) {
    throw new ConfigError(flag, `"${maskPassword(url)}" must use ${protocols.map((p) => p.slice(0, -1)).join(' or ')}`);
  }
}

/** `url` with its password, if any, as *** (for messages and logs: the password is never shown). */
export function maskPassword(url: string): string {
  // Up to the authority's last @, as URL parsers read it: an unescaped @ in a password is masked too.
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/?#@:]*:)[^/?#]*@/i, '$1***@');
}

/** The URL query parameters the bridge understands (the names MQTT.js uses). */
const MQTT_QUERY = new Set(['clientId', 'protocolVersion']);

function checkMqttUrl(url: string): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ConfigError('--mqtt', `"${maskPassword(url)}" is not a URL`);
  }
  if (!['mqtt:', 'mqtts:', 'ws:', 'wss:'].includes(parsed.protocol)) {
    throw new ConfigError('--mqtt', `"${maskPassword(url)}" must use mqtt, mqtts, ws or wss`);
  }
  if (parsed.hostname === '') throw new ConfigError('--mqtt', `"${maskPassword(url)}" names no broker host`);
  for (const [name, value] of parsed.searchParams) {
    if (!MQTT_QUERY.has(name)) throw new ConfigError('--mqtt', `unknown URL parameter "${name}" (known: ${[...MQTT_QUERY].join(', ')})`);
    if (name === 'protocolVersion' && value !== '4' && value !== '5') {
      throw new ConfigError('--mqtt', `protocolVersion must be 4 (MQTT 3.1.1) or 5, got "${value}"`);
    }
    if (name === 'clientId' && value === '') throw new ConfigError('--mqtt', 'clientId must not be empty');
  }
}

/**
 * The prefix is the start of every bridged topic and of the subscription `<prefix>#`, so it must
 * be empty or whole topic levels, free of wildcards, and not the broker's own `$` topics.
 */
function checkMqttPrefix(prefix: string): void {
  if (/[+#\0]/.test(prefix)) throw new ConfigError('--mqtt-prefix', `"${prefix}" must not contain +, # or NUL`);
  if (prefix.startsWith('$')) throw new ConfigError('--mqtt-prefix', `"${prefix}" must not start with $ (the broker's own topics)`);
  if (prefix !== '' && !prefix.endsWith('/')) throw new ConfigError('--mqtt-prefix', `"${prefix}" must end with / (or be empty)`);
}

const DOMAIN = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;

/** Fills defaults and validates; throws ConfigError naming the offending flag. */
export function resolveConfig(input: Partial<Config> = {}): Config {
  const domains = (input.domains ?? []).map((d) => d.toLowerCase());
  const config: Config = {
    domains,
    emails: input.emails ?? [],
    cache: input.cache,
    limit: input.limit ?? defaults.limit,
    historyBytes: input.historyBytes ?? defaults.historyBytes,
    fileLimit: input.fileLimit ?? defaults.fileLimit,
    wwwroot: input.wwwroot,
    staging: input.staging ?? false,
    host: input.host ?? (domains.length > 0 ? '::' : '127.0.0.1'),
    port: input.port ?? (domains.length > 0 ? TLS_PORT : LOCAL_PORT),
    redirect: input.redirect ?? false,
    httpPort: input.httpPort ?? defaults.httpPort,
    compressionCacheMb: input.compressionCacheMb ?? defaults.compressionCacheMb,
    rateLimit: input.rateLimit,
    messageRate: input.messageRate,
    maxConnectionsPerIp: input.maxConnectionsPerIp,
    proxies: input.proxies ?? [],
    acmeDirectory: input.acmeDirectory,
    acmeCa: input.acmeCa,
    tlsCert: input.tlsCert,
    tlsKey: input.tlsKey,
    history: input.history ?? defaults.history,
    peers: input.peers ?? [],
    peerUid: input.peerUid,
    redis: input.redis,
    redisCluster: input.redisCluster ?? [],
    workers: input.workers ?? defaults.workers,
    mqtt: input.mqtt,
    mqttPrefix: input.mqttPrefix ?? defaults.mqttPrefix,
    adminPort: input.adminPort,
    adminHost: input.adminHost ?? defaults.adminHost,
    pingIntervalMs: input.pingIntervalMs ?? defaults.pingIntervalMs,
    maxMessageSize: input.maxMessageSize ?? defaults.maxMessageSize,
    maxBuffered: input.maxBuffered ?? defaults.maxBuffered,
    joinTimeoutMs: input.joinTimeoutMs ?? defaults.joinTimeoutMs,
    slowConsumerGraceMs: input.slowConsumerGraceMs ?? defaults.slowConsumerGraceMs,
    key: input.key,
    peerKey: input.peerKey,
    apiKey: input.apiKey,
  };
  for (const domain of config.domains) {
    if (!DOMAIN.test(domain)) throw new ConfigError('--domains', `"${domain}" is not a domain name`);
  }
  for (const email of config.emails) {
    if (!/^[^@\s]+@[^@\s]+$/.test(email)) throw new ConfigError('--email', `"${email}" is not an e-mail address`);
  }
  checkInteger('--limit', config.limit, 1, 999_999);
  checkInteger('--history-bytes', config.historyBytes, 0, 1024 * 1024 * MiB);
  checkInteger('--filelimit', config.fileLimit, 1, 1_000_000);
  checkInteger('--port', config.port, 0, 65_535);
  checkInteger('--http-port', config.httpPort, 0, 65_535);
  checkInteger('--compression-cache', config.compressionCacheMb, 0, 1_000_000);
  if (config.rateLimit !== undefined) checkInteger('--rate-limit', config.rateLimit, 1, 1_000_000_000);
  if (config.messageRate !== undefined) checkInteger('--message-rate', config.messageRate, 1, 1_000_000);
  if (config.maxConnectionsPerIp !== undefined) checkInteger('--max-connections-per-ip', config.maxConnectionsPerIp, 1, 1_000_000);
  if (config.adminPort !== undefined) checkInteger('--admin-port', config.adminPort, 0, 65_535);
  checkInteger('--workers', config.workers, 1, 1024);
  checkInteger('--ping-interval', config.pingIntervalMs, 10, 3_600_000);
  checkInteger('--max-message-size', config.maxMessageSize, 1, 1024 * MiB);
  checkInteger('--max-buffered', config.maxBuffered, 1024, 64 * 1024 * MiB);
  checkInteger('--join-timeout', config.joinTimeoutMs, 10, 3_600_000);
  checkInteger('slowConsumerGraceMs', config.slowConsumerGraceMs, 1, 3_600_000);
  if (config.host === '') throw new ConfigError('--host', 'must not be empty');
  if (config.adminHost === '') throw new ConfigError('--admin-host', 'must not be empty');
  if ((config.tlsCert === undefined) !== (config.tlsKey === undefined)) {
    throw new ConfigError(config.tlsCert === undefined ? '--tls-cert' : '--tls-key', '--tls-cert and --tls-key go together');
  }
  if (config.acmeDirectory !== undefined) checkUrl('--acme-directory', config.acmeDirectory, ['https:', 'http:']);
  for (const peer of config.peers) checkUrl('--peer', peer, ['ws:', 'wss:']);
  if (config.redis !== undefined) checkUrl('--redis', config.redis, ['redis:', 'rediss:']);
  for (const seed of config.redisCluster) {
    checkUrl('--redis-cluster', seed, ['redis:', 'rediss:']);
    if (!/^\/?(\d+)?$/.test(new URL(seed).pathname)) {
      throw new ConfigError('--redis-cluster', `"${maskPassword(seed)}": the path may only be a number (a namespace, as a Redis Cluster has no databases)`);
    }
  }
  if (config.redis !== undefined && config.redisCluster.length > 0) {
    throw new ConfigError('--redis-cluster', 'give either --redis (one Redis server) or --redis-cluster (seed nodes of a Redis Cluster), not both');
  }
  const clustered = config.redis !== undefined || config.redisCluster.length > 0;
  if (config.workers > 1 && !clustered) {
    throw new ConfigError('--workers', 'several processes must share their channels through Redis: add --redis <url> or --redis-cluster <url>');
  }
  if (config.mqtt !== undefined) checkMqttUrl(config.mqtt);
  checkMqttPrefix(config.mqttPrefix);
  // A cluster's nodes tell each other's publications by an MQTT 5 user property; worker processes
  // share the URL, and each needs a client id of its own (the default has one).
  if (clustered && config.mqtt !== undefined && new URL(config.mqtt).searchParams.get('protocolVersion') === '4') {
    throw new ConfigError('--mqtt', 'cluster mode (--redis, --redis-cluster) needs MQTT 5: remove ?protocolVersion=4');
  }
  if (config.workers > 1 && config.mqtt !== undefined && new URL(config.mqtt).searchParams.has('clientId')) {
    throw new ConfigError('--mqtt', '?clientId= would be the same for every worker: leave it out with --workers');
  }
  if (config.history !== 'memory' && !/^sqlite:.+/.test(config.history)) {
    throw new ConfigError('--history', `"${config.history}" must be "memory" or "sqlite:<path>"`);
  }
  if (config.key === '') config.key = undefined;
  if (config.peerKey === '') config.peerKey = undefined;
  if (config.apiKey === '') config.apiKey = undefined;
  return config;
}

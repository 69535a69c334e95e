// A real Redis Cluster (Debian packages redis-server and redis-tools) on free loopback ports:
// three masters, optionally one replica each, no persistence, all files in one temporary
// directory. Besides starting and stopping it, it moves slots the way a resharding does (keys
// migrate live, clients see ASK then MOVED), fails a master over to its replica, and kills and
// restarts nodes. Tests that need it call requireRedisCluster first.

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { freePort } from './ports.js';
import { requirePrograms } from './programs.js';
import { killProcess, redisServerArgs } from './redis.js';

const run = promisify(execFile);

export interface RedisClusterOptions {
  /** One replica per master (six processes), so failover() works. Default false. */
  replicas?: boolean;
  /** cluster-node-timeout: how long an unreachable node takes to be declared failed. Default 2000. */
  nodeTimeoutMs?: number;
  /** How long startup and every wait for the cluster to settle may take. Default 15000. */
  timeoutMs?: number;
  /** Create it with `redis-cli --cluster create` (1 to 3 s) instead of the same steps sent directly (~0.3 s). */
  viaRedisCli?: boolean;
  /** cluster-require-full-coverage: false lets the other shards serve while one is down. Default true. */
  requireFullCoverage?: boolean;
}

export interface RedisClusterNode {
  port: number;
  /** The cluster bus port (given explicitly: port + 10000 may not exist or be free). */
  busPort: number;
  url: string;
  /** The node's cluster id: it keeps it across restart(), from its nodes-<port>.conf. */
  id: string;
  /** The role it was created with; failover() and kill() change the live roles (see masters()). */
  initialRole: 'master' | 'replica';
}

/** A slot migration stopped half-way, for observing clients while keys are split between nodes. */
export interface SlotMigration {
  slot: number;
  from: number;
  to: number;
  /** MIGRATEs these keys (default: every key left in the slot) from `from` to `to`. */
  migrateKeys(keys?: string[]): Promise<void>;
  /** Migrates what is left and gives the slot to `to` on every master (first `to`, then `from`). */
  finish(): Promise<void>;
}

export interface RunningRedisCluster {
  /** redis://127.0.0.1:P of every node, masters first. */
  urls: string[];
  /** `{ host, port }` of every node: seeds for ioredis's Cluster. */
  seeds: Array<{ host: string; port: number }>;
  nodes: RedisClusterNode[];
  /** The node with this port. */
  node(port: number): RedisClusterNode;
  /** The slot of a key or shard channel (same CRC16 and hash-tag rule as Redis). */
  slotOf(key: string): number;
  /** The port of the master that owns the key's (or slot number's) slot now, as the cluster says. */
  slotOwner(keyOrSlot: string | number): Promise<number>;
  /** Ports of the live masters, by the cluster's current view. */
  masters(): Promise<number[]>;
  /** `${prefix}<n>` for the smallest n whose slot the master at `port` owns now. */
  nameOn(port: number, prefix?: string): Promise<string>;
  /** One command on one node (not redirected), e.g. command(p, 'CLUSTER', 'INFO'). */
  command(port: number, ...args: Array<string | number | Buffer>): Promise<unknown>;
  /** Marks the slot MIGRATING/IMPORTING and returns the half-way migration; nothing moves yet. */
  beginSlotMigration(slot: number, toPort: number): Promise<SlotMigration>;
  /** A whole live migration of one slot to the master at `toPort`; resolves once every node agrees. */
  moveSlot(slot: number, toPort: number): Promise<void>;
  /** CLUSTER FAILOVER on the replica of the master at `port` (or on `port` if it is a replica); resolves with the new master's port once every node agrees. */
  failover(port: number): Promise<number>;
  /** SIGKILLs a node, like a crash. */
  kill(port: number): Promise<void>;
  /** Starts a killed node again on its port with its cluster config (same id, no data); waits until the cluster is ok. */
  restart(port: number): Promise<void>;
  /**
   * Resolves once every live node says cluster_state:ok, they agree on the slot map, it names no
   * killed node (after a kill: once its replica has taken over) and replicas are in sync.
   */
  waitHealthy(): Promise<void>;
  /** Process ids of the live nodes. */
  pids(): number[];
  /** Kills every node and removes the directory. */
  stop(): Promise<void>;
}

/** True if redis-server and redis-cli are installed; otherwise skips `t` (or fails it in CI). */
export function requireRedisCluster(t: TestContext): boolean {
  return requirePrograms(t, 'redis-server redis-tools', ['redis-server', 'redis-cli']);
}

// CRC16/XMODEM, as Redis Cluster hashes keys (cluster.c keyHashSlot).
const CRC_TABLE = (() => {
  const table = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let crc = i << 8;
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    table[i] = crc;
  }
  return table;
})();

/** The cluster slot of a key or shard channel: CRC16 of its hash tag (`{...}`, if non-empty) mod 16384. */
export function slotOf(key: string | Buffer): number {
  let bytes = typeof key === 'string' ? Buffer.from(key) : key;
  const open = bytes.indexOf(0x7b); // '{'
  if (open !== -1) {
    const close = bytes.indexOf(0x7d, open + 1); // '}'
    if (close > open + 1) bytes = bytes.subarray(open + 1, close);
  }
  let crc = 0;
  for (const byte of bytes) crc = ((crc << 8) & 0xffff) ^ CRC_TABLE[((crc >> 8) ^ byte) & 0xff]!;
  return crc & 16383;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function launch(args: string[]): Promise<ChildProcess> {
  const proc = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  await new Promise<void>((resolve, reject) => {
    const onExit = (code: number | null): void => reject(new Error(`redis-server exited (${code}):\n${output}`));
    const onData = (d: Buffer): void => {
      output += d.toString();
      if (output.includes('Ready to accept connections')) {
        proc.stdout!.off('data', onData);
        proc.off('exit', onExit);
        resolve();
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', (d: Buffer) => (output += d.toString()));
    proc.once('exit', onExit);
  });
  proc.stdout!.resume();
  proc.stderr!.resume();
  return proc;
}

/** Every slot range from CLUSTER SLOTS: [start, end, master port, ...replica ports]. */
type SlotMap = Array<[number, number, number, ...number[]]>;

function parseSlots(reply: unknown): SlotMap {
  return (reply as Array<[number, number, ...Array<[string, number, ...unknown[]]>]>)
    .map(([start, end, ...servers]): [number, number, number, ...number[]] => [
      start, end, Number(servers[0]![1]), ...servers.slice(1).map((s) => Number(s[1])).sort((a, b) => a - b),
    ])
    .sort((a, b) => a[0] - b[0]);
}

export async function startRedisCluster(options: RedisClusterOptions = {}): Promise<RunningRedisCluster> {
  const replicas = options.replicas ?? false;
  const nodeTimeoutMs = options.nodeTimeoutMs ?? 2000;
  const timeoutMs = options.timeoutMs ?? 15_000;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mles-test-redis-cluster-'));
  const count = replicas ? 6 : 3;
  const procs = new Map<number, ChildProcess>();
  const admins = new Map<number, Redis>();
  const nodes: RedisClusterNode[] = [];

  const argsOf = (port: number, busPort: number): string[] => [
    ...redisServerArgs(port, dir),
    '--cluster-enabled', 'yes',
    '--cluster-config-file', path.join(dir, `nodes-${port}.conf`),
    '--cluster-port', String(busPort),
    '--cluster-node-timeout', String(nodeTimeoutMs),
    // Replicas stay with the master they were given; a failover is the test's doing.
    '--cluster-allow-replica-migration', 'no',
    // A replica's full sync starts at once (the default waits 5 s for more replicas to join it).
    '--repl-diskless-sync-delay', '0',
    '--cluster-require-full-coverage', options.requireFullCoverage === false ? 'no' : 'yes',
  ];

  /** A cached admin connection to one node; dropped when it ends (e.g. the node was killed). */
  const admin = (port: number): Redis => {
    let connection = admins.get(port);
    if (!connection) {
      connection = new Redis({ host: '127.0.0.1', port, retryStrategy: () => null, maxRetriesPerRequest: 0, enableOfflineQueue: true, lazyConnect: false });
      connection.on('error', () => {});
      const created = connection;
      connection.once('end', () => {
        if (admins.get(port) === created) admins.delete(port);
      });
      admins.set(port, connection);
    }
    return connection;
  };
  const command = (port: number, ...args: Array<string | number | Buffer>): Promise<unknown> => {
    const [name, ...rest] = args;
    return admin(port).call(String(name), ...rest);
  };
  const live = (): number[] => [...procs].filter(([, p]) => p.exitCode === null && p.signalCode === null).map(([port]) => port);

  /** Polls `check` until it returns a value other than undefined; `what` names it in the timeout error. */
  async function until<T>(what: string, check: () => Promise<T | undefined>): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    let lastError: unknown;
    for (;;) {
      try {
        const value = await check();
        if (value !== undefined) return value;
      } catch (error) {
        lastError = error;
      }
      if (Date.now() > deadline) throw new Error(`redis cluster: timed out waiting for ${what}${lastError ? `: ${String(lastError)}` : ''}`);
      await sleep(20);
    }
  }

  const slotMap = async (port: number): Promise<SlotMap> => parseSlots(await command(port, 'CLUSTER', 'SLOTS'));

  /** The slot map (with replicas) every live node agrees on, or undefined while they differ or any is not ok. */
  async function agreedSlotMap(): Promise<SlotMap | undefined> {
    const ports = live();
    const infos = await Promise.all(ports.map((p) => command(p, 'CLUSTER', 'INFO') as Promise<string>));
    if (!infos.every((info) => info.includes('cluster_state:ok'))) return undefined;
    const maps = await Promise.all(ports.map(slotMap));
    const first = JSON.stringify(maps[0]);
    if (!maps.every((m) => JSON.stringify(m) === first)) return undefined;
    const covered = maps[0]!.reduce((sum, [start, end]) => sum + end - start + 1, 0);
    // A killed node stays in the map until the others have failed it over (cluster-node-timeout).
    const named = maps[0]!.flatMap(([, , ...servers]) => servers);
    return covered === 16384 && named.every((p) => ports.includes(p)) ? maps[0] : undefined;
  }

  /** Every live node is ok and agrees, and every live replica has synced with its master. */
  async function waitHealthy(): Promise<void> {
    await until('cluster_state:ok and one slot map on every node', agreedSlotMap);
    await until('replicas in sync', async () => {
      for (const port of live()) {
        const info = (await command(port, 'INFO', 'replication')) as string;
        if (info.includes('role:slave') && !info.includes('master_link_status:up')) return undefined;
        if (info.includes('role:slave') && info.includes('master_sync_in_progress:1')) return undefined;
      }
      return true;
    });
  }

  const findSlotOwner = async (slot: number): Promise<number> => {
    const map = await until('a live node to answer CLUSTER SLOTS', async () => {
      for (const port of live()) {
        try {
          return await slotMap(port);
        } catch {
          // try the next node
        }
      }
      return undefined;
    });
    const range = map.find(([start, end]) => slot >= start && slot <= end);
    if (!range) throw new Error(`redis cluster: slot ${slot} has no owner`);
    return range[2];
  };

  const masters = async (): Promise<number[]> => {
    const map = await until('one slot map on every node', agreedSlotMap);
    return [...new Set(map.map(([, , port]) => port))].sort((a, b) => a - b);
  };

  const node = (port: number): RedisClusterNode => {
    const found = nodes.find((n) => n.port === port);
    if (!found) throw new Error(`redis cluster: no node on port ${port}`);
    return found;
  };

  async function beginSlotMigration(slot: number, toPort: number): Promise<SlotMigration> {
    const from = await findSlotOwner(slot);
    if (from === toPort) throw new Error(`redis cluster: slot ${slot} is already on ${toPort}`);
    const fromId = node(from).id;
    const toId = node(toPort).id;
    // The documented order: the target imports before the source migrates.
    await command(toPort, 'CLUSTER', 'SETSLOT', slot, 'IMPORTING', fromId);
    await command(from, 'CLUSTER', 'SETSLOT', slot, 'MIGRATING', toId);
    const migrateKeys = async (keys?: string[]): Promise<void> => {
      for (;;) {
        const batch = keys ?? ((await command(from, 'CLUSTER', 'GETKEYSINSLOT', slot, 100)) as string[]);
        if (batch.length === 0) return;
        await command(from, 'MIGRATE', '127.0.0.1', toPort, '', 0, 5000, 'REPLACE', 'KEYS', ...batch);
        if (keys) return;
      }
    };
    return {
      slot,
      from,
      to: toPort,
      migrateKeys,
      async finish() {
        await migrateKeys();
        // Target first (it starts serving the slot), then the source (which then answers MOVED
        // and drops the slot's shard-channel subscribers), then the other masters.
        const others = (await masters().catch(() => live())).filter((p) => p !== toPort && p !== from);
        for (const port of [toPort, from, ...others]) await command(port, 'CLUSTER', 'SETSLOT', slot, 'NODE', toId);
        await until(`every node to see slot ${slot} on ${toPort}`, async () => {
          const map = await agreedSlotMap();
          return map?.some(([start, end, port]) => slot >= start && slot <= end && port === toPort) ? true : undefined;
        });
      },
    };
  }

  async function failover(port: number): Promise<number> {
    let replica = port;
    const role = (await command(port, 'ROLE')) as [string, ...unknown[]];
    if (role[0] === 'master') {
      const myId = node(port).id;
      const lines = ((await command(port, 'CLUSTER', 'NODES')) as string).split('\n');
      const line = lines.find((l) => l.split(' ')[3] === myId && !l.includes('fail'));
      if (!line) throw new Error(`redis cluster: master ${port} has no live replica`);
      replica = Number(line.split(' ')[1]!.split(':')[1]!.split('@')[0]);
    }
    await command(replica, 'CLUSTER', 'FAILOVER');
    await until(`${replica} to become master`, async () => {
      const [r] = (await command(replica, 'ROLE')) as [string];
      return r === 'master' ? true : undefined;
    });
    await until(`every node to see ${replica} as master`, async () => {
      const map = await agreedSlotMap();
      return map?.some(([, , p]) => p === replica) ? true : undefined;
    });
    await waitHealthy();
    return replica;
  }

  /** What redis-cli --cluster create does, without its 1 s sleeps: slots, epochs, MEET, REPLICATE. */
  async function createCluster(ports: number[]): Promise<void> {
    const masterPorts = ports.slice(0, 3);
    const replicaPorts = ports.slice(3);
    const ranges: Array<[number, number]> = [[0, 5460], [5461, 10922], [10923, 16383]];
    await Promise.all(masterPorts.map(async (port, i) => {
      await command(port, 'CLUSTER', 'ADDSLOTSRANGE', ranges[i]![0], ranges[i]![1]);
      await command(port, 'CLUSTER', 'SET-CONFIG-EPOCH', i + 1);
    }));
    await Promise.all(ports.slice(1).map((port) => command(port, 'CLUSTER', 'MEET', '127.0.0.1', ports[0]!, node0Bus)));
    if (replicaPorts.length === 0) return;
    const masterIds = await Promise.all(masterPorts.map((p) => command(p, 'CLUSTER', 'MYID') as Promise<string>));
    await Promise.all(replicaPorts.map((port, i) =>
      // A replica can only follow a master it has heard of through gossip.
      until(`${port} to replicate ${masterPorts[i]}`, async () => ((await command(port, 'CLUSTER', 'REPLICATE', masterIds[i]!)) === 'OK' ? true : undefined))));
  }
  let node0Bus = 0;

  // Should the test process die without stop(), the servers die with it.
  const onExit = (): void => {
    for (const proc of procs.values()) proc.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', onExit);

  const stopAll = async (): Promise<void> => {
    process.off('exit', onExit);
    for (const connection of admins.values()) connection.disconnect();
    admins.clear();
    await Promise.all([...procs.values()].map(killProcess));
  };

  try {
    const ports: Array<[number, number]> = [];
    const used = new Set<number>();
    while (ports.length < count) {
      const port = await freePort();
      const busPort = await freePort();
      if (used.has(port) || used.has(busPort) || port === busPort) continue;
      used.add(port).add(busPort);
      ports.push([port, busPort]);
    }
    await Promise.all(ports.map(async ([port, busPort]) => procs.set(port, await launch(argsOf(port, busPort)))));
    node0Bus = ports[0]![1];
    // redis-cli takes the first three as masters and gives each a replica from the rest.
    if (options.viaRedisCli) {
      // redis-cli takes the first three as masters and gives each a replica from the rest. It
      // polls in 1 s steps, so this takes 1 to 3 s.
      await run('redis-cli', [
        '--cluster', 'create', ...ports.map(([p]) => `127.0.0.1:${p}`),
        '--cluster-replicas', replicas ? '1' : '0', '--cluster-yes',
      ], { timeout: timeoutMs });
    } else {
      await createCluster(ports.map(([p]) => p));
    }
    for (const [port, busPort] of ports) {
      const id = (await command(port, 'CLUSTER', 'MYID')) as string;
      const [role] = (await command(port, 'ROLE')) as [string];
      nodes.push({ port, busPort, url: `redis://127.0.0.1:${port}`, id, initialRole: role === 'master' ? 'master' : 'replica' });
    }
    nodes.sort((a, b) => (a.initialRole === b.initialRole ? 0 : a.initialRole === 'master' ? -1 : 1));
    await waitHealthy();
  } catch (error) {
    await stopAll();
    fs.rmSync(dir, { recursive: true, force: true });
    throw error;
  }

  return {
    urls: nodes.map((n) => n.url),
    seeds: nodes.map((n) => ({ host: '127.0.0.1', port: n.port })),
    nodes,
    node,
    slotOf,
    slotOwner: (keyOrSlot) => findSlotOwner(typeof keyOrSlot === 'number' ? keyOrSlot : slotOf(keyOrSlot)),
    masters,
    async nameOn(port, prefix = 'k') {
      const map = await until('one slot map on every node', agreedSlotMap);
      for (let n = 0; ; n++) {
        const slot = slotOf(`${prefix}${n}`);
        if (map.some(([start, end, p]) => p === port && slot >= start && slot <= end)) return `${prefix}${n}`;
        if (n > 100_000) throw new Error(`redis cluster: ${port} owns no slot`);
      }
    },
    command,
    beginSlotMigration,
    async moveSlot(slot, toPort) {
      const migration = await beginSlotMigration(slot, toPort);
      await migration.finish();
    },
    failover,
    async kill(port) {
      admins.get(port)?.disconnect();
      admins.delete(port);
      const proc = procs.get(port);
      if (proc) await killProcess(proc);
    },
    async restart(port) {
      const { busPort } = node(port);
      procs.set(port, await launch(argsOf(port, busPort)));
      await waitHealthy();
    },
    waitHealthy,
    pids: () => live().map((port) => procs.get(port)!.pid!),
    async stop() {
      await stopAll();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

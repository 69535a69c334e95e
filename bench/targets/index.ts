// The servers a run compares: how to tell whether each can run here, and how to start it.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { hasProgram } from '../../test/helpers/programs.js';
import { startMles } from './mles.js';
import { startMlesCluster } from './mles-cluster.js';
import { mosquittoVersion, startMosquitto } from './mosquitto.js';
import { startAnnounced, projectNode, type ServerProcess } from './process.js';
import type { BenchTls } from '../tls.js';

/** This server's flags for a certificate of its own. */
function tlsFlags(tls: BenchTls | undefined): string[] {
  return tls ? ['--tls-cert', tls.cert, '--tls-key', tls.key] : [];
}

/** How the bare relay is told to serve wss:// (see ws-relay.ts). */
function tlsEnv(tls: BenchTls | undefined): NodeJS.ProcessEnv {
  return tls ? { BENCH_TLS_CERT: tls.cert, BENCH_TLS_KEY: tls.key } : {};
}

export const TARGET_NAMES = ['mles', 'mles-sqlite', 'ws', 'socketio', 'mosquitto', 'mles-cluster1', 'mles-cluster2', 'mles-rcluster2'] as const;
export type TargetName = (typeof TARGET_NAMES)[number];
/** What a run measures unless --targets says otherwise: the cluster cases are opt-in. */
export const DEFAULT_TARGETS: readonly TargetName[] = ['mles', 'mles-sqlite', 'ws', 'socketio', 'mosquitto'];

export interface StartOptions {
  /** Messages of history per channel, where the target keeps history. */
  historyLimit: number;
  /** The `mles` target's history store (--mles-history): memory, or SQLite in a fresh temporary file. */
  mlesHistory: 'memory' | 'sqlite';
  /** --tls: serve wss:// with this certificate. */
  tls?: BenchTls | undefined;
}

export interface Target {
  readonly name: TargetName;
  readonly label: string;
  /** Why this target cannot run on this machine, or undefined if it can. */
  unavailable(): string | undefined;
  /** Whether it has a wss:// variant (--tls). */
  readonly tls: boolean;
  start(options: StartOptions): Promise<ServerProcess>;
}

/** This server, one local process, with `store` history (SQLite: a fresh file per case). */
function startLocal(store: 'memory' | 'sqlite', historyLimit: number, tls: BenchTls | undefined): Promise<ServerProcess> {
  const dir = store === 'sqlite' ? fs.mkdtempSync(path.join(os.tmpdir(), 'mles-bench-')) : undefined;
  const history = dir ? `sqlite:${path.join(dir, 'history.db')}` : 'memory';
  const cleanup = dir ? () => fs.rmSync(dir, { recursive: true, force: true }) : undefined;
  return startMles('mles', historyLimit, ['--history', history, ...tlsFlags(tls)], cleanup);
}

const mles: Target = {
  name: 'mles',
  label: 'mles (this server)',
  unavailable: () => undefined,
  tls: true,
  start: ({ historyLimit, mlesHistory, tls }) => startLocal(mlesHistory, historyLimit, tls),
};

/** The same with the command line's default history, SQLite: the production shape. */
const mlesSqlite: Target = {
  name: 'mles-sqlite',
  label: 'mles, SQLite history',
  unavailable: () => undefined,
  tls: true,
  start: ({ historyLimit, tls }) => startLocal('sqlite', historyLimit, tls),
};

/**
 * This server as a cluster of `workers` processes on a redis-server of its own, or on a 3-master
 * Redis Cluster of its own (history in Redis).
 */
function mlesCluster(workers: 1 | 2, on: 'redis' | 'redis-cluster'): Target {
  const plural = workers > 1 ? 's' : '';
  return {
    name: on === 'redis' ? `mles-cluster${workers}` : `mles-rcluster${workers as 2}`,
    label: on === 'redis' ? `mles cluster, ${workers} worker${plural}` : `mles on Redis Cluster (3 shards), ${workers} worker${plural}`,
    unavailable: () => {
      if (!hasProgram('redis-server')) return 'redis-server not found: apt-get install redis-server';
      if (on === 'redis-cluster' && !hasProgram('redis-cli')) return 'redis-cli not found: apt-get install redis-tools';
      return undefined;
    },
    tls: true,
    start: ({ historyLimit, tls }) => startMlesCluster(workers, on, historyLimit, tlsFlags(tls)),
  };
}

const ws: Target = {
  name: 'ws',
  label: 'ws relay',
  unavailable: () => undefined,
  tls: true,
  start: ({ tls }) => startAnnounced('ws relay', { ...projectNode('bench/targets/ws-relay.ts'), env: { ...process.env, ...tlsEnv(tls) } }),
};

const socketio: Target = {
  name: 'socketio',
  label: 'Socket.IO 4',
  unavailable: () => undefined,
  tls: false,
  start: () => startAnnounced('Socket.IO', projectNode('bench/targets/socketio-server.ts')),
};

let mosquittoLabel: string | undefined;

const mosquitto: Target = {
  name: 'mosquitto',
  get label() {
    return (mosquittoLabel ??= `Mosquitto ${mosquittoVersion() ?? ''}`.trim());
  },
  unavailable: () => (hasProgram('mosquitto') ? undefined : 'mosquitto not found: apt-get install mosquitto'),
  tls: true,
  start: ({ tls }) => startMosquitto(tls),
};

export const TARGETS: Record<TargetName, Target> = {
  mles, 'mles-sqlite': mlesSqlite, ws, socketio, mosquitto,
  'mles-cluster1': mlesCluster(1, 'redis'), 'mles-cluster2': mlesCluster(2, 'redis'), 'mles-rcluster2': mlesCluster(2, 'redis-cluster'),
};

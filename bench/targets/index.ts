// The servers a run compares: how to tell whether each can run here, and how to start it.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { hasProgram } from '../../test/helpers/programs.js';
import { startMles } from './mles.js';
import { startMlesCluster } from './mles-cluster.js';
import { mosquittoVersion, startMosquitto } from './mosquitto.js';
import { startAnnounced, projectNode, type ServerProcess } from './process.js';

export const TARGET_NAMES = ['mles', 'ws', 'socketio', 'mosquitto', 'mles-cluster1', 'mles-cluster2', 'mles-rcluster2'] as const;
export type TargetName = (typeof TARGET_NAMES)[number];
/** What a run measures unless --targets says otherwise: the cluster cases are opt-in. */
export const DEFAULT_TARGETS: readonly TargetName[] = ['mles', 'ws', 'socketio', 'mosquitto'];

export interface StartOptions {
  /** Messages of history per channel, where the target keeps history. */
  historyLimit: number;
  /** This server's history store: memory, or SQLite in a fresh temporary file. */
  mlesHistory: 'memory' | 'sqlite';
}

export interface Target {
  readonly name: TargetName;
  readonly label: string;
  /** Why this target cannot run on this machine, or undefined if it can. */
  unavailable(): string | undefined;
  start(options: StartOptions): Promise<ServerProcess>;
}

const mles: Target = {
  name: 'mles',
  label: 'mles (this server)',
  unavailable: () => undefined,
  start: ({ historyLimit, mlesHistory }) => {
    const dir = mlesHistory === 'sqlite' ? fs.mkdtempSync(path.join(os.tmpdir(), 'mles-bench-')) : undefined;
    const history = dir ? `sqlite:${path.join(dir, 'history.db')}` : 'memory';
    const cleanup = dir ? () => fs.rmSync(dir, { recursive: true, force: true }) : undefined;
    return startMles('mles', historyLimit, ['--history', history], cleanup);
  },
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
    start: ({ historyLimit }) => startMlesCluster(workers, on, historyLimit),
  };
}

const ws: Target = {
  name: 'ws',
  label: 'ws relay',
  unavailable: () => undefined,
  start: () => startAnnounced('ws relay', projectNode('bench/targets/ws-relay.ts')),
};

const socketio: Target = {
  name: 'socketio',
  label: 'Socket.IO 4',
  unavailable: () => undefined,
  start: () => startAnnounced('Socket.IO', projectNode('bench/targets/socketio-server.ts')),
};

let mosquittoLabel: string | undefined;

const mosquitto: Target = {
  name: 'mosquitto',
  get label() {
    return (mosquittoLabel ??= `Mosquitto ${mosquittoVersion() ?? ''}`.trim());
  },
  unavailable: () => (hasProgram('mosquitto') ? undefined : 'mosquitto not found: apt-get install mosquitto'),
  start: () => startMosquitto(),
};

export const TARGETS: Record<TargetName, Target> = {
  mles, ws, socketio, mosquitto,
  'mles-cluster1': mlesCluster(1, 'redis'), 'mles-cluster2': mlesCluster(2, 'redis'), 'mles-rcluster2': mlesCluster(2, 'redis-cluster'),
};

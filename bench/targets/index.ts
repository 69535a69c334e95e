// The servers a run compares: how to tell whether each can run here, and how to start it.

import { hasProgram } from '../../test/helpers/programs.js';
import { mosquittoVersion, startMosquitto } from './mosquitto.js';
import { startAnnounced, tsNode, type ServerProcess } from './process.js';

export const TARGET_NAMES = ['mles', 'ws', 'socketio', 'mosquitto'] as const;
export type TargetName = (typeof TARGET_NAMES)[number];

export interface StartOptions {
  /** Messages of history per channel, where the target keeps history. */
  historyLimit: number;
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
  start: ({ historyLimit }) => {
    const spec = tsNode('src/cli.ts', ['--port', '0', '--history', 'memory', '--ping-interval', '600000', '--limit', String(historyLimit)]);
    const env: NodeJS.ProcessEnv = { ...process.env, MLES_LOG: 'warn' };
    delete env.MLES_KEY;
    return startAnnounced('mles', { ...spec, env });
  },
};

const ws: Target = {
  name: 'ws',
  label: 'ws relay',
  unavailable: () => undefined,
  start: () => startAnnounced('ws relay', tsNode('bench/targets/ws-relay.ts')),
};

const socketio: Target = {
  name: 'socketio',
  label: 'Socket.IO 4',
  unavailable: () => undefined,
  start: () => startAnnounced('Socket.IO', tsNode('bench/targets/socketio-server.ts')),
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

export const TARGETS: Record<TargetName, Target> = { mles, ws, socketio, mosquitto };

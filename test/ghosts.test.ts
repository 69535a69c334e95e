// Issue 12, item 2: no ghosts on any broker. A client that sends its join frame, a message and
// its close frame in one TCP write leaves before its join has settled (on SQLite the join waits
// for a commit, on Redis for two round trips). It must never be admitted, what it sent must
// still be stored, and once all such clients are gone the node holds no channel, no session and
// (on Redis) no subscription.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { startServer, type RunningServer } from './helpers/server.js';
import { TestClient } from './helpers/client.js';
import { RawClient, encodeFrame, closeFrame, Opcode } from './helpers/raw-ws.js';
import { adminOf, waitForMetrics } from './helpers/metrics.js';
import { requireRedis, startRedis, type RunningRedis } from './helpers/redis.js';

const CLIENTS = 400;
const CHANNELS = 8;
const AT_ONCE = 50;
const T = { timeout: 60_000 };

const servers: RunningServer[] = [];
const redises: RunningRedis[] = [];
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mles-ghosts-'));

after(async () => {
  await Promise.all(servers.map((s) => s.stop('SIGKILL')));
  await Promise.all(redises.map((r) => r.stop()));
  fs.rmSync(dir, { recursive: true, force: true });
});

async function start(args: string[]): Promise<{ server: RunningServer; admin: URL }> {
  const server = await startServer(['--admin-port', '0', ...args]);
  servers.push(server);
  return { server, admin: await adminOf(server) };
}

/** Joins, sends one message and closes, all in one TCP write; resolves once the server closed. */
async function hasty(port: number, i: number): Promise<void> {
  const client = await RawClient.connect(port);
  const channel = `ghosts-${i % CHANNELS}`;
  client.write(
    encodeFrame(Opcode.text, JSON.stringify({ uid: `hasty-${i}`, channel })),
    encodeFrame(Opcode.text, `message ${i}`),
    closeFrame(1000),
  );
  await client.ended;
}

async function storm(ports: number[]): Promise<void> {
  for (let start = 0; start < CLIENTS; start += AT_ONCE) {
    const batch = Array.from({ length: Math.min(AT_ONCE, CLIENTS - start) }, (_, k) => start + k);
    await Promise.all(batch.map((i) => hasty(ports[i % ports.length]!, i)));
  }
}

/** What a late joiner finds in history: every hasty message, each once. */
async function assertStored(url: string): Promise<void> {
  const expected = new Set<string>();
  for (let i = 0; i < CLIENTS; i++) expected.add(`message ${i}`);
  const found: string[] = [];
  for (let c = 0; c < CHANNELS; c++) {
    const reader = await TestClient.join(url, `reader-${c}`, `ghosts-${c}`);
    const count = CLIENTS / CHANNELS;
    while (reader.texts().filter((t) => t.startsWith('message ')).length < count) await reader.waitFor(reader.received.length + 1);
    found.push(...reader.texts().filter((t) => t.startsWith('message ')));
    await reader.close();
  }
  assert.equal(found.length, CLIENTS, 'each message stored once');
  assert.deepEqual(new Set(found), expected);
}

const settled = { mles_channels: 0, mles_sessions: 0 };
/** Then history holds, per channel, the hasty clients' joins and messages and the reader's join. */
const stored = { ...settled, mles_history_messages: CLIENTS * 2 + CHANNELS };

for (const history of ['memory', 'sqlite']) {
  test(`${history} history: ${CLIENTS} clients that join, send and close in one write leave nothing behind`, T, async () => {
    const args = history === 'memory' ? ['--history', 'memory'] : ['--history', `sqlite:${path.join(dir, 'ghosts.db')}`];
    const { server, admin } = await start([...args, '--limit', String(CLIENTS)]);
    await storm([server.port]);
    await waitForMetrics(admin, settled);
    await assertStored(server.url);
    await waitForMetrics(admin, stored);
  });
}

test(`Redis broker, 2 nodes: ${CLIENTS} such clients leave no channel, session or subscription on any node`, T, async (t) => {
  if (!requireRedis(t)) return;
  const redis = await startRedis();
  redises.push(redis);
  const nodes = await Promise.all([0, 1].map(() => start(['--redis', redis.url, '--limit', String(CLIENTS)])));
  await storm(nodes.map((n) => n.server.port));
  for (const { admin } of nodes) await waitForMetrics(admin, settled, 10_000);
  const probe = new Redis(redis.url);
  try {
    assert.deepEqual(await probe.pubsub('CHANNELS', 'mles:*'), [], 'no node still follows a channel');
    assert.deepEqual(await probe.keys('mles:*:session:*'), [], 'no session key left');
  } finally {
    probe.disconnect();
  }
  await assertStored(nodes[1]!.server.url);
  for (const { admin } of nodes) await waitForMetrics(admin, stored, 10_000);
});

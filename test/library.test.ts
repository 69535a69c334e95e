// The library entry (issue: Library): createServer starts the same server from code.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { createServer, ConfigError, authHash } from '../src/server.js';
import { DAY_MS } from '../src/hub/hub.js';
import { TestClient } from './helpers/client.js';
import { ROOT } from './helpers/server.js';

const T = { timeout: 15_000 };
const quiet = pino({ level: 'silent' });

test('library: createServer on port 0 serves clients, and close() closes them with 1001', T, async () => {
  const server = await createServer({ port: 0, logger: quiet });
  let closed = false;
  try {
    assert.equal(server.address.host, '127.0.0.1');
    assert.ok(server.address.port > 0);
    assert.equal(server.address.url, `ws://127.0.0.1:${server.address.port}`);
    assert.equal(server.config.limit, 200);
    assert.equal(server.config.history, 'memory', 'the library keeps history in memory unless told otherwise');

    const alice = await TestClient.join(server.address.url, 'alice', 'lib');
    alice.send('before bob');
    const bob = await TestClient.join(server.address.url, 'bob', 'lib');
    assert.deepEqual((await bob.waitFor(2)).map((m) => m.text), [JSON.stringify({ uid: 'alice', channel: 'lib' }), 'before bob']);
    bob.send('hello alice');
    assert.equal((await alice.waitFor(1))[0]!.text, 'hello alice');

    const closing = server.close();
    assert.equal(server.close(), closing, 'close() is idempotent');
    closed = true;
    await closing;
    for (const client of [alice, bob]) assert.deepEqual(await client.closed, { code: 1001, reason: 'server shutting down' });
    const probe = net.connect(server.address.port, '127.0.0.1');
    const [error] = (await once(probe, 'error')) as [NodeJS.ErrnoException];
    assert.equal(error.code, 'ECONNREFUSED', 'no longer listening');
  } finally {
    if (!closed) await server.close();
  }
});

test('library: a bad option is refused with a ConfigError naming the flag', T, async () => {
  await assert.rejects(createServer({ port: 0, limit: 0, logger: quiet }), (error: unknown) => {
    assert.ok(error instanceof ConfigError);
    assert.equal(error.flag, '--limit');
    return true;
  });
  await assert.rejects(createServer({ port: 70_000, logger: quiet }), { name: 'ConfigError', flag: '--port' });
});

test('library: the key option requires keyed auth, as MLES_KEY does for the CLI', T, async () => {
  const server = await createServer({ port: 0, key: 'secret', logger: quiet });
  try {
    const refused = await TestClient.join(server.address.url, 'alice', 'example');
    assert.deepEqual(await refused.closed, { code: 1008, reason: 'auth failed' });
    const alice = await TestClient.join(server.address.url, 'alice', 'example', { auth: authHash('alice', 'example', 'secret') });
    const bob = await TestClient.join(server.address.url, 'bob', 'example', { auth: authHash('bob', 'example', 'secret') });
    assert.equal(JSON.parse((await bob.waitFor(1))[0]!.text).uid, 'alice');
    bob.send('hello alice');
    assert.equal((await alice.waitFor(1))[0]!.text, 'hello alice');
  } finally {
    await server.close();
  }
});

test('library: an injected clock drives the 30-day history expiry', T, async () => {
  let clock = Date.UTC(2025, 0, 1);
  const server = await createServer({ port: 0, now: () => clock, logger: quiet });
  try {
    const writer = await TestClient.join(server.address.url, 'writer', 'old');
    writer.send('ancient');
    await writer.close();
    clock += 30 * DAY_MS + 1;
    assert.deepEqual(await server.hub.expireIdle(), ['old']);
    const reader = await TestClient.join(server.address.url, 'reader', 'old');
    const other = await TestClient.join(server.address.url, 'other', 'old');
    // The reader's history was empty: the first thing it gets is the other member's message.
    other.send('fresh');
    assert.equal((await reader.waitFor(1))[0]!.text, 'fresh');
  } finally {
    await server.close();
  }
});

test('library: the package entry point is the server module', T, () => {
  const pkg = JSON.parse(readFileSync(`${ROOT}/package.json`, 'utf8')) as { exports: Record<string, { default: string; types: string }> };
  assert.equal(pkg.exports['.']!.default, './dist/src/server.js');
  assert.equal(pkg.exports['.']!.types, './dist/src/server.d.ts');
});

test('library: a start that fails late (admin port taken) releases the history database for a retry', T, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mles-lib-'));
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  const taken = (blocker.address() as net.AddressInfo).port;
  const history = `sqlite:${path.join(dir, 'history.db')}`;
  try {
    await assert.rejects(createServer({ port: 0, history, adminPort: taken, logger: quiet }), /--admin-port/);
    const retry = await createServer({ port: 0, history, logger: quiet }); // not "in use"
    await retry.close();
  } finally {
    blocker.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

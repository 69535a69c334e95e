// Certificates over ACME with the TLS-ALPN-01 challenge, end to end against Pebble (Let's
// Encrypt's test CA), which validates the challenge by really connecting to our port (spec 6).

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type tls from 'node:tls';
import type { ClientOptions } from 'ws';
import { pino } from 'pino';
import { startServer, type RunningServer } from './helpers/server.js';
import { TestClient } from './helpers/client.js';
import { peerFingerprint } from './helpers/certs.js';
import { freePort } from './helpers/ports.js';
import { requirePrograms } from './helpers/programs.js';
import { Pebble, PEBBLE_PROGRAMS } from './helpers/pebble.js';
import { resolveConfig } from '../src/config.js';
import { startListener } from '../src/net/listener.js';
import { renewalTime } from '../src/net/tls/acme.js';

const DOMAIN = 'mles.test';

function scratchDir(t: TestContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mles-acme-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Pebble plus a free port for mles that Pebble will validate against. */
async function pebbleFor(t: TestContext, validitySeconds?: number): Promise<{ pebble: Pebble; port: number; dir: string }> {
  const dir = scratchDir(t);
  const port = await freePort();
  const pebble = await Pebble.start({ dir, tlsPort: port, ...(validitySeconds ? { validitySeconds } : {}) });
  t.after(() => pebble.stop());
  return { pebble, port, dir };
}

function mlesArgs(pebble: Pebble, port: number, cache: string): string[] {
  return ['--domains', DOMAIN, '--email', 'ops@mles.test', '--host', '127.0.0.1', '--port', String(port),
    '--acme-directory', pebble.directoryUrl, '--acme-ca', pebble.apiCaFile, '--cache', cache];
}

async function startMles(t: TestContext, args: string[]): Promise<RunningServer> {
  const server = await startServer(args);
  t.after(() => server.stop());
  return server;
}

/** Joins over wss://, verifying the certificate against `root` for DOMAIN. */
async function joinTls(port: number, root: string, uid: string, channel: string): Promise<TestClient> {
  // ws passes TLS options through to tls.connect: SNI and name checks use DOMAIN.
  const options: ClientOptions & tls.ConnectionOptions = { ca: root, servername: DOMAIN };
  const client = new TestClient(`wss://127.0.0.1:${port}`, 'mles-websocket', options);
  await client.opened();
  client.send(JSON.stringify({ uid, channel }));
  return client;
}

test('renewal is due a third of the lifetime before expiry, at most 30 days before', () => {
  const start = new Date('2030-01-01T00:00:00Z');
  const days = (n: number): Date => new Date(start.getTime() + n * 86_400_000);
  assert.equal(renewalTime(start, days(90)), days(60).getTime());
  assert.equal(renewalTime(start, days(6)), days(4).getTime());
  assert.equal(renewalTime(start, days(365)), days(335).getTime());
});

test('issues a certificate over TLS-ALPN-01, serves wss:// with it, and reuses the cache on restart', { timeout: 60_000 }, async (t) => {
  if (!requirePrograms(t, 'pebble openssl', PEBBLE_PROGRAMS)) return;
  const { pebble, port, dir } = await pebbleFor(t);
  const cache = path.join(dir, 'cache');

  const first = await startMles(t, mlesArgs(pebble, port, cache));
  assert.equal(first.url, `wss://${DOMAIN}:${port}`);
  await first.waitForLog('certificate issued');
  assert.equal(pebble.orders(), 1);

  const root = await pebble.issuingRoot();
  const alice = await joinTls(port, root, 'alice', 'tls');
  const bob = await joinTls(port, root, 'bob', 'tls');
  alice.send('hello over TLS');
  const received = await bob.waitFor(2);
  assert.equal(received[1]!.text, 'hello over TLS');
  bob.send('hi');
  assert.equal((await alice.waitFor(1))[0]!.text, 'hi');
  await alice.close();
  await bob.close();
  const issued = await peerFingerprint(port, { ca: root, servername: DOMAIN, rejectUnauthorized: true });

  // Cache files are private: the account key and the certificate with its key.
  const files = fs.readdirSync(cache, { recursive: true, withFileTypes: true }).filter((f) => f.isFile() && f.name.endsWith('.pem'));
  assert.deepEqual(files.map((f) => f.name).sort(), ['account.key.pem', `${DOMAIN}.pem`]);
  for (const file of files) assert.equal(fs.statSync(path.join(file.parentPath, file.name)).mode & 0o777, 0o600);

  assert.equal(await first.stop(), 0);
  const second = await startMles(t, mlesArgs(pebble, port, cache));
  await second.waitForLog('using cached certificate');
  assert.equal(await peerFingerprint(port, { ca: root, servername: DOMAIN, rejectUnauthorized: true }), issued);
  assert.equal(pebble.orders(), 1, 'the restart placed no new order');
  assert.doesNotMatch(second.stderr(), /ordering certificate/);
});

test('renews a short-lived certificate in the background; new connections get it, open ones stay', { timeout: 60_000 }, async (t) => {
  if (!requirePrograms(t, 'pebble openssl', PEBBLE_PROGRAMS)) return;
  const { pebble, port, dir } = await pebbleFor(t, 6);
  const server = await startMles(t, mlesArgs(pebble, port, path.join(dir, 'cache')));
  await server.waitForLog('certificate issued');
  const root = await pebble.issuingRoot();

  const alice = await joinTls(port, root, 'alice', 'renewal');
  const before = await peerFingerprint(port, { ca: root, servername: DOMAIN, rejectUnauthorized: true });
  await server.waitForLog('certificate renewed');
  const after = await peerFingerprint(port, { ca: root, servername: DOMAIN, rejectUnauthorized: true });
  assert.notEqual(after, before);

  const bob = await joinTls(port, root, 'bob', 'renewal');
  await bob.waitFor(1); // alice's join
  alice.send('still here');
  assert.equal((await bob.waitFor(2))[1]!.text, 'still here');
  await alice.close();
  await bob.close();
});

/** A pino logger for in-process servers whose entries a test can wait for. */
class LogCapture {
  readonly entries: Array<{ level: number; msg: string }> = [];
  private waiters: Array<() => void> = [];
  readonly logger = pino({ level: 'info' }, {
    write: (line: string) => {
      this.entries.push(JSON.parse(line));
      for (const wake of this.waiters.splice(0)) wake();
    },
  });

  count(msg: string): number {
    return this.entries.filter((e) => e.msg.startsWith(msg)).length;
  }

  async waitFor(msg: string): Promise<void> {
    while (this.count(msg) === 0) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }
}

test('before the first certificate handshakes fail cleanly (logged once); a failed order is retried', { timeout: 60_000 }, async (t) => {
  if (!requirePrograms(t, 'pebble openssl', PEBBLE_PROGRAMS)) return;
  const dir = scratchDir(t);
  const port = await freePort();
  // The CA runs but its DNS server does not yet, so the first validations fail.
  const pebble = await Pebble.prepare({ dir, tlsPort: port });
  t.after(() => pebble.stop());
  await pebble.startCa();

  const logs = new LogCapture();
  const config = resolveConfig({ domains: [DOMAIN], host: '127.0.0.1', port, acmeDirectory: pebble.directoryUrl, acmeCa: pebble.apiCaFile });
  const listener = await startListener({ config, log: logs.logger, attach: () => {}, acmeRetry: { firstMs: 100, maxMs: 400 } });
  t.after(async () => {
    const closed = listener.close();
    listener.closeAllConnections();
    await closed;
  });

  for (let i = 0; i < 3; i++) {
    await assert.rejects(peerFingerprint(port, { servername: DOMAIN }), /handshake failure/);
  }
  assert.equal(logs.count('TLS handshakes fail until the first certificate is issued'), 1);

  await logs.waitFor('certificate order failed');
  await pebble.startDns();
  await logs.waitFor('certificate issued');
  const root = await pebble.issuingRoot();
  await peerFingerprint(port, { ca: root, servername: DOMAIN, rejectUnauthorized: true });
});

test('an unreachable ACME directory is a warning at once, with its URL and the real cause', { timeout: 30_000 }, async (t) => {
  const closed = await freePort();
  // Something that answers, but not as an ACME directory would (a captive portal, a wrong path).
  const portal = http.createServer((_req, res) => res.writeHead(200, { 'Content-Type': 'text/html' }).end('<html>hi</html>'));
  portal.listen(0, '127.0.0.1');
  await once(portal, 'listening');
  t.after(() => portal.close());
  const cases = [
    { url: `https://127.0.0.1:${closed}/dir`, cause: `connect ECONNREFUSED 127.0.0.1:${closed}` },
    { url: `http://127.0.0.1:${(portal.address() as AddressInfo).port}/dir`, cause: 'the answer is not JSON (Content-Type: text/html)' },
  ];
  for (const { url, cause } of cases) {
    const started = Date.now();
    const server = await startMles(t, ['--domains', DOMAIN, '--host', '127.0.0.1', '--port', '0', '--acme-directory', url]);
    await server.waitForLog(`ACME directory ${url} unreachable`);
    assert.ok(Date.now() - started < 10_000, 'the warning took too long');
    const line = JSON.parse(server.stderr().split('\n').find((l) => l.includes('unreachable'))!) as Record<string, unknown>;
    assert.equal(line.level, 40, 'logged at warn');
    assert.equal(line.directory, url);
    assert.equal(line.cause, cause);
    assert.match(String(line.msg), /^certificate order failed: .*; retrying in 60 s$/);
    await server.stop();
  }
});

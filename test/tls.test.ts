// --tls-cert/--tls-key: a certificate you already have, served over wss:// (TLS 1.2 minimum),
// reloaded when its files change or on SIGHUP without dropping open connections (spec 6).

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, runCli, type RunningServer } from './helpers/server.js';
import { TestClient } from './helpers/client.js';
import { peerFingerprint, selfSignedCertificate, type TestCertificate } from './helpers/certs.js';
import { requirePrograms } from './helpers/programs.js';

function scratchDir(t: TestContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mles-tls-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A certificate for 127.0.0.1 and localhost, and a server started with it. */
async function serverWithOwnCertificate(t: TestContext): Promise<{ server: RunningServer; cert: TestCertificate; dir: string }> {
  const dir = scratchDir(t);
  const cert = selfSignedCertificate(dir, 'server', ['localhost'], ['127.0.0.1']);
  const server = await startServer(['--tls-cert', cert.certFile, '--tls-key', cert.keyFile]);
  t.after(() => server.stop());
  return { server, cert, dir };
}

async function join(url: string, ca: string, uid: string, channel: string): Promise<TestClient> {
  const client = new TestClient(url, 'mles-websocket', { ca });
  await client.opened();
  client.send(JSON.stringify({ uid, channel }));
  return client;
}

test('serves its own certificate over wss:// and reloads it when the files change, keeping open connections', { timeout: 30_000 }, async (t) => {
  if (!requirePrograms(t, 'openssl', ['openssl'])) return;
  const { server, cert: first, dir } = await serverWithOwnCertificate(t);
  assert.match(server.url, /^wss:\/\/127\.0\.0\.1:\d+$/);
  assert.equal(await peerFingerprint(server.port, { ca: first.cert, rejectUnauthorized: true }), first.fingerprint);
  const alice = await join(server.url, first.cert, 'alice', 'own');

  // A half-written file is refused and the current certificate keeps serving.
  fs.writeFileSync(first.certFile, 'not a certificate\n');
  await server.waitForLog('certificate reload failed');
  assert.equal(await peerFingerprint(server.port), first.fingerprint);

  // The renewed pair replaces the files: new handshakes get it, alice's connection stays.
  const next = selfSignedCertificate(fs.mkdtempSync(path.join(dir, 'next-')), 'server', ['localhost'], ['127.0.0.1']);
  fs.copyFileSync(next.keyFile, first.keyFile);
  fs.copyFileSync(next.certFile, first.certFile);
  await server.waitForLog(next.fingerprint);
  assert.equal(await peerFingerprint(server.port, { ca: next.cert, rejectUnauthorized: true }), next.fingerprint);

  const bob = await join(server.url, next.cert, 'bob', 'own');
  await bob.waitFor(1); // alice's join
  alice.send('over the old connection');
  assert.equal((await bob.waitFor(2))[1]!.text, 'over the old connection');
  await alice.close();
  await bob.close();
});

test('SIGHUP reloads the certificate files', { timeout: 30_000 }, async (t) => {
  if (!requirePrograms(t, 'openssl', ['openssl'])) return;
  const { server, cert } = await serverWithOwnCertificate(t);
  server.proc.kill('SIGHUP');
  await server.waitForLog('"reason":"SIGHUP"');
  assert.equal(await peerFingerprint(server.port, { ca: cert.cert, rejectUnauthorized: true }), cert.fingerprint);
});

test('refuses TLS below 1.2', { timeout: 30_000 }, async (t) => {
  if (!requirePrograms(t, 'openssl', ['openssl'])) return;
  const { server } = await serverWithOwnCertificate(t);
  const old = { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' } as const;
  await assert.rejects(peerFingerprint(server.port, old), { code: 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION' });
  await peerFingerprint(server.port, { maxVersion: 'TLSv1.2' });
});

test('a certificate that cannot be served stops the start with a message naming --tls-cert', { timeout: 30_000 }, async (t) => {
  if (!requirePrograms(t, 'openssl', ['openssl'])) return;
  const dir = scratchDir(t);
  const one = selfSignedCertificate(dir, 'one', ['localhost']);
  const other = selfSignedCertificate(dir, 'other', ['localhost']);
  for (const [cert, key] of [[one.certFile, other.keyFile], [path.join(dir, 'missing.crt'), one.keyFile]]) {
    const result = await runCli(['--port', '0', '--tls-cert', cert!, '--tls-key', key!]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /^error: --tls-cert: cannot use /m);
  }
});

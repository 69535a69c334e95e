// A TLS server (own certificate for example.test and www.example.test) with its --redirect
// listener on a free port, and how to find that port.

import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, type RunningServer } from './server.js';
import { selfSignedCertificate } from './certs.js';

/** The redirect listener's port, from its "redirecting HTTP to HTTPS" log line. */
export function redirectPort(server: RunningServer): number {
  const line = server.stderr().split('\n').find((l) => l.includes('redirecting HTTP to HTTPS'));
  assert.ok(line, 'the redirect listener logged its address');
  return Number(new URL(JSON.parse(line).url).port);
}

/** mles with its own certificate for example.test and www.example.test, plus --redirect on a free port. */
export async function startWithRedirect(t: TestContext, extra: string[] = []): Promise<RunningServer> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mles-redirect-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const cert = selfSignedCertificate(dir, 'site', ['example.test', 'www.example.test'], ['127.0.0.1']);
  const server = await startServer([
    '--domains', 'example.test', '--domains', 'www.example.test', '--host', '127.0.0.1',
    '--tls-cert', cert.certFile, '--tls-key', cert.keyFile, '--redirect', '--http-port', '0', ...extra,
  ]);
  t.after(() => server.stop());
  return server;
}

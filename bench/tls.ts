// `npm run bench -- --tls`: every case over wss://. One self-signed certificate for 127.0.0.1
// per run (ECDSA P-256, as Let's Encrypt issues by default), made with openssl in a temporary
// folder that is removed when the run ends; nothing is committed. The generators trust it
// through NODE_EXTRA_CA_CERTS, set before they are forked (Node reads it at start-up).

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface BenchTls {
  /** PEM files. */
  cert: string;
  key: string;
}

export function makeCertificate(): BenchTls {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mles-bench-tls-'));
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  process.env.NODE_EXTRA_CA_CERTS = cert;
  return { cert, key };
}

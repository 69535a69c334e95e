// Lean start (issue 14): a local-mode server does not load what only other modes use. The
// server runs with a test-only loader (test/helpers/record-modules.mjs) that records every module
// it loads; RSS itself is too noisy to assert (the figures are in docs/benchmark.md).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from './helpers/ports.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Starts `mles <args>`, waits for its listening line, stops it; returns the module URLs it loaded. */
async function modulesLoaded(args: string[]): Promise<string[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mles-lean-'));
  try {
    const record = path.join(dir, 'modules.txt');
    const child = spawn(process.execPath, ['--import', 'tsx', '--import', './test/helpers/record-modules.mjs', 'src/cli.ts', '--port', '0', ...args], {
      cwd: ROOT, env: { ...process.env, MLES_RECORD_MODULES: record }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk));
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (chunk: Buffer) => {
        stdout += chunk;
        if (stdout.includes('listening on')) resolve();
      });
      child.once('exit', (code) => reject(new Error(`mles exited ${code}: ${stderr}`)));
    });
    child.kill('SIGTERM');
    await once(child, 'exit');
    return fs.readFileSync(record, 'utf8').split('\n').filter(Boolean);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const loads = (modules: string[], name: string): boolean => modules.some((url) => url.includes(`/node_modules/${name}/`));

test('local mode with memory history loads no ACME, Redis, MQTT, metrics, SQLite, TOML or MIME package', async () => {
  const modules = await modulesLoaded(['--history', 'memory']);
  assert.ok(loads(modules, 'ws'), 'the recorder sees packages'); // the loader works at all
  for (const name of ['acme-client', 'ioredis', 'mqtt', 'prom-client', 'better-sqlite3', 'smol-toml', 'mime-types', 'mime-db']) {
    assert.equal(loads(modules, name), false, `${name} is loaded in local mode`);
  }
});

test('each mode loads its own package: SQLite history, --admin-port, --config, --mqtt', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mles-lean-mode-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const config = path.join(dir, 'mles.toml');
  fs.writeFileSync(config, 'limit = 10\n');
  // Nothing listens on the broker's port: the server starts all the same, its bridge retrying.
  const broker = `mqtt://127.0.0.1:${await freePort()}`;
  const modules = await modulesLoaded(['--history', `sqlite:${path.join(dir, 'h.db')}`, '--admin-port', '0', '--config', config, '--mqtt', broker]);
  for (const name of ['better-sqlite3', 'prom-client', 'smol-toml', 'mqtt']) assert.ok(loads(modules, name), `${name} is not loaded`);
  for (const name of ['acme-client', 'ioredis']) assert.equal(loads(modules, name), false, `${name} is loaded`);
});

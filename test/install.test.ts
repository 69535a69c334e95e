// The package as a user gets it: `npm pack` (which builds dist/ through the prepare script),
// `npm install -g` of the tarball into a temporary prefix with the real npm, and the installed
// `mles` run from there. Also the systemd unit the package ships, checked by systemd-analyze.
//
// The install compiles better-sqlite3 from source (prebuild-install cannot reach GitHub from
// every machine, then node-gyp builds it: about a minute on two cores), so the whole file takes
// one to two minutes. The tests share one pack and one install.

import { test, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { ROOT } from './helpers/server.js';
import { requirePrograms } from './helpers/programs.js';
import { TestClient } from './helpers/client.js';

const run = promisify(execFile);
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';
/** The install builds a native module: generous, but bounded so a hung build fails the run. */
const INSTALL_TIMEOUT_MS = 8 * 60_000;

let scratch: string;
let tarball: string;
let files: string[];
let prefix: string;
let installOutput = '';
let installed: Promise<void>;

before(async () => {
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'mles-install-'));
  // npm pack runs `prepare` (npm run build), so this also proves a build from the sources.
  const { stdout } = await run(NPM, ['pack', '--json', '--pack-destination', scratch], {
    cwd: ROOT,
    timeout: INSTALL_TIMEOUT_MS,
    maxBuffer: 64 * 1024 * 1024,
  });
  // The JSON array is the last thing on stdout; the build's own output may come before it.
  const report = JSON.parse(stdout.slice(stdout.indexOf('[\n'))) as Array<{ filename: string; files: Array<{ path: string }> }>;
  tarball = path.join(scratch, report[0]!.filename);
  files = report[0]!.files.map((f) => f.path);
  prefix = path.join(scratch, 'prefix');
  // npm 11's strict-allow-scripts pre-flight lstat()s <prefix>/lib before creating it.
  fs.mkdirSync(path.join(prefix, 'lib'), { recursive: true });
  // Started here, awaited by the tests that need it, so the file-list test does not wait.
  installed = (async () => {
    // The README's command, under npm 11's strict script policy (its announced default):
    // better-sqlite3's install script must be allowed by name, and the tarball's own
    // `prepare` (which npm lists for a file source although it does not run it) by its path.
    const result = await run(
      NPM,
      ['install', '-g', tarball, '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund',
        '--strict-allow-scripts', `--allow-scripts=better-sqlite3,${tarball}`],
      { cwd: scratch, timeout: INSTALL_TIMEOUT_MS, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, npm_config_update_notifier: 'false' } },
    );
    installOutput = result.stdout + result.stderr;
  })();
  // Keep an install failure for the tests that await it, not as an unhandled rejection.
  installed.catch(() => {});
}, { timeout: INSTALL_TIMEOUT_MS });

after(() => {
  if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
});

test('the tarball holds the built server, client kit, demo, LICENSE, CHANGELOG, README and the unit; no tests or benchmarks', { timeout: INSTALL_TIMEOUT_MS }, () => {
  for (const file of ['dist/src/cli.js', 'dist/src/server.js', 'dist/src/server.d.ts', 'dist/client/index.js', 'public/index.html', 'public/app.js',
    'LICENSE', 'CHANGELOG.md', 'README.md', 'packaging/mles.service', 'package.json']) {
    assert.ok(files.includes(file), `${file} is in the package`);
  }
  const strays = files.filter((f) => /^(dist\/(test|bench|web)\/|test\/|bench\/|src\/|client\/|web\/)/.test(f) || (f.endsWith('.ts') && !f.endsWith('.d.ts')));
  assert.deepEqual(strays, [], 'no sources, compiled tests or benchmarks');
  assert.match(fs.readFileSync(path.join(ROOT, 'LICENSE'), 'utf8'), /^Mozilla Public License Version 2\.0\n/);
});

test('npm install -g of the tarball puts a working mles on PATH: --version, and a server that listens', { timeout: INSTALL_TIMEOUT_MS }, async (t) => {
  await installed;
  assert.doesNotMatch(installOutput, /install-scripts/, 'the allowed scripts leave nothing unreviewed');
  const mles = path.join(prefix, 'bin', 'mles');
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
  // From the prefix's bin on PATH, as a user runs it, in a directory that is not the project.
  const env = { ...process.env, PATH: `${path.join(prefix, 'bin')}${path.delimiter}${process.env.PATH}`, MLES_KEY: '', XDG_DATA_HOME: path.join(scratch, 'data') };
  const { stdout } = await run('mles', ['--version'], { cwd: scratch, env, timeout: 30_000 });
  assert.equal(stdout, `${pkg.version}\n`);

  // --history memory needs no native module; the default SQLite history is proven below.
  for (const history of [['--history', 'memory'], []]) {
    const proc = spawn(mles, ['--port', '0', ...history], { cwd: scratch, env, stdio: ['ignore', 'pipe', 'pipe'] });
    t.after(() => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    });
    let out = '';
    let err = '';
    proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = once(proc, 'exit');
    const url = await new Promise<string>((resolve, reject) => {
      proc.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        const match = /listening on (ws:\/\/127\.0\.0\.1:\d+)\n/.exec(out);
        if (match) resolve(match[1]!);
      });
      void exited.then(([code]) => reject(new Error(`mles ${history.join(' ')} exited ${code} before listening:\n${err}`)));
    });
    // It serves the packaged demo page (public/ found from the installed dist/) and a join.
    // An answer also means the process is past start-up, so SIGTERM meets its handler.
    const page = await fetch(url.replace(/^ws/, 'http') + '/');
    assert.equal(page.status, 200);
    assert.match(await page.text(), /<html/i);
    const member = await TestClient.join(url, 'probe', 'install');
    await member.close();
    proc.kill('SIGTERM');
    const [code, signal] = await exited;
    assert.equal(code, 0, `mles ${history.join(' ')} stops cleanly on SIGTERM (got ${signal ?? code}):\n${err}`);
  }
  // The default history is SQLite in the data directory: the compiled better-sqlite3 loaded.
  assert.ok(fs.existsSync(path.join(scratch, 'data', 'mles', 'history.db')), 'history.db was created by the installed server');
});

/** Runs systemd-analyze verify on `unit`; its complaints (it exits 0 on unknown keys, so they are read from its output). */
async function verifyUnit(unit: string): Promise<string> {
  try {
    const { stdout, stderr } = await run('systemd-analyze', ['verify', '--man=no', unit], { timeout: 60_000 });
    return stdout + stderr;
  } catch (error) {
    const { stdout = '', stderr = '' } = error as { stdout?: string; stderr?: string };
    return `${stdout}${stderr}` || String(error);
  }
}

async function unitFor(t: TestContext, execStart: string): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mles-unit-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const text = fs.readFileSync(path.join(ROOT, 'packaging', 'mles.service'), 'utf8');
  // verify checks that ExecStart's program exists: point it at the mles this test installed.
  assert.match(text, /^ExecStart=\/usr\/local\/bin\/mles /m);
  const unit = path.join(dir, 'mles.service');
  fs.writeFileSync(unit, text.replace(/^ExecStart=\/usr\/local\/bin\/mles /m, `ExecStart=${execStart} `));
  return unit;
}

test('the shipped systemd unit passes systemd-analyze verify and runs mles as its own user, able to bind 443', { timeout: INSTALL_TIMEOUT_MS }, async (t) => {
  if (!requirePrograms(t, 'systemd', ['systemd-analyze'])) return;
  const text = fs.readFileSync(path.join(ROOT, 'packaging', 'mles.service'), 'utf8');
  const settings = new Set(text.split('\n').filter((line) => /^[A-Z]\w*=/.test(line)));
  for (const line of ['DynamicUser=yes', 'User=mles', 'StateDirectory=mles', 'AmbientCapabilities=CAP_NET_BIND_SERVICE',
    'CapabilityBoundingSet=CAP_NET_BIND_SERVICE', 'EnvironmentFile=-/etc/mles/mles.env', 'Restart=on-failure',
    'NoNewPrivileges=yes', 'ProtectSystem=strict', 'ProtectHome=yes', 'PrivateTmp=yes']) {
    assert.ok(settings.has(line), `the unit has ${line}`);
  }
  assert.match(text, /^ExecStart=\S+ .*--cache \/var\/lib\/mles(\s|$)/m);

  await installed;
  assert.equal(await verifyUnit(await unitFor(t, path.join(prefix, 'bin', 'mles'))), '');
  // The check can fail: a unit whose program is missing is reported.
  assert.match(await verifyUnit(await unitFor(t, path.join(scratch, 'no-such-mles'))), /no-such-mles/);
});

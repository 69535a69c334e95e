// Smoke test of the benchmark harness (`npm run bench`): a tiny quick run against every target
// must complete, exit 0, and produce plausible figures with no loss at a low fixed rate. It names
// every target, the opt-in cluster ones included. The CPU figures are checked where they must
// read more than zero: a process that burns a known CPU time, and a server run at full rate.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runToEnd, type Finished } from './helpers/server.js';
import { hasProgram, requirePrograms } from './helpers/programs.js';
import type { BenchReport, CaseResult } from '../bench/report.js';
import { TARGET_NAMES, type TargetName } from '../bench/targets/index.js';
import { CpuWindow } from '../bench/measure.js';

/** The Debian package (and program) a target needs, where it needs one. */
const PROGRAMS: Partial<Record<TargetName, string>> = {
  mosquitto: 'mosquitto', 'mles-cluster1': 'redis-server', 'mles-cluster2': 'redis-server', 'mles-rcluster2': 'redis-server',
};

function runBench(args: string[]): Promise<Finished> {
  return runToEnd(process.execPath, ['--import', 'tsx', 'bench/run.ts', ...args]);
}

/** Runs the bench with `args` into a temporary directory and returns its JSON report. */
async function benchReport(t: TestContext, args: string[]): Promise<BenchReport> {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'mles-bench-test-'));
  t.after(() => fs.rmSync(out, { recursive: true, force: true }));
  const { code, stderr } = await runBench([...args, '--out', out]);
  assert.equal(code, 0, `bench failed:\n${stderr}`);
  const json = fs.readdirSync(out).find((f) => f.endsWith('.json'));
  assert.ok(json, 'no JSON result');
  return JSON.parse(fs.readFileSync(path.join(out, json), 'utf8')) as BenchReport;
}

// A child that, told "go" on stdin, burns BURN_MS of its own CPU time (not wall time, so a busy
// machine cannot shorten it), says "done" and idles until it is killed.
const BURN_MS = 300;
const BURNER = `
process.stdin.once('data', () => {
  const start = process.cpuUsage();
  for (;;) {
    const used = process.cpuUsage(start);
    if (used.user + used.system >= ${BURN_MS * 1000}) break;
  }
  process.stdout.write('done');
  setInterval(() => {}, 1000);
});
process.stdout.write('ready');
`;

test('the CPU measure reads what a process burned, in µs, from its own pid', async (t) => {
  const child = spawn(process.execPath, ['-e', BURNER], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.after(() => child.kill('SIGKILL'));
  await once(child.stdout, 'data'); // ready: its start-up CPU is behind it
  const window = new CpuWindow([child.pid!]);
  child.stdin.write('go');
  await once(child.stdout, 'data'); // done
  const { cpuUs } = window.stop();
  // /proc counts in clock ticks (10 ms): allow a few either way, and no unit mix-up (ms, ticks).
  assert.ok(cpuUs >= (BURN_MS - 50) * 1000 && cpuUs <= (BURN_MS + 100) * 1000, `measured ${cpuUs} µs for ${BURN_MS} ms burned`);
});

test('npm run bench at full rate: the server\'s CPU per delivery is measured (more than zero)', async (t) => {
  // Half a second of a saturated server is tens of clock ticks: a zero here means the figure is
  // not measured (or not the server's), which a low-rate run cannot tell from a cheap server.
  const report = await benchReport(t, [
    '--quick', '--targets', 'mles', '--scenarios', 'fanout', '--rate', 'max', '--subscribers', '5',
    '--warmup', '0.2', '--duration', '0.5',
  ]);
  const result = report.cases.find((c) => c.scenario === 'fanout')!.results[0]!;
  assert.equal(result.status, 'ok', result.note);
  const m = result.metrics!;
  assert.ok(m.deliveriesPerSec > 0, `deliveries/s ${m.deliveriesPerSec}`);
  assert.ok(m.serverCpuUsPerDelivery > 0 && Number.isFinite(m.serverCpuUsPerDelivery), `cpu ${m.serverCpuUsPerDelivery}`);
  assert.ok(m.serverCpuPct > 0, `cpu ${m.serverCpuPct} %`);
});

test('npm run bench -- --quick, tiny: a result per target, no loss at a low fixed rate', async (t) => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'mles-bench-test-'));
  t.after(() => fs.rmSync(out, { recursive: true, force: true }));
  const { code, stdout, stderr } = await runBench([
    '--quick', '--targets', TARGET_NAMES.join(','), '--scenarios', 'fanout,join-history', '--rate', '200', '--subscribers', '5',
    '--warmup', '0.2', '--duration', '0.5', '--joins', '2', '--out', out,
  ]);
  assert.equal(code, 0, `bench failed:\n${stderr}`);
  assert.match(stdout, /== fanout S=5 P=1 B=64 rate=200\/s/);
  assert.match(stdout, /deliveries\/s/);

  const files = fs.readdirSync(out);
  const json = files.find((f) => f.endsWith('.json'));
  assert.ok(json, `no JSON result in ${files.join(', ')}`);
  assert.match(fs.readFileSync(path.join(out, 'latest.svg'), 'utf8'), /^<svg [^>]*>[\s\S]*<rect [\s\S]*<\/svg>\n$/);
  const report = JSON.parse(fs.readFileSync(path.join(out, json), 'utf8')) as BenchReport;
  assert.equal(report.quick, true);
  const fanout = report.cases.find((c) => c.scenario === 'fanout') as CaseResult;
  const history = report.cases.find((c) => c.scenario === 'join-history') as CaseResult;
  assert.deepEqual(fanout.results.map((r) => r.target), [...TARGET_NAMES]);

  for (const name of TARGET_NAMES) {
    await t.test(name, (st) => {
      const result = fanout.results.find((r) => r.target === name)!;
      const program = PROGRAMS[name];
      if (program && !hasProgram(program)) {
        assert.equal(result.status, 'skipped');
        requirePrograms(st, program, [program]); // fails in CI, skips elsewhere
        return;
      }
      assert.equal(result.status, 'ok', result.note);
      const m = result.metrics!;
      assert.ok(m.deliveriesPerSec > 0, `deliveries/s ${m.deliveriesPerSec}`);
      assert.ok(m.delivered > 0);
      assert.equal(m.delivered, m.expected);
      assert.equal(m.lost, 0);
      assert.equal(m.outOfOrder, 0);
      assert.equal(m.disconnects, 0);
      assert.ok(m.p50Ms > 0 && m.p50Ms <= m.p99Ms && m.p99Ms <= m.maxMs, `latency ${m.p50Ms} ${m.p99Ms} ${m.maxMs}`);
      // CPU time comes in clock ticks (10 ms): at this low rate an efficient server may read 0.
      // That the figure is measured at all is proven above (a burning process, a full-rate run).
      assert.ok(m.serverCpuUsPerDelivery >= 0 && Number.isFinite(m.serverCpuUsPerDelivery), `cpu ${m.serverCpuUsPerDelivery}`);
      assert.ok(m.serverRssMB > 1, `rss ${m.serverRssMB}`);

      const joins = history.results.find((r) => r.target === name)!;
      if (name === 'ws' || name === 'socketio') {
        assert.equal(joins.status, 'n/a');
      } else {
        assert.equal(joins.status, 'ok', joins.note);
        assert.equal(joins.metrics!.joins, 2);
        assert.ok(joins.metrics!.medianMs > 0, `join ${joins.metrics!.medianMs}`);
      }
    });
  }
});

test('npm run bench -- --tls: every case over wss:// with a certificate made for the run; a target without TLS is n/a; the reconnect storm resumes sessions', async (t) => {
  if (!requirePrograms(t, 'openssl mosquitto', ['openssl', 'mosquitto'])) return;
  const report = await benchReport(t, [
    '--quick', '--tls', '--targets', 'mles,ws,socketio,mosquitto', '--scenarios', 'fanout,reconnect', '--rate', '200', '--subscribers', '5',
    '--warmup', '0.2', '--duration', '0.5', '--storm', '20',
  ]);
  const [fanout, full, resumed] = report.cases;
  for (const [storm, resumes] of [[full!, 0], [resumed!, 20]] as const) {
    const mles = storm.results.find((r) => r.target === 'mles')!;
    assert.equal(mles.status, 'ok', mles.note);
    assert.equal(mles.metrics!.failed, 0);
    assert.equal(mles.metrics!.resumed, resumes, storm.title);
    assert.ok(mles.metrics!.lastMs > 0);
    assert.equal(storm.results.find((r) => r.target === 'ws')!.status, 'n/a');
  }
  assert.match(fanout!.title, /over TLS$/);
  for (const result of fanout!.results) {
    if (result.target === 'socketio') {
      assert.equal(result.status, 'n/a');
      continue;
    }
    assert.equal(result.status, 'ok', `${result.target}: ${result.note}`);
    assert.equal(result.metrics!.lost, 0, result.target);
    assert.ok(result.metrics!.delivered > 0, result.target);
  }
});

test('npm run bench -- --scenarios start: an empty server\'s RSS 1 s after it listens, and at rest (never more)', async (t) => {
  const report = await benchReport(t, ['--quick', '--targets', 'mles,ws', '--scenarios', 'start', '--rest-seconds', '1', '--mles-history', 'sqlite']);
  const [start] = report.cases;
  assert.equal(start!.scenario, 'start');
  for (const result of start!.results) {
    assert.equal(result.status, 'ok', `${result.target}: ${result.note}`);
    const { startRssMB, restRssMB } = result.metrics!;
    assert.ok(restRssMB! > 10 && restRssMB! <= startRssMB!, `${result.target}: ${startRssMB} MB at 1 s, ${restRssMB} MB at rest`);
  }
});

test('--quick without --out never writes the committed chart; a full run and an explicit --out do', async () => {
  const { resultsDir } = await import('../bench/report.js');
  const committed = path.join(process.cwd(), 'bench/results');
  assert.notEqual(path.dirname(resultsDir(undefined, true, committed)), committed);
  assert.ok(!resultsDir(undefined, true, committed).startsWith(committed));
  assert.equal(resultsDir(undefined, false, committed), committed);
  assert.equal(resultsDir('bench/results', true, committed), path.resolve('bench/results'));
});

test('npm run bench -- --quick (no --out) leaves bench/results/latest.svg as it was', async () => {
  const before = fs.readFileSync('bench/results/latest.svg');
  const { code, stderr } = await runBench([
    '--quick', '--targets', 'mles', '--scenarios', 'fanout', '--rate', '200', '--subscribers', '2', '--warmup', '0.1', '--duration', '0.2',
  ]);
  assert.equal(code, 0, stderr);
  assert.match(stderr, /chart: .*mles-bench-quick/);
  assert.deepEqual(fs.readFileSync('bench/results/latest.svg'), before);
});

test('npm run bench:store: a figure per store and shape, each a positive CPU time per append', async () => {
  const { code, stdout, stderr } = await runToEnd(process.execPath, ['--import', 'tsx', 'bench/store-floor.ts', '--appends', '200']);
  assert.equal(code, 0, stderr);
  const rows = stdout.trim().split('\n').slice(2).map((line) => line.trim().split(/\s+/).map(Number));
  assert.deepEqual(rows.map(([channels, perCommit]) => [channels, perCommit]), [[1, 8], [1, 1], [500, 8], [500, 1]]);
  for (const row of rows) {
    assert.equal(row.length, 6, `a figure per column: ${row.join(' ')}`);
    assert.ok(row.slice(2).every((figure) => figure > 0), `CPU per append: ${row.join(' ')}`);
  }
});

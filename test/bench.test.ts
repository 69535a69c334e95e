// Smoke test of the benchmark harness (`npm run bench`): a tiny quick run against every target
// must complete, exit 0, and produce plausible figures with no loss at a low fixed rate. It names
// every target, the opt-in cluster ones included.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runToEnd, type Finished } from './helpers/server.js';
import { hasProgram, requirePrograms } from './helpers/programs.js';
import type { BenchReport, CaseResult } from '../bench/report.js';
import { TARGET_NAMES, type TargetName } from '../bench/targets/index.js';

/** The Debian package (and program) a target needs, where it needs one. */
const PROGRAMS: Partial<Record<TargetName, string>> = {
  mosquitto: 'mosquitto', 'mles-cluster1': 'redis-server', 'mles-cluster2': 'redis-server',
};

function runBench(args: string[]): Promise<Finished> {
  return runToEnd(process.execPath, ['--import', 'tsx', 'bench/run.ts', ...args]);
}

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
      // CPU time comes in clock ticks (10 ms): a tiny run on an efficient server may read 0.
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

// The `mles` command (spec 7; issue: CLI, local mode, shutdown), run as a real process.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, runCli, cliCommand, ROOT } from './helpers/server.js';
import { TestClient } from './helpers/client.js';
import { RawClient, Opcode, encodeFrame } from './helpers/raw-ws.js';
import { logFormatFrom, logLevelFrom } from '../src/logger.js';
import { resolveConfig } from '../src/config.js';

const T = { timeout: 20_000 };

test('spec 7: --help lists every reference flag and this project\'s own', T, async () => {
  const [long, short] = await Promise.all([runCli(['--help']), runCli(['-h'])]);
  assert.equal(long.code, 0);
  assert.equal(short.stdout, long.stdout);
  const help = long.stdout;
  assert.match(help, /^Usage: mles \[options\]/);
  const reference = [
    '-d, --domains <DOMAINS>', '-e, --email <EMAIL>', '-c, --cache <CACHE>', '-l, --limit <LIMIT>',
    '-f, --filelimit <N>', '-w, --wwwroot <WWWROOT>', '-s, --staging', '-p, --port <PORT>', '-r, --redirect',
    '-C, --compression-cache <MB>', '--rate-limit <N>', '-P, --proxy <PREFIX=URL>', '-h, --help',
  ];
  const own = [
    '--host <ADDR>', '--http-port <PORT>', '--acme-directory <URL>', '--acme-ca <FILE>', '--tls-cert <FILE>',
    '--tls-key <FILE>', '--history <SPEC>', '--peer <URL>', '--peer-uid <UID>', '--redis <URL>', '--workers <N>',
    '--mqtt <URL>', '--mqtt-prefix <P>', '--admin-port <PORT>', '--ping-interval <MS>', '--max-message-size <B>', '--max-buffered <B>', '--join-timeout <MS>',
  ];
  for (const flag of [...reference, ...own]) assert.ok(help.includes(flag), `--help lists ${flag}`);
  assert.match(help, /--ping-interval <MS>[^-]*\(default: 24000\)/);
  assert.match(help, /MLES_KEY/);
  assert.match(help, /MLES_LOG/);
});

test('--help states the ranges and defaults the README states', T, async () => {
  // Commander wraps descriptions to the width; compare the text with its line breaks undone.
  const help = (await runCli(['--help'])).stdout.replace(/\s+/g, ' ');
  for (const text of [
    '--limit <LIMIT> history messages kept per channel, 1..999999 (default: 200)',
    '--cache <CACHE> keeps the ACME account key and certificates, and (unless --history) the history database',
    '--workers <N> processes sharing the port, each a cluster node; more than 1 needs --redis or --redis-cluster (default: 1)',
    '--history-bytes <B> history payload bytes kept per channel, newest kept; 0: no byte cap (default: 64MiB)',
    '(binary) (default: 8MiB)', // --max-message-size, as the README writes it, not 8388608
    'too slow (default: 64MiB)', // --max-buffered
    '0 takes a free port',
    '0 disables the cache (default: 24)',
    '--config <FILE>',
    '--print-config',
    '-V, --version',
    'MLES_LOG_FORMAT',
  ]) {
    assert.ok(help.includes(text), `--help says "${text}":\n${help}`);
  }
});

test('--version prints the version in package.json and exits 0', T, async () => {
  const { version } = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
  const [long, short] = await Promise.all([runCli(['--version']), runCli(['-V'])]);
  assert.deepEqual([long.code, long.stdout, long.stderr], [0, `${version}\n`, '']);
  assert.deepEqual([short.code, short.stdout], [0, `${version}\n`]);
});

test('spec 7: malformed flags exit non-zero with a message naming the flag', T, async () => {
  const cases: Array<[string[], string]> = [
    [['--port', '70000'], '--port'],
    [['--limit', '0'], '--limit'],
    [['--proxy', 'api'], '--proxy'],
    [['--bogus'], '--bogus'],
    [['--max-message-size', '12XB'], '--max-message-size'],
  ];
  const results = await Promise.all(cases.map(([args]) => runCli(['--history', 'memory', ...args])));
  results.forEach((result, i) => {
    const [args, flag] = cases[i]!;
    assert.notEqual(result.code, 0, args.join(' '));
    assert.ok(result.stderr.includes(flag), `${args.join(' ')}: stderr names ${flag}:\n${result.stderr}`);
    assert.equal(result.stdout, '', 'never reports listening');
  });
});

test('local mode: defaults are 127.0.0.1:8080 without domains, port 443 with domains', T, () => {
  const local = resolveConfig();
  assert.deepEqual([local.host, local.port, local.domains], ['127.0.0.1', 8080, []]);
  assert.equal(resolveConfig({ domains: ['example.com'] }).port, 443);
});

/** Runs the CLI until it listens, then sends `signal`; returns its whole stdout and exit. */
async function runUntilSignal(args: string[], signal: NodeJS.Signals, whileListening: (url: string) => Promise<void>) {
  const [cmd, argv] = cliCommand(['--history', 'memory', '--port', '0', ...args]);
  const proc = spawn(cmd, argv, { cwd: ROOT, env: { ...process.env, MLES_LOG: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = once(proc, 'exit');
  let stdout = '';
  let stderr = '';
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  try {
    const url = await new Promise<string>((resolve, reject) => {
      proc.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
        const match = /^listening on (\S+)\n/.exec(stdout);
        if (match) resolve(match[1]!);
      });
      void exited.then(() => reject(new Error(`exited before listening:\n${stderr}`)));
    });
    await whileListening(url);
    proc.kill(signal);
    const [code] = (await exited) as [number | null];
    return { stdout, stderr, code };
  } finally {
    if (proc.exitCode === null) proc.kill('SIGKILL');
  }
}

test('local mode: stdout is exactly one line, "listening on ws://HOST:PORT", and that address works', T, async () => {
  for (const [host, shown] of [['127.0.0.1', '127.0.0.1'], ['::1', '[::1]']]) {
    let port = '';
    const run = await runUntilSignal(['--host', host], 'SIGTERM', async (url) => {
      port = new URL(url).port;
      const a = await TestClient.join(url, 'a', 'one-line');
      const b = await TestClient.join(url, 'b', 'one-line');
      b.send('hi');
      assert.equal((await a.waitFor(1))[0]!.text, 'hi');
      await Promise.all([a.close(), b.close()]);
    });
    assert.ok(Number(port) > 0);
    assert.equal(run.stdout, `listening on ws://${shown}:${port}\n`);
    assert.equal(run.code, 0);
  }
});

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  test(`shutdown: ${signal} closes every client with 1001 and exits 0`, T, async () => {
    const server = await startServer();
    const a = await TestClient.join(server.url, 'a', 'shutdown');
    const b = await TestClient.join(server.url, 'b', 'shutdown');
    await b.waitFor(1);
    const unjoined = new TestClient(server.url);
    await unjoined.opened();
    // A client that never answers the close: the server still exits, after a short grace.
    const deaf = signal === 'SIGINT' ? await RawClient.connect(server.port) : undefined;
    deaf?.write(encodeFrame(Opcode.text, JSON.stringify({ uid: 'deaf', channel: 'shutdown' })));
    assert.equal(await server.stop(signal), 0);
    for (const client of [a, b, unjoined]) {
      assert.deepEqual(await client.closed, { code: 1001, reason: 'server shutting down' });
    }
    if (deaf) {
      await deaf.ended;
      assert.deepEqual(deaf.closeReceived(), { code: 1001, reason: 'server shutting down' });
    }
  });
}

test('shutdown: SIGTERM flushes the history store: a restart replays everything received before it', T, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mles-flush-'));
  try {
    const args = ['--history', `sqlite:${path.join(dir, 'history.db')}`];
    const first = await startServer(args);
    const writer = await TestClient.join(first.url, 'writer', 'flush');
    for (let i = 0; i < 100; i++) writer.send(`m${i}`);
    await writer.close(); // the server has taken every frame before it answers the close
    assert.equal(await first.stop('SIGTERM'), 0);

    const second = await startServer(args);
    try {
      const reader = await TestClient.join(second.url, 'reader', 'flush');
      const replay = (await reader.waitFor(101)).map((m) => m.text);
      assert.deepEqual(replay.slice(1), Array.from({ length: 100 }, (_, i) => `m${i}`));
      await reader.close();
    } finally {
      assert.equal(await second.stop(), 0);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** What the server logs at a level: runs a refused join, a join and a shutdown. */
async function logsWith(env: NodeJS.ProcessEnv): Promise<Array<Record<string, unknown>>> {
  const server = await startServer([], { env: { MLES_LOG: '', RUST_LOG: '', ...env } });
  const refused = new TestClient(server.url);
  await refused.opened();
  refused.send(Buffer.from('binary'));
  await refused.closed;
  const member = await TestClient.join(server.url, 'member', 'logs');
  const other = await TestClient.join(server.url, 'other', 'logs');
  await other.waitFor(1);
  await Promise.all([member.close(), other.close()]);
  assert.equal(await server.stop(), 0);
  const lines = server.stderr().split('\n').filter((line) => line.startsWith('{'));
  return lines.map((line) => JSON.parse(line) as Record<string, unknown>);
}

test('local mode: MLES_LOG (and RUST_LOG) set the level of structured logs on stderr, default warn', T, async () => {
  const [byDefault, debug, rustInfo, mlesWins] = await Promise.all([
    logsWith({}),
    logsWith({ MLES_LOG: 'debug' }),
    logsWith({ RUST_LOG: 'mles=info' }),
    logsWith({ MLES_LOG: 'warn', RUST_LOG: 'debug' }),
  ]);
  const messages = (lines: Array<Record<string, unknown>>): unknown[] => lines.map((l) => l.msg);
  assert.deepEqual(byDefault, [], 'nothing below warn by default');
  assert.deepEqual(mlesWins, [], 'MLES_LOG wins over RUST_LOG');
  for (const lines of [debug, rustInfo]) {
    assert.ok(messages(lines).includes('join refused'));
    assert.ok(messages(lines).includes('shutting down'));
  }
  assert.ok(messages(debug).includes('joined'));
  assert.ok(!messages(rustInfo).includes('joined'), 'no debug lines at info');
  for (const line of debug) {
    assert.equal(typeof line.level, 'number');
    assert.equal(typeof line.time, 'number');
    assert.equal(line.name, 'mles');
  }
  const refusal = rustInfo.find((l) => l.msg === 'join refused')!;
  assert.deepEqual([refusal.code, refusal.reason], [1003, 'first frame must be text']);
});

test('local mode: log level parsing from MLES_LOG and RUST_LOG values', T, () => {
  assert.equal(logLevelFrom({}), 'warn');
  assert.equal(logLevelFrom({ MLES_LOG: 'error' }), 'error');
  assert.equal(logLevelFrom({ MLES_LOG: 'DEBUG' }), 'debug');
  assert.equal(logLevelFrom({ MLES_LOG: 'off' }), 'silent');
  assert.equal(logLevelFrom({ MLES_LOG: 'nonsense', RUST_LOG: 'info' }), 'info');
  assert.equal(logLevelFrom({ RUST_LOG: 'mles=trace' }), 'trace');
  assert.equal(logLevelFrom({ RUST_LOG: 'hyper=info,mles=debug' }), 'debug');
  assert.equal(logLevelFrom({ MLES_LOG: 'warn', RUST_LOG: 'debug' }), 'warn');
});

test('MLES_LOG_FORMAT=pretty: readable log lines on stderr, not JSON; stdout unchanged', T, async () => {
  const server = await startServer([], { env: { MLES_LOG: 'info', MLES_LOG_FORMAT: 'pretty' } });
  const refused = new TestClient(server.url);
  await refused.opened();
  refused.send(Buffer.from('binary'));
  await refused.closed;
  await server.waitForLog('join refused');
  assert.equal(await server.stop(), 0);
  const lines = server.stderr().split('\n').filter((line) => line !== '' && !line.startsWith('history: '));
  assert.ok(lines.length >= 2, server.stderr());
  for (const line of lines) assert.ok(!line.startsWith('{'), `not JSON: ${line}`);
  // time, level, message, then the fields as key=value
  assert.ok(lines.some((line) => /^\d\d:\d\d:\d\d\.\d{3} INFO {2}join refused .*code=1003 reason="first frame must be text"/.test(line)), server.stderr());
  assert.ok(lines.some((line) => /^\d\d:\d\d:\d\d\.\d{3} INFO {2}shutting down signal=SIGTERM$/.test(line)), server.stderr());
});

test('MLES_LOG_FORMAT: pretty on a terminal unless json is asked for, JSON elsewhere unless pretty is', T, () => {
  assert.equal(logFormatFrom({}, true), 'pretty');
  assert.equal(logFormatFrom({}, false), 'json');
  assert.equal(logFormatFrom({ MLES_LOG_FORMAT: 'json' }, true), 'json');
  assert.equal(logFormatFrom({ MLES_LOG_FORMAT: 'PRETTY' }, false), 'pretty');
  assert.equal(logFormatFrom({ MLES_LOG_FORMAT: 'nonsense' }, false), 'json');
});

test('--redis-cluster: seed URLs checked, exclusive with --redis, passwords never printed', T, async () => {
  const both = await runCli(['--redis', 'redis://127.0.0.1:1', '--redis-cluster', 'redis://127.0.0.1:2']);
  assert.notEqual(both.code, 0);
  assert.match(both.stderr, /--redis-cluster: give either --redis .* or --redis-cluster/);
  const scheme = await runCli(['--redis-cluster', 'http://:hunter2@127.0.0.1:2']);
  assert.match(scheme.stderr, /--redis-cluster: .*must use redis or rediss/);
  assert.doesNotMatch(scheme.stderr, /hunter2/);
  const printed = await runCli(['--print-config', '--redis-cluster', 'redis://:hunter2@127.0.0.1:2', '--redis-cluster', 'redis://127.0.0.1:3']);
  assert.equal(printed.code, 0);
  assert.match(printed.stdout, /redis-cluster = \["redis:\/\/:\*\*\*@127\.0\.0\.1:2","redis:\/\/127\.0\.0\.1:3"\]/);
  assert.doesNotMatch(printed.stdout, /hunter2/);
  const unreachable = await runCli(['--port', '0', '--redis-cluster', 'redis://:hunter2@127.0.0.1:1']);
  assert.notEqual(unreachable.code, 0);
  assert.match(unreachable.stderr, /--redis-cluster: cannot reach Redis at 127\.0\.0\.1:1/);
  assert.doesNotMatch(unreachable.stderr, /hunter2/);
});

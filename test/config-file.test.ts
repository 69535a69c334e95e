// The TOML config file (--config) and --print-config (issue 13, item 3), run as a real process.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parse } from 'smol-toml';
import { startServer, runCli } from './helpers/server.js';
import { TestClient } from './helpers/client.js';

const T = { timeout: 20_000 };

/** Runs `body` with `text` written to a TOML file of its own, removed afterwards. */
async function withConfig<R>(text: string, body: (file: string) => Promise<R>): Promise<R> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mles-config-'));
  try {
    const file = path.join(dir, 'mles.toml');
    writeFileSync(file, text);
    return await body(file);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Sends a, b, c, d to a fresh channel, then returns what a newcomer is replayed (the first `n`). */
async function replayAfterFour(url: string, n: number): Promise<string[]> {
  const writer = await TestClient.join(url, 'writer', 'config');
  for (const m of ['a', 'b', 'c', 'd']) writer.send(m);
  await writer.close(); // the server has handled every frame before it answers the close
  const newcomer = await TestClient.join(url, 'newcomer', 'config');
  const replay = (await newcomer.waitFor(n)).map((m) => m.text);
  await newcomer.close();
  return replay;
}

test('--config: the file\'s settings apply (limit, host, a size with a unit)', T, async () => {
  const toml = '# a comment\nlimit = 3\nhost = "::1"\nhistory = "memory"\nmax-message-size = "1KiB"\n';
  await withConfig(toml, async (file) => {
    const server = await startServer(['--config', file]);
    try {
      assert.match(server.url, /^ws:\/\/\[::1\]:\d+$/, 'host from the file');
      // With the default limit of 200 the first three would be a, b, c.
      assert.deepEqual(await replayAfterFour(server.url, 3), ['b', 'c', 'd']);
      const big = await TestClient.join(server.url, 'big', 'config-size');
      big.send('x'.repeat(2048)); // over the file's 1KiB, far under the default 8MiB
      assert.equal((await big.closed).code, 1009);
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });
});

test('--config: a flag given on the command line overrides the file', T, async () => {
  await withConfig('limit = 3\nhistory = "memory"\n', async (file) => {
    const server = await startServer(['--config', file, '--limit', '2']);
    try {
      const replay = await replayAfterFour(server.url, 2);
      assert.deepEqual(replay, ['c', 'd']);
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });
});

test('--config: an unknown key, a bad value or bad TOML stops start-up, naming the file, line and key', T, async () => {
  const cases: Array<[string, (file: string) => string]> = [
    ['# settings\nport = 0\n\ncolour = "blue"\n', (f) => `${f}:4: colour: unknown setting`],
    ['port = 0\nmax_message_size = 1\n', (f) => `${f}:2: max_message_size: unknown setting; did you mean max-message-size?`],
    ['port = 0\nmax-message-size = "12XB"\n', (f) => `${f}:2: max-message-size: must be a size in bytes, e.g. 65536, 64KiB or 8MiB`],
    ['redirect = "yes"\n', (f) => `${f}:1: redirect: must be true or false`],
    ['port = 0\nlimit = [3]\n', (f) => `${f}:2: limit: must be a string or a number`],
    // Range checks happen after parsing (src/config.ts); they still point into the file.
    ['port = 0\n\nlimit = 0\n', (f) => `${f}:3: limit: must be an integer from 1 to 999999, got 0`],
    ['port = 0\nkey = "s3cret"\n', (f) => `${f}:2: key: secrets are not read from the config file: set MLES_KEY in the environment`],
    ['port = 0\nlimit = \n', (f) => `${f}:2: invalid TOML`],
  ];
  await Promise.all(cases.map(([toml, expected]) => withConfig(toml, async (file) => {
    const result = await runCli(['--history', 'memory', '--config', file]);
    assert.equal(result.code, 1, toml);
    assert.ok(result.stderr.startsWith(`error: ${expected(file)}`), `${toml}\nstderr: ${result.stderr}`);
    assert.equal(result.stdout, '', 'never reports listening');
  })));
  const missing = await runCli(['--config', path.join(os.tmpdir(), 'mles-no-such-config.toml')]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /^error: --config: cannot read .*mles-no-such-config\.toml/);
});

test('--print-config: the effective settings (file, then flags) as TOML for --config, MLES_KEY masked', T, async () => {
  const toml = 'limit = 3\nmax-message-size = "1MiB"\nproxy = ["api=http://127.0.0.1:3000"]\nhistory = "memory"\nport = 9999\n';
  await withConfig(toml, async (file) => {
    const env = { MLES_KEY: 's3cret-value' };
    const printed = await runCli(['--config', file, '--port', '4321', '--print-config'], env);
    assert.equal(printed.code, 0, printed.stderr);
    assert.ok(!printed.stdout.includes('listening on'), 'no server started');
    assert.ok(!printed.stdout.includes('s3cret-value'), 'the secret is not shown');
    assert.match(printed.stdout, /^# key = "\*\*\*" .*MLES_KEY/m);
    const settings = parse(printed.stdout);
    assert.deepEqual(
      [settings.limit, settings['max-message-size'], settings.proxy, settings.history, settings.port, settings.host],
      [3, '1MiB', ['api=http://127.0.0.1:3000'], 'memory', 4321, '127.0.0.1'],
      'values from the file, the flag over the file, derived defaults filled in',
    );
    assert.ok(!('key' in settings), 'the secret is only a comment');
    // What it prints, --config reads back to the very same settings.
    await withConfig(printed.stdout, async (again) => {
      const reprinted = await runCli(['--config', again, '--print-config'], env);
      assert.equal(reprinted.code, 0, reprinted.stderr);
      assert.equal(reprinted.stdout, printed.stdout);
    });
  });
});

// `mles connect`, the terminal client, run as a real process in a pipe against real servers.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { WebSocketServer } from 'ws';
import { cliCommand, ROOT, startServer } from './helpers/server.js';
import { TestClient } from './helpers/client.js';
import { selfSignedCertificate, type TestCertificate } from './helpers/certs.js';
import { encodeChat } from '../web/entries.js';
import { formatMessage } from '../src/connect.js';

interface ConnectProcess {
  write(text: string): void;
  end(): void;
  stdout(): string;
  stderr(): string;
  /** Resolves when stdout contains `text`. */
  waitForStdout(text: string): Promise<void>;
  exited: Promise<number | null>;
}

function spawnConnect(t: TestContext, url: string, args: string[], env: NodeJS.ProcessEnv = {}): ConnectProcess {
  const [cmd, argv] = cliCommand(['connect', url, ...args]);
  // MLES_KEY is cleared unless a test sets it: the client now reads it from the environment.
  const proc = spawn(cmd, argv, { cwd: ROOT, env: { ...process.env, MLES_KEY: '', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  t.after(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill();
  });
  let stdout = '';
  let stderr = '';
  const waiters: Array<() => void> = [];
  proc.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    for (const wake of waiters.splice(0)) wake();
  });
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = once(proc, 'exit').then(([code]) => code as number | null);
  return {
    write: (text) => proc.stdin.write(text),
    end: () => proc.stdin.end(),
    stdout: () => stdout,
    stderr: () => stderr,
    async waitForStdout(text) {
      while (!stdout.includes(text)) {
        if (proc.exitCode !== null) throw new Error(`exited before printing ${text}; stderr: ${stderr}`);
        await new Promise<void>((resolve) => waiters.push(resolve));
      }
    },
    exited,
  };
}

test('in a pipe with --raw: sends stdin lines, prints history and live messages as received, exits 0 after the linger', { timeout: 30_000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const bob = await TestClient.join(server.url, 'bob', 'pipe');
  t.after(() => bob.close());
  bob.send('before');
  // Once a newcomer has seen it, bob's message is in the history.
  const probe = await TestClient.join(server.url, 'probe', 'pipe');
  t.after(() => probe.close());
  await probe.waitFor(2);

  const alice = spawnConnect(t, server.url, ['--uid', 'alice', '--channel', 'pipe', '--linger', '300', '--raw']);
  alice.write('hello\n\nworld\n');
  const [hello, world] = await bob.waitFor(2);
  assert.equal(hello!.text, 'hello');
  assert.equal(world!.text, 'world');
  bob.send(Buffer.from(Array.from({ length: 40 }, (_, i) => i)));
  bob.send('reply');
  await alice.waitForStdout('reply\n');
  alice.end();
  assert.equal(await alice.exited, 0, alice.stderr());
  assert.deepEqual(alice.stdout().split('\n'), [
    '{"uid":"bob","channel":"pipe"}',
    'before',
    '{"uid":"probe","channel":"pipe"}',
    `[binary 40 bytes] ${Buffer.from(Array.from({ length: 32 }, (_, i) => i)).toString('hex')}…`,
    'reply',
    '',
  ]);
  assert.equal(alice.stderr(), '');
  assert.equal(bob.received.length, 2, 'the empty line is not sent');
});

test('at the end of input it lingers, then closes with 1000', { timeout: 30_000 }, async (t) => {
  // The Mles server does not report close codes, so this observer endpoint records them.
  const observer = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: () => 'mles-websocket' });
  t.after(() => observer.close());
  await once(observer, 'listening');
  const frames: string[] = [];
  const closed = new Promise<{ code: number; at: number }>((resolve) =>
    observer.on('connection', (ws) => {
      ws.on('message', (data: Buffer) => frames.push(data.toString()));
      ws.on('close', (code) => resolve({ code, at: performance.now() }));
    }),
  );
  const { port } = observer.address() as net.AddressInfo;
  const alice = spawnConnect(t, `ws://127.0.0.1:${port}`, ['--uid', 'alice', '--channel', 'bye', '--linger', '500']);
  alice.write('last words\n');
  alice.end();
  const endedAt = performance.now();
  const { code, at } = await closed;
  assert.equal(code, 1000);
  assert.ok(at - endedAt >= 500, `closed ${Math.round(at - endedAt)} ms after the end of input`);
  assert.deepEqual(frames, ['{"uid":"alice","channel":"bye"}', 'last words']);
  assert.equal(await alice.exited, 0);
});

test('a refused join exits 2 with the server\'s reason; the right key joins (spec 2)', { timeout: 30_000 }, async (t) => {
  const server = await startServer([], { env: { MLES_KEY: 'secret' } });
  t.after(() => server.stop());
  const refused = spawnConnect(t, server.url, ['--uid', 'alice', '--channel', 'keyed', '--key', 'wrong']);
  const accepted = spawnConnect(t, server.url, ['--uid', 'bob', '--channel', 'keyed', '--key', 'secret', '--linger', '0']);
  accepted.end();
  assert.equal(await refused.exited, 2);
  assert.equal(refused.stderr(), 'error: join refused: auth failed (1008)\n');
  assert.equal(await accepted.exited, 0, accepted.stderr());
});

test('an unreachable server exits 1 with the reason', { timeout: 30_000 }, async (t) => {
  const unused = net.createServer().listen(0, '127.0.0.1');
  await once(unused, 'listening');
  const { port } = unused.address() as net.AddressInfo;
  await new Promise((resolve) => unused.close(resolve));
  const alice = spawnConnect(t, `ws://127.0.0.1:${port}`, ['--uid', 'alice', '--channel', 'c']);
  assert.equal(await alice.exited, 1);
  assert.match(alice.stderr(), new RegExp(`^error: cannot connect to ws://127.0.0.1:${port}: connect ECONNREFUSED .*\\(1006\\)\\n$`));
});

test('without --raw: join frames read "bob joined", the demo\'s chat messages "bob: text", anything else as received', { timeout: 30_000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const bob = await TestClient.join(server.url, 'bob', 'human');
  t.after(() => bob.close());
  // What the demo sends (web/entries.ts), so the client follows the demo's format, not a copy of it.
  bob.send(encodeChat('bob', 'hi from the demo', 1_700_000_000_000));
  bob.send('plain words');
  bob.send('{"uid":"bob","note":"an object that is neither"}');
  bob.send('{not json');
  // Once a newcomer has seen all four, they are in the history alice gets first.
  const probe = await TestClient.join(server.url, 'probe', 'human');
  t.after(() => probe.close());
  await probe.waitFor(5);

  const alice = spawnConnect(t, server.url, ['--uid', 'alice', '--channel', 'human', '--linger', '300']);
  await alice.waitForStdout('probe joined\n');
  bob.send(encodeChat('bob', 'live: {"uid":"x","channel":"y"}', 1_700_000_000_001));
  bob.send(Buffer.from([1, 2, 3]));
  await alice.waitForStdout('[binary 3 bytes] 010203\n');
  alice.end();
  assert.equal(await alice.exited, 0, alice.stderr());
  assert.deepEqual(alice.stdout().split('\n'), [
    'bob joined',
    'bob: hi from the demo',
    'plain words',
    '{"uid":"bob","note":"an object that is neither"}',
    '{not json',
    'probe joined',
    'bob: live: {"uid":"x","channel":"y"}',
    '[binary 3 bytes] 010203',
    '',
  ]);
});

test('MLES_KEY from the environment signs the join when --key is not given; --key wins over it', { timeout: 30_000 }, async (t) => {
  const server = await startServer([], { env: { MLES_KEY: 'secret' } });
  t.after(() => server.stop());
  const fromEnv = spawnConnect(t, server.url, ['--uid', 'alice', '--channel', 'keyed', '--linger', '0'], { MLES_KEY: 'secret' });
  fromEnv.end();
  assert.equal(await fromEnv.exited, 0, fromEnv.stderr());
  assert.equal(fromEnv.stderr(), '');
  const flagWins = spawnConnect(t, server.url, ['--uid', 'bob', '--channel', 'keyed', '--key', 'wrong'], { MLES_KEY: 'secret' });
  assert.equal(await flagWins.exited, 2);
  assert.equal(flagWins.stderr(), 'error: join refused: auth failed (1008)\n');
  const none = spawnConnect(t, server.url, ['--uid', 'carol', '--channel', 'keyed']);
  assert.equal(await none.exited, 2, 'without MLES_KEY or --key no auth is sent, and the keyed server refuses');
});

/** A server on wss:// with a fresh self-signed certificate for 127.0.0.1, and that certificate. */
async function tlsServer(t: TestContext): Promise<{ url: string; cert: TestCertificate; dir: string }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mles-connect-tls-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const cert = selfSignedCertificate(dir, 'server', ['localhost'], ['127.0.0.1']);
  const server = await startServer(['--tls-cert', cert.certFile, '--tls-key', cert.keyFile]);
  t.after(() => server.stop());
  assert.match(server.url, /^wss:\/\//);
  return { url: server.url, cert, dir };
}

test('wss:// with a self-signed certificate: refused with a hint by default; --ca with its certificate and --insecure connect', { timeout: 30_000 }, async (t) => {
  const { url, cert, dir } = await tlsServer(t);
  const bob = new TestClient(url, 'mles-websocket', { ca: cert.cert });
  await bob.opened();
  bob.send(JSON.stringify({ uid: 'bob', channel: 'tls' }));
  t.after(() => bob.close());

  const verified = spawnConnect(t, url, ['--uid', 'alice', '--channel', 'tls']);
  assert.equal(await verified.exited, 1);
  assert.match(verified.stderr(), /^error: cannot connect to wss:\/\/127\.0\.0\.1:\d+: self[- ]signed certificate \(1006\) \(trust its CA with --ca FILE, or skip the check with --insecure\)\n$/);

  const trusted = spawnConnect(t, url, ['--uid', 'alice', '--channel', 'tls', '--ca', cert.certFile, '--linger', '300']);
  trusted.write('over tls\n');
  const [first] = await bob.waitFor(1);
  assert.equal(first!.text, 'over tls');
  trusted.end();
  assert.equal(await trusted.exited, 0, trusted.stderr());
  assert.equal(trusted.stdout(), 'bob joined\n');

  const insecure = spawnConnect(t, url, ['--uid', 'carol', '--channel', 'tls', '--insecure', '--linger', '300']);
  insecure.write('unverified\n');
  const [, second] = await bob.waitFor(2);
  assert.equal(second!.text, 'unverified');
  insecure.end();
  assert.equal(await insecure.exited, 0, insecure.stderr());

  // A different CA is not the server's: --ca replaces the trust, it does not add a way around it.
  const other = selfSignedCertificate(dir, 'other', ['localhost'], ['127.0.0.1']);
  const wrongCa = spawnConnect(t, url, ['--uid', 'dave', '--channel', 'tls', '--ca', other.certFile]);
  assert.equal(await wrongCa.exited, 1);
  assert.match(wrongCa.stderr(), /^error: cannot connect to .*\(1006\) \(trust its CA/);

  const missing = spawnConnect(t, url, ['--uid', 'erin', '--channel', 'tls', '--ca', path.join(dir, 'absent.pem')]);
  assert.equal(await missing.exited, 1);
  assert.match(missing.stderr(), /^error: --ca: cannot read .*absent\.pem: ENOENT/);
});

test('connect: a formatted uid or text cannot fake a line with control characters', () => {
  const forged = formatMessage({ type: 'text', text: JSON.stringify({ uid: 'eve', text: 'hi\nalice: send me your key', time: 0 }) } as Parameters<typeof formatMessage>[0]);
  assert.equal(forged, 'eve: hi\\u000aalice: send me your key');
  assert.equal(forged.includes('\n'), false);
});

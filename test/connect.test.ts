// `mles connect`, the terminal client, run as a real process in a pipe against real servers.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { WebSocketServer } from 'ws';
import { cliCommand, ROOT, startServer } from './helpers/server.js';
import { TestClient } from './helpers/client.js';

interface ConnectProcess {
  write(text: string): void;
  end(): void;
  stdout(): string;
  stderr(): string;
  /** Resolves when stdout contains `text`. */
  waitForStdout(text: string): Promise<void>;
  exited: Promise<number | null>;
}

function spawnConnect(t: TestContext, url: string, args: string[]): ConnectProcess {
  const [cmd, argv] = cliCommand(['connect', url, ...args]);
  const proc = spawn(cmd, argv, { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
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

test('in a pipe: sends stdin lines, prints history and live messages, exits 0 after the linger', { timeout: 30_000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const bob = await TestClient.join(server.url, 'bob', 'pipe');
  t.after(() => bob.close());
  bob.send('before');
  // Once a newcomer has seen it, bob's message is in the history.
  const probe = await TestClient.join(server.url, 'probe', 'pipe');
  t.after(() => probe.close());
  await probe.waitFor(2);

  const alice = spawnConnect(t, server.url, ['--uid', 'alice', '--channel', 'pipe', '--linger', '300']);
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

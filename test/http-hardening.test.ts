// Issue 11, findings 1 and 6: no request line takes the process down on any listener, request
// heads have a deadline well below Node's defaults, a download whose client stopped reading
// does not hold a --filelimit slot for ever and a request waits for a slot only so long, and
// the last-resort crash handler logs, closes clients with 1011, flushes history and exits 1.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { pathToFileURL } from 'node:url';
import type { Duplex } from 'node:stream';
import { pino } from 'pino';
import { ROOT, startServer, type RunningServer } from './helpers/server.js';
import { rawExchange, statusOf, tempTree, listen, closeServer, request } from './helpers/http.js';
import { requirePrograms } from './helpers/programs.js';
import { redirectPort, startWithRedirect } from './helpers/redirect-server.js';
import { TestClient } from './helpers/client.js';
import { HttpRouter, type HttpTimings } from '../src/net/http/router.js';
import { guardRequests, guardUpgrades } from '../src/net/http/guard.js';
import { resolveConfig } from '../src/config.js';
import { createServer } from '../src/server.js';

/** A port a listener logged its URL under, e.g. 'admin listening'. */
function loggedPort(server: RunningServer, message: string): number {
  const line = server.stderr().split('\n').find((l) => l.includes(message));
  assert.ok(line, `logged "${message}"`);
  return Number(new URL((JSON.parse(line) as { url: string }).url).port);
}

/** Like rawExchange, over TLS to the public port. */
function tlsExchange(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'example.test', rejectUnauthorized: false }, () => socket.write(text));
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', reject);
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
  });
}

/** The request targets of finding 1: each threw out of new URL() on the redirect port. */
const BAD_TARGETS = ['GET //', 'GET http://:99999/', 'GET http://[/', 'GET http://a%zz/', 'HEAD ///'];

/** `line` as a whole request; as an upgrade it is one no listener completes (no key), so every answer ends the exchange. */
function requestLine(line: string, upgrade: boolean): string {
  const connection = upgrade ? 'Connection: Upgrade, close\r\nUpgrade: websocket\r\nSec-WebSocket-Protocol: mles-websocket\r\n' : 'Connection: close\r\n';
  return `${line} HTTP/1.1\r\nHost: example.test\r\n${connection}\r\n`;
}

test('bad request targets get an HTTP status on every listener, and the server lives on (finding 1)', { timeout: 60_000 }, async (t) => {
  if (!requirePrograms(t, 'openssl', ['openssl'])) return;
  const server = await startWithRedirect(t, ['--admin-port', '0', '--history', 'memory']);
  await server.waitForLog('admin listening');
  const local = await startServer(['--history', 'memory']);
  t.after(() => local.stop());
  const exchanges: Record<string, (text: string) => Promise<string>> = {
    local: (text) => rawExchange(local.port, text),
    redirect: (text) => rawExchange(redirectPort(server), text),
    tls: (text) => tlsExchange(server.port, text),
    admin: (text) => rawExchange(loggedPort(server, 'admin listening'), text),
  };
  for (const [listener, exchange] of Object.entries(exchanges)) {
    for (const target of BAD_TARGETS) {
      for (const upgrade of [false, true]) {
        const what = `${listener}: ${target}${upgrade ? ' (upgrade)' : ''}`;
        const status = statusOf(await exchange(requestLine(target, upgrade)));
        assert.ok(status >= 300 && status < 500, `${what} answered ${status}`);
        assert.equal((listener === 'local' ? local : server).proc.exitCode, null, `${what} left the server running`);
      }
    }
  }

  // What the redirect port answers, exactly: origin-form paths (even empty segments) are
  // redirected as they are; an absolute URL that does not parse is a 400.
  const redirect = redirectPort(server);
  const answer = async (target: string): Promise<string> => rawExchange(redirect, requestLine(target, false));
  assert.match(await answer('GET //'), new RegExp(`^HTTP/1.1 301 .*\r\nLocation: https://example.test:${server.port}//\r\n`, 's'));
  for (const target of ['GET http://:99999/', 'GET http://[/', 'GET http://a%zz/', 'GET *']) assert.equal(statusOf(await answer(target)), 400, target);
  // Absolute-form names its own host (RFC 9112 3.2.2): a configured one is redirected, any other is not.
  assert.match(await answer('GET http://www.example.test/a?b'), new RegExp(`\r\nLocation: https://www.example.test:${server.port}/a\\?b\r\n`));
  assert.equal(statusOf(await answer('GET http://evil.test/')), 404);

  // Still serving on every port, and no handler failure was reported.
  assert.equal((await request(redirect, '/x', { headers: { host: 'example.test' } })).status, 301);
  const joined = async (uid: string): Promise<TestClient> => {
    const client = new TestClient(`wss://127.0.0.1:${server.port}`, 'mles-websocket', { rejectUnauthorized: false });
    await client.opened();
    client.send(JSON.stringify({ uid, channel: 'after-bad-targets' }));
    return client;
  };
  const alice = await joined('alice');
  const bob = await joined('bob');
  assert.equal(JSON.parse((await bob.waitFor(1))[0]!.text).uid, 'alice', 'bob got the history with alice in it');
  await Promise.all([alice.close(), bob.close()]);
  assert.equal((await request(local.port, '/')).status, 200);
  for (const running of [server, local]) assert.doesNotMatch(running.stderr(), /handler failed|"level":60/);
});

test('a handler that throws or rejects costs its own request a 500, or its upgrade socket, and a log line (finding 1)', async (t) => {
  const logged: Array<{ msg: string; url: string; err: { message: string; stack: string } }> = [];
  const log = pino({ level: 'error' }, { write: (line: string) => void logged.push(JSON.parse(line)) });
  const server = http.createServer(guardRequests(log, (req, res) => {
    if (req.url === '/throw') throw new Error('bug in a handler');
    if (req.url === '/reject') return Promise.reject(new Error('bug in an async handler'));
    res.writeHead(200, { 'Content-Length': 100 });
    res.write('the first part of an answer');
    throw new Error('bug half way through an answer');
  }));
  server.on('upgrade', guardUpgrades(log, () => {
    throw new Error('bug in an upgrade handler');
  }));
  const port = await listen(server);
  t.after(() => closeServer(server));

  for (const path of ['/throw', '/reject']) {
    const res = await request(port, path);
    assert.equal(res.status, 500, path);
    assert.equal(res.text, 'Internal Server Error\n');
  }
  // Half an answer is out: the connection is cut, so the client knows it is incomplete.
  await assert.rejects(request(port, '/half'));
  assert.equal(await rawExchange(port, 'GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n'), '');

  assert.deepEqual(logged.map((entry) => [entry.msg, entry.url, entry.err.message]), [
    ['request handler failed', '/throw', 'bug in a handler'],
    ['request handler failed', '/reject', 'bug in an async handler'],
    ['request handler failed', '/half', 'bug half way through an answer'],
    ['upgrade handler failed', '/ws', 'bug in an upgrade handler'],
  ]);
  for (const entry of logged) assert.match(entry.err.stack, /\n\s+at /);
  // And the server still answers.
  assert.equal((await request(port, '/throw')).status, 500);
});

/** Sends a request head one line a second, never finishing it; resolves with what came back and when. */
function slowloris(t: TestContext, connect: () => Duplex): Promise<{ response: string; ms: number }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const socket = connect();
    t.after(() => socket.destroy());
    let response = '';
    let line = 0;
    const trickle = setInterval(() => socket.write(`X-Slow-${line++}: still sending\r\n`), 1_000);
    socket.write('GET / HTTP/1.1\r\nHost: example.test\r\n');
    socket.on('data', (chunk: Buffer) => {
      clearInterval(trickle);
      response += chunk.toString('latin1');
    });
    // The server may cut the connection while a line is on its way: what it answered is the point.
    socket.on('error', () => {});
    socket.on('close', () => {
      clearInterval(trickle);
      resolve({ response, ms: Date.now() - started });
    });
  });
}

test('a request head trickled line by line gets 408 after 10 s on every listener (finding 6)', { timeout: 40_000 }, async (t) => {
  if (!requirePrograms(t, 'openssl', ['openssl'])) return;
  const server = await startWithRedirect(t, ['--admin-port', '0', '--history', 'memory']);
  await server.waitForLog('admin listening');
  const tcp = (port: number) => () => net.connect(port, '127.0.0.1');
  // And a TCP connection to the TLS port that never starts its handshake (Node's default: 120 s).
  const started = Date.now();
  const silentSocket = net.connect(server.port, '127.0.0.1').resume();
  t.after(() => silentSocket.destroy());
  const silent = once(silentSocket, 'close').then(() => Date.now() - started);
  const results = await Promise.all([
    slowloris(t, tcp(redirectPort(server))),
    slowloris(t, tcp(loggedPort(server, 'admin listening'))),
    slowloris(t, () => tls.connect({ host: '127.0.0.1', port: server.port, servername: 'example.test', rejectUnauthorized: false })),
  ]);
  for (const { response, ms } of results) {
    assert.equal(statusOf(response), 408);
    // Node's own defaults would be 60 s for the head (and 300 s for a whole request).
    assert.ok(ms >= 9_000 && ms < 20_000, `408 after ${ms} ms`);
  }
  const silentMs = await silent;
  assert.ok(silentMs >= 9_000 && silentMs < 20_000, `handshake-less connection dropped after ${silentMs} ms`);
});

test('shutting down does not wait for a connection that never starts its TLS handshake', { timeout: 30_000 }, async (t) => {
  if (!requirePrograms(t, 'openssl', ['openssl'])) return;
  const server = await startWithRedirect(t, ['--history', 'memory']);
  const silent = net.connect(server.port, '127.0.0.1').resume();
  silent.on('error', () => {}); // reset when the server goes: expected
  t.after(() => silent.destroy());
  await once(silent, 'connect');
  const started = Date.now();
  assert.equal(await server.stop(), 0);
  // Before, close() waited for the handshake timeout (Node's 120 s, now 10 s) of such a socket.
  assert.ok(Date.now() - started < 5_000, `exit took ${Date.now() - started} ms`);
});

/** The router on a plain HTTP server with a small --filelimit and short internal timings. */
async function staticServer(t: TestContext, fileLimit: number, timings: HttpTimings) {
  const big = 32 * 1024 * 1024;
  const www = tempTree({ 'big.bin': Buffer.alloc(big, 1), 'small.txt': 'small' });
  const router = new HttpRouter(resolveConfig({ wwwroot: www.dir, fileLimit }), pino({ level: 'silent' }), timings);
  const server = http.createServer();
  router.attach(server, { upgrade: (_req, socket) => socket.destroy() });
  const port = await listen(server);
  t.after(async () => {
    await closeServer(server);
    www.cleanup();
  });
  return { port, router, big };
}

/** A download that is requested and then never read (no data listener: the socket stops reading). */
function heldDownload(port: number): net.Socket {
  const socket = net.connect(port, '127.0.0.1', () => socket.write('GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n'));
  socket.on('error', () => {}); // a cut-off download is what these tests expect
  return socket;
}

/** Reads what is left on `socket` until the server has closed it; resolves with the byte count. */
async function drain(socket: net.Socket): Promise<number> {
  let bytes = 0;
  socket.on('data', (chunk: Buffer) => (bytes += chunk.length));
  await once(socket, 'close');
  return bytes;
}

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`not reached in 10 s: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

test('downloads whose clients read nothing are ended, and their slots go to the next request (finding 6)', { timeout: 30_000 }, async (t) => {
  const { port, router, big } = await staticServer(t, 2, { responseIdleMs: 300, slotWaitMs: 20_000 });
  const held = [heldDownload(port), heldDownload(port)];
  await until(() => router.fileLimit.inUse === 2, 'both downloads hold a slot');
  const started = Date.now();
  const small = await request(port, '/small.txt');
  assert.equal(small.status, 200);
  assert.equal(small.text, 'small');
  assert.ok(Date.now() - started < 10_000, `the waiting request got its slot after ${Date.now() - started} ms`);
  // The held downloads were cut off: what they can still read is short of the whole file.
  for (const bytes of await Promise.all(held.map(drain))) assert.ok(bytes < big, `a held download got ${bytes} of ${big} bytes`);
  await until(() => router.fileLimit.inUse === 0, 'every slot released');
});

test('a request that finds every slot held waits a bounded time, then gets 503 with Retry-After (finding 6)', { timeout: 30_000 }, async (t) => {
  const { port, router } = await staticServer(t, 2, { slotWaitMs: 200 });
  const held = [heldDownload(port), heldDownload(port)];
  t.after(() => held.forEach((socket) => socket.destroy()));
  await until(() => router.fileLimit.inUse === 2, 'both downloads hold a slot');
  const busy = await request(port, '/small.txt');
  assert.equal(busy.status, 503);
  assert.match(busy.headers['retry-after'] ?? '', /^\d+$/);
  assert.equal(router.fileLimit.queued, 0, 'the request that gave up left the queue');
});

/** Runs the crash handler in a server process of its own, then makes that process fail as `how`. */
async function crashChild(t: TestContext, history: string, how: 'throw' | 'reject') {
  const src = (file: string): string => pathToFileURL(path.join(ROOT, 'src', file)).href;
  const script = `
    import { createServer } from ${JSON.stringify(src('server.ts'))};
    import { createLogger } from ${JSON.stringify(src('logger.ts'))};
    import { installCrashHandler } from ${JSON.stringify(src('crash.ts'))};
    const log = createLogger('info');
    const handler = installCrashHandler(log);
    const server = await createServer({ port: 0, history: ${JSON.stringify(history)}, logger: log });
    handler.setServer(server);
    process.stdout.write('listening on ' + server.address.url + '\\n');
    // A bug in some event handler, outside anything that catches: the case the handler is for.
    process.stdin.on('data', () => {
      if (${JSON.stringify(how)} === 'throw') throw new Error('synthetic uncaught exception');
      Promise.reject(new Error('synthetic unhandled rejection'));
    });
  `;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: ROOT,
    env: { ...process.env, MLES_KEY: '' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  t.after(() => child.kill('SIGKILL'));
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = once(child, 'exit') as Promise<[number | null, string | null]>;
  let stdout = '';
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      const match = /listening on (\S+)\n/.exec(stdout);
      if (match) resolve(match[1]!);
    });
    void exited.then(() => reject(new Error(`child exited before listening:\n${stderr}`)));
  });
  return { url, exited, stderr: () => stderr, fail: () => child.stdin.write('now\n') };
}

for (const how of ['throw', 'reject'] as const) {
  test(`last resort (${how}): fatal log with the stack, clients closed 1011, history kept, exit 1 (finding 1)`, { timeout: 30_000 }, async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mles-crash-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const history = `sqlite:${path.join(dir, 'history.db')}`;
    const child = await crashChild(t, history, how);

    const alice = await TestClient.join(child.url, 'alice', 'crash');
    const bob = await TestClient.join(child.url, 'bob', 'crash');
    await bob.waitFor(1); // alice's join, replayed: both are in
    bob.send('said before the crash');
    await alice.waitFor(1);

    child.fail();
    const [code] = await child.exited;
    assert.equal(code, 1);
    for (const client of [alice, bob]) assert.deepEqual(await client.closed, { code: 1011, reason: 'internal server error: restarting' });
    const fatal = child.stderr().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { level: number; msg: string; err?: { stack?: string } });
    const logged = fatal.find((entry) => entry.level === 60);
    assert.ok(logged, `a fatal log line in:\n${child.stderr()}`);
    assert.match(logged.err?.stack ?? '', how === 'throw' ? /synthetic uncaught exception\n\s+at / : /synthetic unhandled rejection\n\s+at /);

    // The store was closed cleanly: a new server on the same file has the whole conversation.
    const again = await createServer({ port: 0, history, logger: pino({ level: 'silent' }) });
    t.after(() => again.close());
    const carol = await TestClient.join(again.address.url, 'carol', 'crash');
    const replay = await carol.waitFor(3);
    assert.equal(replay[2]!.text, 'said before the crash');
    await carol.close();
  });
}

// --proxy PREFIX=URL (spec section 5): forwarding with the prefix stripped, streaming both ways,
// X-Forwarded-* set by us and the client's forwarding headers dropped (issue 11, finding 12),
// hop-by-hop headers dropped, 502 when the upstream is down, 504 when it does not answer in
// time, and WebSocket upgrades tunnelled to an upstream echo server. Every upstream is started
// here, on port 0.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { once } from 'node:events';
import type { Socket } from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';
import { pino } from 'pino';
import { startServer, type RunningServer } from './helpers/server.js';
import { request, rawExchange, statusOf, tempTree, listen, closeServer } from './helpers/http.js';
import { TestClient } from './helpers/client.js';
import { HttpRouter } from '../src/net/http/router.js';
import { parseProxyRule, resolveConfig } from '../src/config.js';

interface Echo {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** Resolvable from outside: lets the upstream and the test take turns without sleeping. */
function signal(): { promise: Promise<void>; fire: () => void } {
  let fire!: () => void;
  const promise = new Promise<void>((resolve) => (fire = resolve));
  return { promise, fire };
}

let upstream: http.Server;
let upstreamPort: number;
let wss: WebSocketServer;
let wsPaths: string[] = [];
let wsHeaders: http.IncomingHttpHeaders[] = [];
let finishStream = signal();
let uploadStarted = signal();
let server: RunningServer;
let www: ReturnType<typeof tempTree>;
let deadPort: number;

before(async () => {
  upstream = http.createServer((req, res) => {
    if (req.url?.endsWith('/stream')) {
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      res.write('first\n');
      void finishStream.promise.then(() => res.end('last\n'));
      return;
    }
    if (req.url?.endsWith('/upload')) {
      let bytes = 0;
      req.on('data', (chunk: Buffer) => {
        if (bytes === 0) uploadStarted.fire();
        bytes += chunk.length;
      });
      req.on('end', () => res.end(`got ${bytes}`));
      return;
    }
    if (req.url?.endsWith('/cookies')) {
      res.writeHead(201, 'Made', [
        'Set-Cookie', 'a=1; Path=/',
        'Set-Cookie', 'b=2; Path=/',
        'Connection', 'X-Upstream-Hop',
        'X-Upstream-Hop', 'secret',
        'X-Upstream-Kept', 'yes',
      ]);
      res.end('cookies');
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const echo: Echo = { method: req.method!, url: req.url!, headers: req.headers, body: Buffer.concat(chunks).toString() };
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(echo));
    });
  });
  wss = new WebSocketServer({ noServer: true, handleProtocols: (offered) => (offered.has('chat') ? 'chat' : false) });
  upstream.on('upgrade', (req, socket, head) => {
    wsPaths.push(req.url!);
    wsHeaders.push(req.headers);
    if (req.url!.endsWith('/refuse')) {
      socket.end('HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nforbidden');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => ws.on('message', (data, binary) => ws.send(data, { binary })));
  });
  upstreamPort = await listen(upstream);

  // A port that was free a moment ago: nothing listens there now.
  const probe = http.createServer();
  deadPort = await listen(probe);
  await closeServer(probe);

  www = tempTree({ 'api/static.txt': 'static, not proxied', 'apix.txt': 'static apix' });
  const up = `http://127.0.0.1:${upstreamPort}`;
  server = await startServer([
    '--wwwroot', www.dir,
    '--proxy', `api=${up}/base`,
    '--proxy', `/api/v2/=${up}/v2root/`,
    '--proxy', `ws=${up}/sock`,
    '--proxy', `down=http://127.0.0.1:${deadPort}`,
  ]);
});

after(async () => {
  await server?.stop();
  for (const client of wss?.clients ?? []) client.terminate();
  if (upstream) await closeServer(upstream);
  www?.cleanup();
});

async function echo(path: string, options: Parameters<typeof request>[2] = {}): Promise<Echo> {
  const res = await request(server.port, path, options);
  assert.equal(res.status, 200, res.text);
  return JSON.parse(res.text) as Echo;
}

test('requests under a prefix go upstream with the prefix stripped and the query kept', async () => {
  assert.equal((await echo('/api/items/7?x=1&y=%20')).url, '/base/items/7?x=1&y=%20');
  assert.equal((await echo('/api')).url, '/base/');
  assert.equal((await echo('/api/')).url, '/base/');
  assert.equal((await echo('/api/static.txt')).url, '/base/static.txt', 'proxy rules come before static files');
});

test('multi-segment prefixes, longest first; a longer name is not a prefix match', async () => {
  assert.equal((await echo('/api/v2/things')).url, '/v2root/things');
  assert.equal((await echo('/api/v2')).url, '/v2root/');
  assert.equal((await echo('/api/v2x')).url, '/base/v2x');
  assert.equal((await request(server.port, '/apix.txt')).text, 'static apix');
});

test('method, body and end-to-end headers are kept', async () => {
  const got = await echo('/api/submit', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-Custom': 'yes', Cookie: 'session=1' },
    body: '{"hello":"world"}',
  });
  assert.equal(got.method, 'POST');
  assert.equal(got.body, '{"hello":"world"}');
  assert.equal(got.headers['content-type'], 'application/json');
  assert.equal(got.headers['x-custom'], 'yes');
  assert.equal(got.headers.cookie, 'session=1');
  for (const method of ['PUT', 'DELETE', 'PATCH']) assert.equal((await echo('/api/x', { method })).method, method);
});

/** What a client may send to pose as another address, scheme or host to an upstream that trusts it. */
const SPOOFED = {
  Forwarded: 'for=6.6.6.6;proto=https;host=bank.example',
  'X-Forwarded-For': '6.6.6.6',
  'X-Forwarded-Proto': 'gopher',
  'X-Forwarded-Host': 'bank.example',
  'X-Forwarded-Port': '443',
  'X-Forwarded-Prefix': '/admin',
  'X-Real-IP': '6.6.6.6',
  'True-Client-IP': '6.6.6.6',
};

/** The upstream saw only our own forwarding headers: the client's address, scheme and Host. */
function assertForwardedByUs(headers: http.IncomingHttpHeaders, host: string): void {
  assert.equal(headers['x-forwarded-for'], '127.0.0.1');
  assert.equal(headers['x-forwarded-proto'], 'http');
  assert.equal(headers['x-forwarded-host'], host);
  for (const name of ['forwarded', 'x-forwarded-port', 'x-forwarded-prefix', 'x-real-ip', 'true-client-ip']) {
    assert.equal(headers[name], undefined, `${name} from the client reached the upstream`);
  }
}

test('Host goes to the upstream, X-Forwarded-* are ours, hop-by-hop headers are dropped', async () => {
  const got = await echo('/api/h', {
    headers: {
      Host: 'public.example:8443',
      ...SPOOFED,
      Connection: 'keep-alive, X-Client-Hop',
      'X-Client-Hop': 'secret',
      'Keep-Alive': 'timeout=5',
      'Proxy-Authorization': 'Basic Zm9vOmJhcg==',
      TE: 'trailers',
    },
  });
  assert.equal(got.headers.host, `127.0.0.1:${upstreamPort}`);
  assertForwardedByUs(got.headers, 'public.example:8443');
  for (const name of ['x-client-hop', 'keep-alive', 'proxy-authorization', 'te']) assert.equal(got.headers[name], undefined, name);
});

test('the upstream status, repeated Set-Cookie and end-to-end headers come back', async () => {
  const res = await request(server.port, '/api/cookies');
  assert.equal(res.status, 201);
  assert.deepEqual(res.headers['set-cookie'], ['a=1; Path=/', 'b=2; Path=/']);
  assert.equal(res.headers['x-upstream-kept'], 'yes');
  assert.equal(res.headers['x-upstream-hop'], undefined);
  assert.equal(res.text, 'cookies');
});

test('response bodies stream: the first chunk arrives before the upstream has finished', async () => {
  finishStream = signal();
  const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: server.port, path: '/api/stream', agent: false }, resolve).on('error', reject);
  });
  let body = '';
  res.setEncoding('utf8');
  const [first] = (await once(res, 'data')) as [string];
  body += first;
  assert.equal(body, 'first\n');
  res.on('data', (chunk: string) => (body += chunk));
  finishStream.fire();
  await once(res, 'end');
  assert.equal(body, 'first\nlast\n');
});

test('request bodies stream: the upstream sees data before the client has finished sending', async () => {
  uploadStarted = signal();
  const req = http.request({ host: '127.0.0.1', port: server.port, path: '/api/upload', method: 'POST', agent: false });
  const response = once(req, 'response') as Promise<[http.IncomingMessage]>;
  req.write('x'.repeat(1000));
  await uploadStarted.promise;
  req.end('y'.repeat(500));
  const [res] = await response;
  let text = '';
  for await (const chunk of res) text += chunk;
  assert.equal(text, 'got 1500');
});

test('an unreachable upstream gives 502 with a short text body', async () => {
  const res = await request(server.port, '/down/anything');
  assert.equal(res.status, 502);
  assert.match(res.headers['content-type']!, /^text\/plain/);
  assert.match(res.text, /^Bad gateway/);
});

test('dot-segments cannot climb out of the prefix upstream', async () => {
  for (const path of ['/api/../x', '/api/%2e%2e/x', '/api/v2/%2E./x']) {
    assert.equal((await request(server.port, path)).status, 400, path);
  }
});

test('WebSocket upgrades under a prefix are tunnelled to the upstream', async () => {
  wsPaths = [];
  wsHeaders = [];
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}/ws/chat?room=1`, ['chat'], { headers: SPOOFED });
  await once(ws, 'open');
  assert.equal(ws.protocol, 'chat');
  assert.deepEqual(wsPaths, ['/sock/chat?room=1']);
  assert.equal(wsHeaders.length, 1);
  assertForwardedByUs(wsHeaders[0]!, `127.0.0.1:${server.port}`);
  ws.send('echo me');
  const [data] = (await once(ws, 'message')) as [Buffer];
  assert.equal(data.toString(), 'echo me');
  ws.send(Buffer.from([1, 2, 3]));
  const [binary, isBinary] = (await once(ws, 'message')) as [Buffer, boolean];
  assert.ok(isBinary);
  assert.deepEqual([...binary], [1, 2, 3]);
  ws.close();
  await once(ws, 'close');
});

test('Mles upgrades elsewhere still reach the Mles endpoint', async () => {
  const alice = await TestClient.join(server.url, 'alice', 'proxied-server');
  const bob = await TestClient.join(server.url, 'bob', 'proxied-server');
  const [join] = await bob.waitFor(1);
  assert.equal(JSON.parse(join!.text).uid, 'alice');
  await alice.close();
  await bob.close();
});

test('a refused or failed upstream upgrade reaches the client as that HTTP status', async () => {
  const statusOfUpgrade = async (path: string): Promise<number> => {
    const ws = new WebSocket(`ws://127.0.0.1:${server.port}${path}`, ['chat']);
    ws.on('error', () => {}); // terminating a connection that never opened reports one
    const [, res] = (await once(ws, 'unexpected-response')) as [unknown, http.IncomingMessage];
    res.resume();
    ws.terminate();
    return res.statusCode!;
  };
  assert.equal(await statusOfUpgrade('/ws/refuse'), 403);
  assert.equal(await statusOfUpgrade('/down/socket'), 502);
});

test('shutting down ends open tunnels instead of waiting for them', async () => {
  const own = await startServer(['--proxy', `ws=http://127.0.0.1:${upstreamPort}/sock`]);
  const ws = new WebSocket(`ws://127.0.0.1:${own.port}/ws/x`, ['chat']);
  await once(ws, 'open');
  const closed = once(ws, 'close');
  assert.equal(await own.stop(), 0);
  await closed;
});

test('an upstream that does not start its answer in time gets the client a 504; a slow body is not cut', { timeout: 30_000 }, async (t) => {
  // Takes every request and upgrade and never answers, except /slow-body: headers at once, the body on a signal.
  const held: Socket[] = [];
  let finishBody = signal();
  const silent = http.createServer((req, res) => {
    if (req.url === '/slow-body') {
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      res.write('head start\n');
      void finishBody.promise.then(() => res.end('done\n'));
      return;
    }
    held.push(req.socket);
  });
  silent.on('upgrade', (_req, socket: Socket) => held.push(socket));
  const port = await listen(silent);
  const timeoutMs = 300;
  const router = new HttpRouter(
    resolveConfig({ proxies: [parseProxyRule(`api=http://127.0.0.1:${port}`)] }),
    pino({ level: 'silent' }),
    { upstreamTimeoutMs: timeoutMs },
  );
  const front = http.createServer();
  router.attach(front, { upgrade: (_req, socket) => socket.destroy() });
  const frontPort = await listen(front);
  t.after(async () => {
    router.close();
    await closeServer(front);
    for (const socket of held) socket.destroy();
    await closeServer(silent);
  });

  finishBody = signal();
  const slowBody = request(frontPort, '/api/slow-body');
  const started = Date.now();
  const get = await request(frontPort, '/api/never');
  assert.equal(get.status, 504);
  assert.match(get.text, /^Gateway timeout/);
  assert.ok(Date.now() - started >= timeoutMs - 50, 'not before the timeout');
  assert.equal((await request(frontPort, '/api/never', { method: 'POST', body: 'x'.repeat(1000) })).status, 504);
  const upgrade = await rawExchange(frontPort, 'GET /api/socket HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
  assert.equal(statusOf(upgrade), 504);
  // Its headers came in time: the body may take longer than the timeout (it has, by now).
  finishBody.fire();
  const slow = await slowBody;
  assert.equal(slow.status, 200);
  assert.equal(slow.text, 'head start\ndone\n');
});

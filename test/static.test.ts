// Static hosting (spec section 5): index pages, types, validators and 304, ranges, 404/405,
// local mode for any host, per-domain roots, and --filelimit making requests wait.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { pino } from 'pino';
import { startServer, ROOT, type RunningServer } from './helpers/server.js';
import { request, rawExchange, statusOf, tempTree, listen, closeServer } from './helpers/http.js';
import { HttpRouter } from '../src/net/http/router.js';
import { DEFAULT_WWWROOT, hostName } from '../src/net/http/static-files.js';
import { FileLimit } from '../src/net/http/file-limit.js';
import { resolveConfig } from '../src/config.js';
import { createServer } from '../src/server.js';

const BIG_TEXT = 'Lorem ipsum dolor sit amet. '.repeat(200);
const DIGITS = '0123456789abcdefghij';

let server: RunningServer;
let www: ReturnType<typeof tempTree>;

before(async () => {
  www = tempTree({
    'index.html': '<h1>home</h1>',
    'app.js': `console.log(${JSON.stringify(BIG_TEXT)});`,
    'data.json': '{"ok":true}',
    'pixel.png': Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 1, 2, 3]),
    'digits.txt': DIGITS,
    'empty.txt': '',
    'sub/index.html': '<h1>sub</h1>',
    'sub/page.html': '<p>page</p>',
    'noindex/file.txt': 'x',
  });
  server = await startServer(['--wwwroot', www.dir]);
});

after(async () => {
  await server?.stop();
  www?.cleanup();
});

test('GET / serves index.html with type and validators (spec 5)', async () => {
  const res = await request(server.port, '/');
  assert.equal(res.status, 200);
  assert.equal(res.text, '<h1>home</h1>');
  assert.equal(res.headers['content-type'], 'text/html; charset=utf-8');
  assert.match(res.headers.etag!, /^"[^"]+"$/);
  assert.equal(res.headers['last-modified'], new Date(Math.floor(fs.statSync(path.join(www.dir, 'index.html')).mtimeMs / 1000) * 1000).toUTCString());
  assert.equal(res.headers['x-content-type-options'], 'nosniff');
});

test('HEAD sends the headers of GET and no body', async () => {
  const get = await request(server.port, '/app.js');
  const head = await request(server.port, '/app.js', { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.body.length, 0);
  assert.equal(head.headers['content-length'], get.headers['content-length']);
  assert.equal(head.headers.etag, get.headers.etag);
});

test('directories: index.html, redirect to the trailing slash, 404 without an index', async () => {
  assert.equal((await request(server.port, '/sub/')).text, '<h1>sub</h1>');
  assert.equal((await request(server.port, '/sub/page.html')).text, '<p>page</p>');
  const redirect = await request(server.port, '/sub?tab=2');
  assert.equal(redirect.status, 301);
  assert.equal(redirect.headers.location, '/sub/?tab=2');
  assert.equal((await request(server.port, '/noindex/')).status, 404);
});

test('Content-Type from the extension; .json carries Access-Control-Allow-Origin', async () => {
  const js = await request(server.port, '/app.js');
  assert.equal(js.headers['content-type'], 'text/javascript; charset=utf-8');
  assert.equal(js.headers['access-control-allow-origin'], undefined);
  const json = await request(server.port, '/data.json');
  assert.equal(json.headers['content-type'], 'application/json; charset=utf-8');
  assert.equal(json.headers['access-control-allow-origin'], '*');
  assert.equal((await request(server.port, '/pixel.png')).headers['content-type'], 'image/png');
});

test('missing files are 404, other methods 405 with Allow', async () => {
  assert.equal((await request(server.port, '/nope.html')).status, 404);
  assert.equal((await request(server.port, '/sub/nope/')).status, 404);
  for (const method of ['POST', 'PUT', 'DELETE', 'OPTIONS']) {
    const res = await request(server.port, '/index.html', { method });
    assert.equal(res.status, 405, method);
    assert.equal(res.headers.allow, 'GET, HEAD');
  }
});

test('revalidation: If-None-Match and If-Modified-Since give 304 with the validators', async () => {
  const first = await request(server.port, '/digits.txt');
  const etag = first.headers.etag!;
  const byTag = await request(server.port, '/digits.txt', { headers: { 'If-None-Match': `"other", ${etag}` } });
  assert.equal(byTag.status, 304);
  assert.equal(byTag.body.length, 0);
  assert.equal(byTag.headers.etag, etag);
  assert.equal((await request(server.port, '/digits.txt', { headers: { 'If-None-Match': `W/${etag}` } })).status, 304);
  assert.equal((await request(server.port, '/digits.txt', { headers: { 'If-None-Match': '"stale"' } })).status, 200);
  const lastModified = first.headers['last-modified']!;
  assert.equal((await request(server.port, '/digits.txt', { headers: { 'If-Modified-Since': lastModified } })).status, 304);
  const earlier = new Date(Date.parse(lastModified) - 1000).toUTCString();
  assert.equal((await request(server.port, '/digits.txt', { headers: { 'If-Modified-Since': earlier } })).status, 200);
  // If-None-Match decides alone when present.
  const both = await request(server.port, '/digits.txt', { headers: { 'If-None-Match': '"stale"', 'If-Modified-Since': lastModified } });
  assert.equal(both.status, 200);
});

test('byte ranges: 206 with Content-Range, suffix and open ranges, 416, stale If-Range', async () => {
  const first = await request(server.port, '/digits.txt', { headers: { Range: 'bytes=0-4' } });
  assert.equal(first.status, 206);
  assert.equal(first.text, '01234');
  assert.equal(first.headers['content-range'], 'bytes 0-4/20');
  assert.equal(first.headers['accept-ranges'], 'bytes');
  assert.equal((await request(server.port, '/digits.txt', { headers: { Range: 'bytes=-3' } })).text, 'hij');
  assert.equal((await request(server.port, '/digits.txt', { headers: { Range: 'bytes=15-' } })).text, 'fghij');
  assert.equal((await request(server.port, '/digits.txt', { headers: { Range: 'bytes=18-99' } })).text, 'ij');
  const beyond = await request(server.port, '/digits.txt', { headers: { Range: 'bytes=20-' } });
  assert.equal(beyond.status, 416);
  assert.equal(beyond.headers['content-range'], 'bytes */20');
  const etag = first.headers.etag!;
  const current = await request(server.port, '/digits.txt', { headers: { Range: 'bytes=1-2', 'If-Range': etag } });
  assert.equal(current.status, 206);
  const stale = await request(server.port, '/digits.txt', { headers: { Range: 'bytes=1-2', 'If-Range': '"old"' } });
  assert.equal(stale.status, 200);
  assert.equal(stale.text, DIGITS);
  const multi = await request(server.port, '/digits.txt', { headers: { Range: 'bytes=0-1,4-5' } });
  assert.equal(multi.status, 200, 'multi-part ranges are answered with the whole file');
  const empty = await request(server.port, '/empty.txt');
  assert.equal(empty.status, 200);
  assert.equal(empty.headers['content-length'], '0');
});

test('a long query string does not count against the path limit', async () => {
  const res = await request(server.port, `/?token=${'t'.repeat(5000)}`);
  assert.equal(res.status, 200);
  assert.equal(res.text, '<h1>home</h1>');
});

test('local mode serves the root for any Host, and without one', async () => {
  const res = await request(server.port, '/', { headers: { Host: 'anything.example:1234' } });
  assert.equal(res.text, '<h1>home</h1>');
  const http10 = await rawExchange(server.port, 'GET / HTTP/1.0\r\n\r\n');
  assert.equal(statusOf(http10.replace('HTTP/1.0', 'HTTP/1.1')), 200);
  assert.match(http10, /<h1>home<\/h1>$/);
});

test('without --wwwroot the bundled public/ folder is served, found from the package, not the cwd', async () => {
  assert.equal(DEFAULT_WWWROOT, path.join(ROOT, 'public'));
  const local = await createServer({ port: 0, history: 'memory', logger: pino({ level: 'silent' }) });
  try {
    const res = await request(local.address.port, '/index.html');
    const bundled = path.join(ROOT, 'public', 'index.html');
    if (fs.existsSync(bundled)) {
      assert.equal(res.status, 200);
      assert.equal(res.text, fs.readFileSync(bundled, 'utf8'));
    } else {
      assert.equal(res.status, 404);
    }
  } finally {
    await local.close();
  }
});

test('hostName drops the port, case and a trailing dot', () => {
  assert.equal(hostName('Example.Test:8443'), 'example.test');
  assert.equal(hostName('example.test.'), 'example.test');
  assert.equal(hostName('[::1]:8080'), '[::1]');
  assert.equal(hostName(undefined), undefined);
});

/** A plain HTTP server running the router with `config` (domains need TLS at the CLI). */
async function routerServer(config: Parameters<typeof resolveConfig>[0]): Promise<{ port: number; router: HttpRouter; close: () => Promise<void> }> {
  const router = new HttpRouter(resolveConfig(config), pino({ level: 'silent' }));
  const server = http.createServer();
  router.attach(server, { upgrade: (_req, socket) => socket.destroy() });
  const port = await listen(server);
  return { port, router, close: () => closeServer(server) };
}

test('with --domains each host is served from WWWROOT/<host>, matched without port', async (t) => {
  const tree = tempTree({
    'example.test/index.html': 'example home',
    'example.test/docs/index.html': 'example docs',
    'other.test/index.html': 'other home',
    'index.html': 'top level, not a domain',
  });
  const { port, close } = await routerServer({ domains: ['example.test', 'other.test'], wwwroot: tree.dir });
  t.after(async () => {
    await close();
    tree.cleanup();
  });
  assert.equal((await request(port, '/', { headers: { Host: 'example.test' } })).text, 'example home');
  assert.equal((await request(port, '/', { headers: { Host: 'Example.Test:8443' } })).text, 'example home');
  assert.equal((await request(port, '/docs/', { headers: { Host: 'example.test.' } })).text, 'example docs');
  assert.equal((await request(port, '/', { headers: { Host: 'other.test:443' } })).text, 'other home');
  assert.equal((await request(port, '/', { headers: { Host: 'unknown.test' } })).status, 404);
  assert.equal((await request(port, '/', { headers: { Host: '127.0.0.1' } })).status, 404);
  const noHost = await rawExchange(port, 'GET / HTTP/1.0\r\n\r\n');
  assert.equal(statusOf(noHost.replace('HTTP/1.0', 'HTTP/1.1')), 404);
});

test('--filelimit: requests beyond the limit wait for a slot, then succeed', async (t) => {
  const big = Buffer.alloc(32 * 1024 * 1024, 1);
  const tree = tempTree({ 'big.bin': big, 'small.txt': 'small' });
  const { port, router, close } = await routerServer({ wwwroot: tree.dir, fileLimit: 1 });
  t.after(async () => {
    await close();
    tree.cleanup();
  });
  // The first response is not read, so its file stays open and holds the only slot.
  const bigResponse = await new Promise<http.IncomingMessage>((resolve, reject) => {
    http.get({ port, host: '127.0.0.1', path: '/big.bin', agent: false }, resolve).on('error', reject);
  });
  bigResponse.pause();
  assert.equal(router.fileLimit.inUse, 1);
  const small = request(port, '/small.txt');
  await waitUntil(() => router.fileLimit.queued === 1);
  let received = 0;
  bigResponse.on('data', (chunk: Buffer) => (received += chunk.length));
  const bigDone = new Promise((resolve) => bigResponse.on('end', resolve));
  bigResponse.resume();
  assert.equal((await small).text, 'small');
  await bigDone;
  assert.equal(received, big.length);

  const many = await Promise.all(Array.from({ length: 40 }, () => request(port, '/small.txt')));
  assert.deepEqual(new Set(many.map((r) => r.status)), new Set([200]));
  await waitUntil(() => router.fileLimit.inUse === 0);
});

test('FileLimit hands slots over in order and never exceeds its limit', async () => {
  const limit = new FileLimit(2);
  const order: number[] = [];
  const first = (await limit.acquire(60_000))!;
  const second = (await limit.acquire(60_000))!;
  const waiting = [3, 4, 5].map((n) => limit.acquire(60_000).then((release) => (order.push(n), release!)));
  assert.equal(limit.queued, 3);
  first();
  first(); // a second call is ignored
  const third = await waiting[0]!;
  assert.equal(limit.inUse, 2);
  second();
  third();
  for (const release of await Promise.all(waiting.slice(1))) release();
  assert.deepEqual(order, [3, 4, 5]);
  assert.equal(limit.inUse, 0);
});

test('FileLimit: a wait for a slot is bounded; one that gave up leaves the queue', async () => {
  const limit = new FileLimit(1);
  const held = (await limit.acquire(0))!;
  const patient = limit.acquire(60_000);
  assert.equal(await limit.acquire(10), undefined);
  assert.equal(limit.queued, 1, 'only the patient waiter is left');
  held();
  const next = await patient;
  assert.equal(limit.inUse, 1);
  next!();
  assert.equal(limit.inUse, 0);
});

async function waitUntil(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not reached in 5 s');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

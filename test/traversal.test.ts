// No request reads outside the web root (spec section 5, Beyond): every trick below must be
// refused, and the secret file next to the root must never be sent. Paths go out verbatim
// (http.request or a raw socket): fetch() would normalise them and test nothing.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { pino } from 'pino';
import { startServer, type RunningServer } from './helpers/server.js';
import { request, rawExchange, statusOf, tempTree, listen, closeServer } from './helpers/http.js';
import { HttpRouter } from '../src/net/http/router.js';
import { resolveConfig } from '../src/config.js';
import { MAX_PATH_LENGTH } from '../src/net/http/safe-path.js';

const SECRET = `TOP-SECRET-${randomUUID()}`;
const REFUSED = [400, 403, 404, 414];

let server: RunningServer;
let tree: ReturnType<typeof tempTree>;
let www: string;

before(async () => {
  // tree/secret.txt is outside the root tree/www; tree/www holds links pointing out and in.
  tree = tempTree({
    'secret.txt': SECRET,
    'www/index.html': 'public index',
    'www/sub/page.txt': 'public page',
    'www/.env': SECRET,
    'wwwx/secret.txt': SECRET,
  });
  www = path.join(tree.dir, 'www');
  fs.symlinkSync(path.join(tree.dir, 'secret.txt'), path.join(www, 'link-out.txt'));
  fs.symlinkSync(tree.dir, path.join(www, 'dir-out'));
  fs.symlinkSync(path.join(www, 'sub', 'page.txt'), path.join(www, 'link-in.txt'));
  server = await startServer(['--wwwroot', www]);
});

after(async () => {
  await server?.stop();
  tree?.cleanup();
});

async function assertRefused(rawPath: string, headers: Record<string, string> = {}): Promise<void> {
  const res = await request(server.port, rawPath, { headers });
  assert.ok(REFUSED.includes(res.status), `${rawPath} gave ${res.status}`);
  assert.ok(!res.text.includes(SECRET), `${rawPath} leaked the secret`);
}

async function assertRawRefused(port: number, requestText: string): Promise<void> {
  const response = await rawExchange(port, requestText);
  const status = statusOf(response);
  assert.ok(REFUSED.includes(status) || status === 431, `${JSON.stringify(requestText.slice(0, 80))} gave ${status}`);
  assert.ok(!response.includes(SECRET), `${JSON.stringify(requestText.slice(0, 80))} leaked the secret`);
}

test('the files inside the root are served (the refusals below are not blanket 404s)', async () => {
  assert.equal((await request(server.port, '/sub/page.txt')).text, 'public page');
  assert.equal((await request(server.port, '/link-in.txt')).text, 'public page', 'a symlink inside the root is fine');
  assert.equal((await request(server.port, '/sub/%70age.txt')).text, 'public page', 'percent-encoded letters decode');
});

test('dot-dot segments', async () => {
  for (const p of ['/../secret.txt', '/sub/../../secret.txt', '/sub/../index.html', '/./index.html', '/..', '/../wwwx/secret.txt']) {
    await assertRefused(p);
  }
});

test('percent-encoded dots', async () => {
  for (const p of ['/%2e%2e/secret.txt', '/%2E%2E/secret.txt', '/.%2e/secret.txt', '/%2e./secret.txt', '/sub/%2e%2e/%2e%2e/secret.txt']) {
    await assertRefused(p);
  }
});

test('percent-encoded slashes and backslashes', async () => {
  for (const p of [
    '/..%2fsecret.txt',
    '/%2e%2e%2fsecret.txt',
    '/sub%2f..%2f..%2fsecret.txt',
    '/..%5csecret.txt',
    '/%5c..%5csecret.txt',
    '/sub%5c..%5c..%5csecret.txt',
  ]) {
    await assertRefused(p);
  }
});

test('raw backslashes', async () => {
  for (const p of ['/..\\secret.txt', '/sub\\..\\..\\secret.txt', '/\\..\\secret.txt']) {
    await assertRefused(p);
    await assertRawRefused(server.port, `GET ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  }
});

test('NUL bytes, encoded and raw', async () => {
  for (const p of ['/index.html%00', '/index.html%00.txt', '/%00/../secret.txt', '/../secret.txt%00.html']) {
    await assertRefused(p);
  }
  await assertRawRefused(server.port, 'GET /index.html\u0000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
});

test('absolute paths, double slashes and non-origin request targets', async () => {
  const secretPath = path.join(tree.dir, 'secret.txt');
  for (const p of [
    `/${secretPath}`,
    `/%2F${secretPath.slice(1).replaceAll('/', '%2F')}`,
    `//${secretPath.slice(1)}`,
    '//etc/passwd',
    '/%2fetc%2fpasswd',
    '/sub//../../secret.txt',
  ]) {
    await assertRefused(p);
  }
  await assertRawRefused(server.port, `GET http://127.0.0.1/../secret.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  await assertRawRefused(server.port, `GET ../secret.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  await assertRawRefused(server.port, `GET ${secretPath} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`.replace('GET /', 'GET '));
});

test('a directory redirect never points off-site', async () => {
  const res = await request(server.port, '//evil.example/sub');
  assert.ok(REFUSED.includes(res.status), `gave ${res.status}`);
  assert.equal(res.headers.location, undefined);
});

test('symlinks pointing out of the root', async () => {
  await assertRefused('/link-out.txt');
  await assertRefused('/dir-out/secret.txt');
});

test('hidden files are not served', async () => {
  await assertRefused('/.env');
  await assertRefused('/%2eenv');
});

test('bad percent-encoding and overlong UTF-8 are refused', async () => {
  for (const p of ['/%', '/%zz', '/%c0%ae%c0%ae/secret.txt', '/%e0%80%ae%e0%80%ae/secret.txt', '/%252e%252e/secret.txt']) {
    await assertRefused(p);
  }
});

test('overlong paths: 414, or 431 when past the header limit', async () => {
  const long = `/${'a/'.repeat(MAX_PATH_LENGTH)}index.html`;
  assert.equal((await request(server.port, long)).status, 414);
  await assertRefused(`/${'../'.repeat(MAX_PATH_LENGTH)}secret.txt`);
  await assertRefused(`/${'x'.repeat(1000)}`);
  await assertRawRefused(server.port, `GET /${'a'.repeat(20_000)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
});

test('with --domains: no host can reach outside its own folder, nor another domain', async (t) => {
  const domains = tempTree({
    'secret.txt': SECRET,
    'www/example.test/index.html': 'example',
    'www/private.test/secret.txt': SECRET,
    'www/secret.txt': SECRET,
  });
  const router = new HttpRouter(
    resolveConfig({ domains: ['example.test'], wwwroot: path.join(domains.dir, 'www') }),
    pino({ level: 'silent' }),
  );
  const httpServer = http.createServer();
  router.attach(httpServer, { upgrade: (_req, socket) => socket.destroy() });
  const port = await listen(httpServer);
  t.after(async () => {
    await closeServer(httpServer);
    domains.cleanup();
  });
  const cases: Array<[string, string]> = [
    ['/../secret.txt', 'example.test'],
    ['/../private.test/secret.txt', 'example.test'],
    ['/%2e%2e/private.test/secret.txt', 'example.test'],
    ['/secret.txt', '..'],
    ['/secret.txt', '.'],
    ['/secret.txt', 'private.test'],
    ['/secret.txt', '../www'],
    ['/secret.txt', 'example.test/..'],
    ['/secret.txt', 'example.test:443/..'],
    ['/', ''],
  ];
  for (const [p, host] of cases) {
    const response = await rawExchange(port, `GET ${p} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
    const status = statusOf(response);
    assert.ok(REFUSED.includes(status), `${host} ${p} gave ${status}`);
    assert.ok(!response.includes(SECRET), `${host} ${p} leaked the secret`);
  }
  assert.equal((await request(port, '/', { headers: { Host: 'example.test' } })).text, 'example');
});

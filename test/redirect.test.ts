// --redirect: the plain-HTTP port sends GETs for configured domains to https://domain[:port]/path
// with a 301; anything else gets 404. The Host header is matched without its port (spec 6).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runCli } from './helpers/server.js';
import { request } from './helpers/http.js';
import { requirePrograms } from './helpers/programs.js';
import { redirectPort, startWithRedirect } from './helpers/redirect-server.js';
import { redirectTarget, requestedResource } from '../src/net/redirect.js';

test('the target keeps path and query, and names the port unless it is 443', () => {
  assert.equal(redirectTarget('example.test', 443, '/a/b?c=d'), 'https://example.test/a/b?c=d');
  assert.equal(redirectTarget('example.test', 8443, '/x'), 'https://example.test:8443/x');
});

test('request targets: origin-form as sent with the Host header; absolute-form names its host; the rest is refused', () => {
  assert.deepEqual(requestedResource('/a?b', 'Example.Test:80'), { host: 'example.test', path: '/a?b' });
  // Empty segments are a path like any other (and stay on the redirect's own host).
  assert.deepEqual(requestedResource('//evil.test/x', 'example.test'), { host: 'example.test', path: '//evil.test/x' });
  assert.deepEqual(requestedResource('///', undefined), { host: undefined, path: '///' });
  assert.deepEqual(requestedResource('http://WWW.example.test:80/x?y', 'evil.test'), { host: 'www.example.test', path: '/x?y' });
  // Each of these threw out of new URL() and took the process down (issue 11, finding 1).
  for (const target of ['http://:99999/', 'http://[/', 'http://a%zz/', '*', 'example.test:443', 'ftp://example.test/']) {
    assert.equal(requestedResource(target, 'example.test'), undefined, target);
  }
});

test('GET for a configured domain gets a 301 to its https:// URL; anything else 404', { timeout: 30_000 }, async (t) => {
  if (!requirePrograms(t, 'openssl', ['openssl'])) return;
  const server = await startWithRedirect(t);
  const port = redirectPort(server);

  for (const [host, domain] of [['example.test', 'example.test'], ['example.test:80', 'example.test'], ['WWW.Example.Test.', 'www.example.test']]) {
    const response = await request(port, '/chat/index.html?room=1', { headers: { host } });
    assert.equal(response.status, 301, host);
    assert.equal(response.headers.location, `https://${domain}:${server.port}/chat/index.html?room=1`);
  }
  assert.equal((await request(port, '/', { method: 'HEAD', headers: { host: 'example.test' } })).status, 301);

  assert.equal((await request(port, '/', { headers: { host: 'evil.test' } })).status, 404);
  assert.equal((await request(port, '/', { headers: { host: '127.0.0.1' } })).status, 404);
  assert.equal((await request(port, '/', { method: 'POST', headers: { host: 'example.test' }, body: 'x' })).status, 404);
});

test('--redirect without --domains is refused', async () => {
  const result = await runCli(['--port', '0', '--redirect', '--http-port', '0']);
  assert.equal(result.code, 1);
  assert.match(result.stderr, /^error: --redirect: needs --domains/m);
});

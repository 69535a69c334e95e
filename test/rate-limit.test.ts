// --rate-limit N: at most N new connections per minute per client IP, counted across the TLS
// and redirect listeners, excess dropped before the TLS handshake; IPv4-mapped IPv6 counts as
// the IPv4 address (spec 6).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { request } from './helpers/http.js';
import { peerFingerprint } from './helpers/certs.js';
import { requirePrograms } from './helpers/programs.js';
import { redirectPort, startWithRedirect } from './helpers/redirect-server.js';
import { ConnectionRateLimit, clientKey, limitConnections } from '../src/net/rate-limit.js';

test('an IPv4-mapped IPv6 address counts as its IPv4 address', () => {
  assert.equal(clientKey('::ffff:192.0.2.7'), '192.0.2.7');
  assert.equal(clientKey('::FFFF:192.0.2.7'), '192.0.2.7');
  assert.equal(clientKey('192.0.2.7'), '192.0.2.7');
  assert.equal(clientKey('2001:DB8::1'), '2001:db8::1');
});

test('each address gets N connections per minute, refilled over the minute', () => {
  let now = 0;
  const limit = new ConnectionRateLimit(3, () => now);
  assert.deepEqual([1, 2, 3, 4].map(() => limit.allow('192.0.2.1')), [true, true, true, false]);
  assert.equal(limit.allow('::ffff:192.0.2.1'), false, 'the mapped form shares the bucket');
  assert.equal(limit.allow('192.0.2.2'), true, 'other addresses have their own');
  now += 19_999;
  assert.equal(limit.allow('192.0.2.1'), false);
  now += 1;
  assert.equal(limit.allow('192.0.2.1'), true, 'a third of a minute gives back one connection');
  now += 600_000;
  assert.deepEqual([1, 2, 3, 4].map(() => limit.allow('192.0.2.1')), [true, true, true, false], 'never more than N at once');
});

test('connections over the limit are dropped across the TLS and redirect ports, before the TLS handshake', { timeout: 30_000 }, async (t) => {
  if (!requirePrograms(t, 'openssl', ['openssl'])) return;
  const server = await startWithRedirect(t, ['--rate-limit', '3']);
  const httpPort = redirectPort(server);

  await peerFingerprint(server.port);
  await peerFingerprint(server.port);
  assert.equal((await request(httpPort, '/', { headers: { host: 'example.test' } })).status, 301);

  await assert.rejects(peerFingerprint(server.port), { code: 'ECONNRESET' });
  await assert.rejects(request(httpPort, '/', { headers: { host: 'example.test' } }), { code: 'ECONNRESET' });
});

test('one limit covers a client reaching an IPv4 and an IPv4-mapped IPv6 listener', async (t) => {
  const limit = new ConnectionRateLimit(2);
  const dropped: string[] = [];
  const accepted: string[] = [];
  const servers = ['127.0.0.1', '::ffff:127.0.0.1'].map((host) => {
    const server = net.createServer((socket) => {
      accepted.push(socket.remoteAddress!);
      socket.end('ok');
    });
    limitConnections(server, limit, (address) => dropped.push(address));
    t.after(() => server.close());
    return { server, host };
  });
  for (const { server, host } of servers) {
    server.listen(0, host);
    await once(server, 'listening');
  }

  const connect = async (server: net.Server): Promise<string> => {
    const socket = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    let data = '';
    socket.on('data', (chunk: Buffer) => (data += chunk.toString()));
    await once(socket, 'close');
    return data;
  };
  assert.equal(await connect(servers[0]!.server), 'ok');
  assert.equal(await connect(servers[1]!.server), 'ok');
  assert.equal(await connect(servers[0]!.server), '');
  assert.equal(await connect(servers[1]!.server), '');
  assert.deepEqual(accepted, ['127.0.0.1', '::ffff:127.0.0.1']);
  assert.deepEqual(dropped, ['127.0.0.1', '::ffff:127.0.0.1']);
});

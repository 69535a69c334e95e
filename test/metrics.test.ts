// Observability (issue: metrics and health): /metrics and /healthz on the loopback admin port,
// never on the public one, and metric values that follow what clients do.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { startServer, type RunningServer } from './helpers/server.js';
import { request } from './helpers/http.js';
import { adminOf, scrape as scrapeFrom, waitForMetrics as waitFor } from './helpers/metrics.js';
import { TestClient } from './helpers/client.js';
import { RawClient, encodeFrame, Opcode } from './helpers/raw-ws.js';
import { createServer } from '../src/server.js';

let server: RunningServer;
let admin: URL;

before(async () => {
  server = await startServer(['--admin-port', '0', '--history', 'memory']);
  admin = await adminOf(server);
});

after(async () => {
  await server?.stop();
});

const scrape = (): Promise<Map<string, number>> => scrapeFrom(admin);
const waitForMetrics = (expected: Record<string, number>): Promise<Map<string, number>> => waitFor(admin, expected);

test('the admin port is on loopback and serves /healthz and /metrics only', async () => {
  assert.equal(admin.hostname, '127.0.0.1');
  const health = await request(Number(admin.port), '/healthz');
  assert.equal(health.status, 200);
  assert.equal(health.text, 'ok\n');
  const metrics = await request(Number(admin.port), '/metrics');
  assert.match(metrics.headers['content-type']!, /^text\/plain; version=0\.0\.4/);
  assert.match(metrics.text, /^# HELP mles_connections_open /m);
  assert.match(metrics.text, /^process_cpu_seconds_total /m, 'process metrics are included');
  assert.equal((await request(Number(admin.port), '/other')).status, 404);
  assert.equal((await request(Number(admin.port), '/metrics', { method: 'POST' })).status, 405);
});

test('metrics are not served on the public port', async () => {
  const res = await request(server.port, '/metrics');
  assert.equal(res.status, 404);
  assert.doesNotMatch(res.text, /mles_/);
  assert.equal((await request(server.port, '/healthz')).status, 404);
});

test('metric values follow clients: connections, joins, messages, bytes, channels, history, refusals', async () => {
  const start = await scrape();
  assert.equal(start.get('mles_connections_open'), 0);
  assert.equal(start.get('mles_slow_consumer_closes_total'), 0);

  const alice = await TestClient.join(server.url, 'alice', 'metrics');
  const bob = await TestClient.join(server.url, 'bob', 'metrics');
  await bob.waitFor(1); // alice's join frame from history: both joins are done
  alice.send('hello');
  await bob.waitFor(2);
  const aliceJoin = Buffer.byteLength(JSON.stringify({ uid: 'alice', channel: 'metrics' }));
  const bobJoin = Buffer.byteLength(JSON.stringify({ uid: 'bob', channel: 'metrics' }));
  const values = await waitForMetrics({
    mles_connections_open: 2,
    mles_joins_total: 2,
    mles_messages_in_total: 1,
    mles_messages_out_total: 1,
    mles_channels: 1,
    mles_history_messages: 3,
    mles_bytes_in_total: aliceJoin + bobJoin + 5,
  });
  // bob received alice's join frame (from history) and "hello"; alice received nothing.
  assert.equal(values.get('mles_bytes_out_total'), aliceJoin + 5);

  const duplicate = await TestClient.join(server.url, 'alice', 'metrics');
  await duplicate.closed;
  const noSubprotocol = new TestClient(server.url, 'not-mles');
  await noSubprotocol.closed;
  await waitForMetrics({
    'mles_refusals_total{reason="uid already joined"}': 1,
    'mles_refusals_total{reason="no subprotocol"}': 1,
  });

  await alice.close();
  await bob.close();
  await waitForMetrics({ mles_connections_open: 0, mles_channels: 0, mles_history_messages: 3 });
});

test('HTTP requests on the public port are counted by status', async () => {
  const before = await scrape();
  const notFound = before.get('mles_http_requests_total{status="404"}') ?? 0;
  const notAllowed = before.get('mles_http_requests_total{status="405"}') ?? 0;
  await request(server.port, '/no-such-file');
  await request(server.port, '/no-such-file');
  await request(server.port, '/', { method: 'DELETE' });
  await waitForMetrics({
    'mles_http_requests_total{status="404"}': notFound + 2,
    'mles_http_requests_total{status="405"}': notAllowed + 1,
  });
});

test('/healthz answers 503 once the server is shutting down', async (t) => {
  // The server's own wiring: close() must turn /healthz to 503 while it still serves it.
  const own = await createServer({ port: 0, adminPort: 0, history: 'memory', logger: pino({ level: 'silent' }) });
  let closed: Promise<void> | undefined;
  t.after(() => closed ?? own.close());
  const adminPort = Number(new URL(own.adminUrl!).port);
  assert.equal((await request(adminPort, '/healthz')).status, 200);
  // A client that never answers the close handshake holds close() in its 2 s grace, with the
  // admin port still up: a window to ask /healthz in, opened by the close frame's arrival.
  const stubborn = await RawClient.connect(own.address.port);
  t.after(() => stubborn.destroy());
  stubborn.write(encodeFrame(Opcode.text, JSON.stringify({ uid: 'stubborn', channel: 'healthz' })));
  closed = own.close();
  await stubborn.until(() => stubborn.closeReceived() !== undefined);
  const health = await request(adminPort, '/healthz');
  assert.deepEqual([health.status, health.text], [503, 'shutting down\n']);
  await closed;
});

test('an --admin-port that cannot be bound is refused at start, naming the flag', async () => {
  const taken = Number(admin.port);
  const res = await startServer(['--admin-port', String(taken)]).then(
    async (s) => {
      await s.stop();
      return 'started';
    },
    (error: Error) => error.message,
  );
  assert.match(res, /--admin-port: cannot listen/);
});

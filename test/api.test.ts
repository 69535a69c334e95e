// The HTTP server API (issue 13, item 1) against a real server process: /api/* on the admin
// listener, behind MLES_API_KEY, acting on channels exactly as members would see it.

import { adminOf } from './helpers/metrics.js';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, type RunningServer } from './helpers/server.js';
import { request, type RawResponse } from './helpers/http.js';
import { TestClient } from './helpers/client.js';

const KEY = 'test-api-key';
/** Small, so that an oversized body is cheap to send. */
const MAX_MESSAGE_SIZE = 1024;

let server: RunningServer;
let adminPort: number;
const clients: TestClient[] = [];

async function adminPortOf(running: RunningServer): Promise<number> {
  return Number((await adminOf(running)).port);
}

before(async () => {
  server = await startServer(
    ['--admin-port', '0', '--history', 'memory', '--max-message-size', String(MAX_MESSAGE_SIZE)],
    { env: { MLES_API_KEY: KEY } },
  );
  adminPort = await adminPortOf(server);
});

after(async () => {
  await Promise.all(clients.map((client) => client.close()));
  await server?.stop();
});

interface Call {
  method?: string;
  body?: unknown;
  headers?: Record<string, string>;
  /** The bearer token; null sends no Authorization header. */
  key?: string | null;
  port?: number;
}

/** One API call; `body` is sent as JSON unless it is already a string or a Buffer. */
async function api(path: string, { method = 'GET', body, key = KEY, port = adminPort, headers: extra = {} }: Call = {}): Promise<RawResponse & { json: unknown }> {
  const headers: Record<string, string> = { 'Content-Type': 'application/json', ...extra };
  if (key !== null) headers.Authorization = `Bearer ${key}`;
  const payload = body === undefined || typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
  const res = await request(port, path, { method, headers, ...(payload === undefined ? {} : { body: payload }) });
  assert.match(res.headers['content-type'] ?? '', /^application\/json/, `${method} ${path} answers JSON: ${res.text}`);
  return { ...res, json: JSON.parse(res.text) as unknown };
}

async function join(uid: string, channel: string): Promise<TestClient> {
  const client = await TestClient.join(server.url, uid, channel);
  clients.push(client);
  return client;
}

/** Polls the members call until it lists `uids`: a join takes effect on the server's own time. */
async function waitForMembers(channel: string, uids: string[]): Promise<void> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const res = await api(`/api/channels/${encodeURIComponent(channel)}/members`);
    assert.equal(res.status, 200);
    const listed = (res.json as Array<{ uid: string }>).map((m) => m.uid).sort();
    if (JSON.stringify(listed) === JSON.stringify([...uids].sort())) return;
    if (Date.now() > deadline) assert.fail(`members of ${channel}: ${JSON.stringify(listed)}, want ${JSON.stringify(uids)}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const joinFrame = (uid: string, channel: string): string => JSON.stringify({ uid, channel });

test('publish reaches a member as text or binary, and history keeps it (?limit: the newest)', async () => {
  const alice = await join('alice', 'news');
  await waitForMembers('news', ['alice']);

  const text = await api('/api/publish', { method: 'POST', body: { channel: 'news', text: 'hello from a backend' } });
  assert.equal(text.status, 200);
  assert.deepEqual(text.json, { ok: true });
  const bytes = Buffer.from([0, 1, 2, 255]);
  const binary = await api('/api/publish', { method: 'POST', body: { channel: 'news', base64: bytes.toString('base64') } });
  assert.equal(binary.status, 200);

  const [first, second] = await alice.waitFor(2);
  assert.deepEqual({ text: first!.text, binary: first!.binary }, { text: 'hello from a backend', binary: false });
  assert.equal(second!.binary, true);
  assert.deepEqual(second!.data, bytes);

  const history = await api('/api/channels/news/history');
  assert.equal(history.status, 200);
  assert.deepEqual(history.json, [
    { text: joinFrame('alice', 'news') },
    { text: 'hello from a backend' },
    { base64: bytes.toString('base64') },
  ]);
  assert.deepEqual((await api('/api/channels/news/history?limit=1')).json, [{ base64: bytes.toString('base64') }]);
  assert.equal((await api('/api/channels/news/history?limit=x')).status, 400);
});

test('members and channels with 2 members, the channel name URL-encoded', async () => {
  const channel = 'room/1 a'; // a "/" and a space: both must be encoded in the path
  await join('alice', channel);
  await join('bob', channel);
  await waitForMembers(channel, ['alice', 'bob']);

  const channels = await api('/api/channels');
  assert.equal(channels.status, 200);
  const entry = (channels.json as Array<{ channel: string }>).find((c) => c.channel === channel);
  // Both join frames are kept as history, as for any join.
  assert.deepEqual(entry, { channel, members: 2, history: 2 });
  assert.equal((await api('/api/channels/nobody-here/members')).status, 200, 'an empty channel has no members, not a 404');
  assert.deepEqual((await api('/api/channels/nobody-here/members')).json, []);
});

test('disconnecting a member closes it with 1008 and the operator reason; 404 once it is gone', async () => {
  const carol = await join('carol', 'kick');
  await waitForMembers('kick', ['carol']);

  const res = await api('/api/channels/kick/members/carol', { method: 'DELETE' });
  assert.equal(res.status, 200);
  assert.deepEqual(await carol.closed, { code: 1008, reason: 'disconnected by an operator' });
  assert.deepEqual((await api('/api/channels/kick/members')).json, []);

  const again = await api('/api/channels/kick/members/carol', { method: 'DELETE' });
  assert.equal(again.status, 404);
  assert.match((again.json as { error: string }).error, /carol is not joined to kick/);
});

test('clearing history: a newcomer gets none of it, only what comes after', async () => {
  const dave = await join('dave', 'forget');
  await waitForMembers('forget', ['dave']);
  dave.send('something to forget');
  // Stored once the history shows it (the join frame, then the message).
  for (let i = 0; (await api('/api/channels/forget/history')).text.includes('something to forget') === false; i++) {
    assert.ok(i < 250, 'the message reached history');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }

  const cleared = await api('/api/channels/forget/history', { method: 'DELETE' });
  assert.equal(cleared.status, 200);
  assert.deepEqual((await api('/api/channels/forget/history')).json, []);

  const erin = await join('erin', 'forget');
  await waitForMembers('forget', ['dave', 'erin']);
  await api('/api/publish', { method: 'POST', body: { channel: 'forget', text: 'after the clear' } });
  // Had any history been replayed, it would come first: the replay precedes live messages.
  const [first] = await erin.waitFor(1);
  assert.equal(first!.text, 'after the clear');
});

test('no key or a wrong key: 401; /metrics and /healthz need none', async () => {
  for (const key of [null, 'wrong-key']) {
    const res = await api('/api/channels', { key });
    assert.equal(res.status, 401, `key ${key}`);
    assert.match(res.headers['www-authenticate'] ?? '', /^Bearer/);
    assert.match((res.json as { error: string }).error, /Authorization: Bearer/);
  }
  const publish = await api('/api/publish', { method: 'POST', key: 'wrong-key', body: { channel: 'news', text: 'no' } });
  assert.equal(publish.status, 401);
  assert.equal((await request(adminPort, '/healthz')).status, 200);
  assert.equal((await request(adminPort, '/metrics')).status, 200);
});

test('bad requests: bad JSON and bad fields 400, wrong method 405, unknown path 404', async () => {
  const badJson = await api('/api/publish', { method: 'POST', body: '{"channel": "news", ' });
  assert.equal(badJson.status, 400);
  assert.deepEqual(badJson.json, { error: 'body is not JSON' });
  for (const [body, error] of [
    [{ channel: 'news' }, 'give exactly one of "text" and "base64"'],
    [{ channel: 'news', text: 'a', base64: 'YQ==' }, 'give exactly one of "text" and "base64"'],
    [{ channel: '', text: 'a' }, 'empty channel'],
    [{ channel: 'n\u00e9ws', text: 'a' }, 'channel must be ASCII'],
    [{ channel: 'news', base64: 'not base64!' }, 'base64 must be a base64 string'],
    [[1, 2], 'body must be a JSON object'],
  ] as const) {
    const res = await api('/api/publish', { method: 'POST', body });
    assert.deepEqual({ status: res.status, json: res.json }, { status: 400, json: { error } }, JSON.stringify(body));
  }
  assert.equal((await api('/api/channels/%E9/members')).status, 400, 'a channel must be ASCII in the path too');
  assert.equal((await api('/api/publish')).status, 405);
  assert.equal((await api('/api/nothing')).status, 404);
});

test('oversized: a body over the bound and a message over --max-message-size get 413', async () => {
  const huge = JSON.stringify({ channel: 'news', text: 'x'.repeat(200 * 1024) });
  // Refused by its Content-Length before it is read, and counted as it arrives when chunked.
  for (const headers of [{}, { 'Transfer-Encoding': 'chunked' }] as Array<Record<string, string>>) {
    const res = await api('/api/publish', { method: 'POST', body: huge, headers });
    assert.equal(res.status, 413, JSON.stringify(headers));
    assert.match((res.json as { error: string }).error, /request body over \d+ bytes/);
  }
  const tooBig = await api('/api/publish', { method: 'POST', body: { channel: 'news', text: 'x'.repeat(MAX_MESSAGE_SIZE + 1) } });
  assert.equal(tooBig.status, 413);
  assert.match((tooBig.json as { error: string }).error, /--max-message-size/);
  // Neither was published.
  assert.doesNotMatch((await api('/api/channels/news/history')).text, /xxxx/);
});

test('without MLES_API_KEY the API answers 404 with a hint, whatever the key sent', async () => {
  // Empty is unset, as for MLES_KEY: this server has no API key whatever the test's environment.
  const off = await startServer(['--admin-port', '0', '--history', 'memory'], { env: { MLES_API_KEY: '' } });
  try {
    const port = await adminPortOf(off);
    for (const key of [null, KEY]) {
      const res = await api('/api/channels', { key, port });
      assert.equal(res.status, 404);
      assert.match((res.json as { error: string }).error, /set MLES_API_KEY/);
    }
    assert.equal((await request(port, '/healthz')).status, 200);
  } finally {
    await off.stop();
  }
});

test('with SQLite history, a clear deletes the rows, not only the cached copy', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mles-api-'));
  const args = ['--admin-port', '0', '--history', `sqlite:${path.join(dir, 'history.db')}`];
  /** Runs `steps` against a fresh server process on the same database file, then stops it. */
  const withServer = async (steps: (history: () => Promise<unknown>, port: number) => Promise<void>): Promise<void> => {
    const running = await startServer(args, { env: { MLES_API_KEY: KEY } });
    try {
      const port = await adminPortOf(running);
      await steps(async () => (await api('/api/channels/db/history', { port })).json, port);
    } finally {
      await running.stop();
    }
  };
  try {
    await withServer(async (history, port) => {
      const publish = (text: string): Promise<unknown> => api('/api/publish', { method: 'POST', port, body: { channel: 'db', text } });
      await publish('old 1');
      await publish('old 2');
      // Read once, so the history is in the store's read cache when it is cleared.
      assert.deepEqual(await history(), [{ text: 'old 1' }, { text: 'old 2' }]);
      assert.equal((await api('/api/channels/db/history', { method: 'DELETE', port })).status, 200);
      assert.deepEqual(await history(), []);
      await publish('new');
      assert.deepEqual(await history(), [{ text: 'new' }]);
    });
    // After a restart only the database speaks: the cleared messages are gone from it.
    await withServer(async (history) => {
      assert.deepEqual(await history(), [{ text: 'new' }]);
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// Issue 12, item 3: peer links on cluster nodes. Two nodes on one Redis link to a standalone
// server; members on either node and on the peer exchange messages exactly once, in order. One
// node at a time holds a channel's links; when its members leave, another node with members
// takes them over.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type RunningServer } from './helpers/server.js';
import { TestClient } from './helpers/client.js';
import { requireRedis, startRedis, type RunningRedis } from './helpers/redis.js';

const MEMORY = ['--history', 'memory', '--limit', '1000'];
const NO_PEER_KEY = { MLES_PEER_KEY: '' };
const servers: RunningServer[] = [];
let redis: RunningRedis | undefined;

after(async () => {
  await Promise.all(servers.map((s) => s.stop('SIGKILL')));
  await redis?.stop();
});

async function start(args: string[]): Promise<RunningServer> {
  const server = await startServer(args, { env: NO_PEER_KEY });
  servers.push(server);
  return server;
}

async function waitForText(client: TestClient, text: string): Promise<void> {
  while (!client.texts().includes(text)) await client.waitFor(client.received.length + 1);
}

const said = (client: TestClient, who: string): string[] => client.texts().filter((m) => m.startsWith(`${who}:`));
const script = (who: string, n: number): string[] => [...Array.from({ length: n }, (_, i) => `${who}:${i}`), `${who}:end`];

test('members on every node of a cluster and on its peer exchange messages exactly once; the links move with the members', { timeout: 60_000 }, async (t) => {
  if (!requireRedis(t)) return;
  redis = await startRedis();
  const peer = await start(MEMORY);
  const nodes = await Promise.all([0, 1].map(() => start([...MEMORY, '--redis', redis!.url, '--peer', peer.url])));
  const channel = 'linked';

  const alice = await TestClient.join(nodes[0]!.url, 'alice', channel);
  await nodes[0]!.waitForLog('peer link resynchronised');
  const carol = await TestClient.join(nodes[1]!.url, 'carol', channel);
  const bob = await TestClient.join(peer.url, 'bob', channel);
  // Everyone is in: a probe from each side reaches the others.
  alice.send('alice:probe');
  bob.send('bob:probe');
  await Promise.all([waitForText(carol, 'alice:probe'), waitForText(bob, 'alice:probe'), waitForText(carol, 'bob:probe'), waitForText(alice, 'bob:probe')]);

  const members = { alice, bob, carol };
  for (const [who, client] of Object.entries(members)) for (const text of script(who, 50)) client.send(text);
  for (const [who, client] of Object.entries(members)) {
    for (const other of Object.keys(members).filter((o) => o !== who)) await waitForText(client, `${other}:end`);
  }
  for (const [who, client] of Object.entries(members)) {
    for (const other of Object.keys(members).filter((o) => o !== who)) {
      assert.deepEqual(said(client, other).filter((m) => m !== `${other}:probe`), script(other, 50), `${who} got ${other}'s messages once, in order`);
    }
    assert.deepEqual(said(client, who), [], `${who} never got its own messages back`);
  }

  // Alice leaves: node 0 lets go of the links, node 1 (carol) takes them over.
  await alice.close();
  await nodes[1]!.waitForLog('peer link resynchronised');
  bob.send('bob:after');
  carol.send('carol:after');
  await Promise.all([waitForText(carol, 'bob:after'), waitForText(bob, 'carol:after')]);
  assert.equal(carol.texts().filter((m) => m === 'bob:after').length, 1);

  // Each side's history holds every message once.
  for (const server of [peer, nodes[0]!]) {
    const reader = await TestClient.join(server.url, `reader-${server.port}`, channel);
    const marker = await TestClient.join(server.url, `marker-${server.port}`, channel);
    marker.send('end of history');
    await waitForText(reader, 'end of history');
    const history = reader.texts().slice(0, reader.texts().indexOf('end of history'));
    for (const text of [...script('alice', 50), ...script('bob', 50), ...script('carol', 50), 'bob:after', 'carol:after']) {
      assert.equal(history.filter((m) => m === text).length, 1, `${text} once in history on ${server.port}`);
    }
    await Promise.all([reader.close(), marker.close()]);
  }
  await Promise.all([bob.close(), carol.close()]);
});

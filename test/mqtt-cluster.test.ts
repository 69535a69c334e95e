// The MQTT bridge on a cluster (docs/mqtt.md, "Cluster mode"): two nodes on one real Redis, both
// bridged to one real Mosquitto. One node bridges a channel at a time (its "mqtt" link claim): a
// member's message reaches MQTT once, whichever node the member is on; an MQTT message reaches
// the members on every node once and is in history once, also for a channel nobody is in (taken
// by the node holding the inbox) or with members on the other node only; when the bridging node
// stops, the other takes over.

import { after, before, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startServer, type RunningServer } from './helpers/server.js';
import { TestClient } from './helpers/client.js';
import { adminOf, scrape, waitForMetrics } from './helpers/metrics.js';
import { MqttPeer, requireMosquitto, startMosquitto, type RunningMosquitto } from './helpers/mosquitto.js';
import { hasProgram, requirePrograms } from './helpers/programs.js';
import { requireRedis, startRedis, type RunningRedis } from './helpers/redis.js';

const PREFIX = 'cl/';
let redis: RunningRedis | undefined;
let broker: RunningMosquitto | undefined;

before(async () => {
  if (hasProgram('redis-server')) redis = await startRedis();
  if (hasProgram('mosquitto')) broker = await startMosquitto();
});

after(async () => {
  await broker?.stop();
  await redis?.stop();
});

function needed(t: TestContext): boolean {
  return requireRedis(t) && requireMosquitto(t) && requirePrograms(t, 'mosquitto-clients', ['mosquitto_pub']);
}

/** A cluster node bridged to the broker; debug logs say which channels it bridges. */
async function node(): Promise<RunningServer> {
  const server = await startServer(['--redis', redis!.url, '--mqtt', broker!.url, '--mqtt-prefix', PREFIX, '--admin-port', '0'], { env: { MLES_LOG: 'debug' } });
  await server.waitForLog('MQTT bridge connected');
  return server;
}

const holds = (channel: string): string => `"channel":"${channel}","msg":"MQTT bridge holds the channel"`;
const INBOX = 'MQTT bridge takes in messages for channels no node bridges';

async function received(client: TestClient, text: string): Promise<void> {
  while (!client.texts().includes(text)) await client.waitFor(client.received.length + 1);
}

let readers = 0;

/** The channel's messages in history as a newcomer on `server` gets them (up to a marker sent after it joined). */
async function history(server: RunningServer, channel: string): Promise<string[]> {
  const n = ++readers;
  const reader = await TestClient.join(server.url, `reader-${n}`, channel);
  const marker = await TestClient.join(server.url, `marker-${n}`, channel);
  marker.send(`end of history ${n}`);
  await received(reader, `end of history ${n}`);
  await Promise.all([reader.close(), marker.close()]);
  // Joins and earlier readers' markers are in history too: the messages only.
  return reader.texts().slice(0, reader.texts().indexOf(`end of history ${n}`)).filter((m) => !m.startsWith('{"uid":') && !m.startsWith('end of history'));
}

/** Waits for a node's bridge counters (the broker's acknowledgements arrive on their own time). */
async function bridgedCounts(server: RunningServer, taken: number, published: number): Promise<void> {
  await waitForMetrics(await adminOf(server), { mles_mqtt_messages_in_total: taken, mles_mqtt_messages_out_total: published });
}

function count(list: string[], value: string): number {
  return list.filter((v) => v === value).length;
}

test('a cluster bridges each channel once, both ways, and the other node takes over when the bridging one stops', { timeout: 120_000 }, async (t) => {
  if (!needed(t)) return;
  const a = await node();
  t.after(() => a.stop());
  await a.waitForLog(INBOX);
  const b = await node();
  t.after(() => b.stop());
  const watcher = await MqttPeer.connect(broker!.url);
  t.after(() => watcher.close());
  await watcher.subscribe(`${PREFIX}#`);
  const sensor = await MqttPeer.connect(broker!.url);
  t.after(() => sensor.close());
  const mosquittoPub = (topic: string, message: string): Promise<unknown> =>
    promisify(execFile)('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(broker!.port), '-V', 'mqttv5', '-q', '1', '-t', topic, '-m', message]);

  const alice = await TestClient.join(a.url, 'alice', 'room');
  t.after(() => alice.close());
  await a.waitForLog(holds('room'));
  const bob = await TestClient.join(b.url, 'bob', 'room');
  t.after(() => bob.close());
  alice.send('alice:probe');
  await received(bob, 'alice:probe');

  // Channel -> MQTT: members on both nodes, each message once, in order per sender.
  const series = (who: string, n = 20): string[] => [...Array.from({ length: n }, (_, i) => `${who}:${i}`), `${who}:end`];
  for (const text of series('alice')) alice.send(text);
  for (const text of series('bob')) bob.send(text);
  await watcher.waitFor((p) => p.text === 'alice:end');
  await watcher.waitFor((p) => p.text === 'bob:end');

  // MQTT -> channel: a client's messages (and one from mosquitto_pub) reach both nodes' members once.
  for (const text of series('mqtt', 10)) await sensor.publish(`${PREFIX}room`, text);
  await mosquittoPub(`${PREFIX}room`, 'mqtt:cli');
  await Promise.all([received(alice, 'mqtt:cli'), received(bob, 'mqtt:cli')]);
  // One node publishes the channel, in channel order: had it echoed the MQTT messages back to
  // the broker, those copies would come before this.
  bob.send('bob:flush');
  await watcher.waitFor((p) => p.text === 'bob:flush');

  const topic = watcher.texts(`${PREFIX}room`);
  assert.deepEqual(topic.filter((m) => m.startsWith('alice:')), ['alice:probe', ...series('alice')], 'alice\'s once each, in order');
  assert.deepEqual(topic.filter((m) => m.startsWith('bob:')), [...series('bob'), 'bob:flush'], 'bob\'s once each, in order');
  assert.deepEqual(topic.filter((m) => m.startsWith('mqtt:')), [...series('mqtt', 10), 'mqtt:cli'], 'MQTT\'s own, not echoed back');
  const mqtt = [...series('mqtt', 10), 'mqtt:cli'];
  for (const client of [alice, bob]) assert.deepEqual(client.texts().filter((m) => m.startsWith('mqtt:')), mqtt, 'once each, in order');
  assert.deepEqual(alice.texts().filter((m) => m.startsWith('bob:')), [...series('bob'), 'bob:flush']);
  assert.deepEqual(bob.texts().filter((m) => m.startsWith('alice:')), ['alice:probe', ...series('alice')]);
  assert.deepEqual(alice.texts().filter((m) => m.startsWith('alice:')), [], 'none of alice\'s came back');
  // Node a holds the channel: it alone took in and published.
  await bridgedCounts(a, mqtt.length, 1 + 2 * 21 + 1);
  const other = await scrape(await adminOf(b));
  assert.deepEqual([other.get('mles_mqtt_messages_in_total'), other.get('mles_mqtt_messages_out_total')], [0, 0]);

  // A channel nobody is in: the inbox's node takes it in, once, for a later joiner on either node.
  await sensor.publish(`${PREFIX}logbook`, 'log:1');
  // Taken in one at a time, in order: once this is in the room, the logbook has its entry.
  await sensor.publish(`${PREFIX}room`, 'mqtt:after-log');
  await received(bob, 'mqtt:after-log');
  assert.deepEqual(await history(b, 'logbook'), ['log:1']);
  const room = await history(b, 'room');
  for (const text of [...series('alice'), ...series('bob'), ...mqtt]) assert.equal(count(room, text), 1, `${text} once in history`);

  // A channel with members on node b only: node b bridges it, though node a holds the inbox.
  const carol = await TestClient.join(b.url, 'carol', 'side');
  t.after(() => carol.close());
  await b.waitForLog(holds('side'));
  carol.send('carol:1');
  await watcher.waitFor((p) => p.text === 'carol:1');
  await sensor.publish(`${PREFIX}side`, 'side:1');
  await sensor.publish(`${PREFIX}side`, 'side:2');
  await received(carol, 'side:2');
  carol.send('carol:flush');
  await watcher.waitFor((p) => p.text === 'carol:flush');
  assert.deepEqual(carol.texts(), ['side:1', 'side:2']);
  assert.deepEqual(watcher.texts(`${PREFIX}side`), ['carol:1', 'side:1', 'side:2', 'carol:flush']);
  await bridgedCounts(b, 2, 2);

  // Node a stops: node b takes the channel and the inbox, and bridging goes on both ways.
  await alice.close();
  await a.stop();
  await b.waitForLog(holds('room'));
  await b.waitForLog(INBOX);
  bob.send('bob:after');
  await watcher.waitFor((p) => p.text === 'bob:after');
  await sensor.publish(`${PREFIX}room`, 'mqtt:after');
  await received(bob, 'mqtt:after');
  await sensor.publish(`${PREFIX}logbook`, 'log:2');
  await sensor.publish(`${PREFIX}room`, 'mqtt:after-log2');
  await received(bob, 'mqtt:after-log2');
  assert.deepEqual(await history(b, 'logbook'), ['log:1', 'log:2']);
  bob.send('bob:flush2');
  await watcher.waitFor((p) => p.text === 'bob:flush2');
  assert.equal(count(watcher.texts(`${PREFIX}room`), 'bob:after'), 1);
  assert.equal(count(watcher.texts(`${PREFIX}room`), 'mqtt:after'), 1, 'not echoed by the new node either');
  assert.equal(count(bob.texts(), 'mqtt:after'), 1);
});

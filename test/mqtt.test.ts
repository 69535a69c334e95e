// The MQTT bridge (issue 15, spec section 8, docs/mqtt.md) against a real Mosquitto: messages
// cross both ways exactly once and in order, none is echoed back, what MQTT publishes is in
// history, a broker restart is survived (queued messages bridged after, the oldest dropped when
// the queue is full), names that cannot be topics are not bridged, and --mqtt is validated.

import { adminOf, scrape as scrapeMetrics } from './helpers/metrics.js';
import { after, before, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { IClientOptions } from 'mqtt';
import { startServer, runCli, type RunningServer } from './helpers/server.js';
import { TestClient } from './helpers/client.js';
import { MqttPeer, requireMosquitto, startMosquitto, type RunningMosquitto } from './helpers/mosquitto.js';
import { hasProgram } from './helpers/programs.js';

const T = { timeout: 60_000 };
const MEMORY = ['--history', 'memory', '--limit', '1000'];
const NO_PEER_KEY = { MLES_PEER_KEY: '' };

let broker: RunningMosquitto | undefined;

before(async () => {
  // Started where mosquitto is installed; each test that needs it says so (skips, or fails in CI).
  if (hasProgram('mosquitto')) broker = await startMosquitto();
});

after(async () => {
  await broker?.stop();
});

/** The broker, or undefined when the test is skipped for the lack of one. */
function needBroker(t: TestContext): RunningMosquitto | undefined {
  if (!requireMosquitto(t)) return undefined;
  return broker!;
}

async function bridged(args: string[], env: NodeJS.ProcessEnv = {}): Promise<RunningServer> {
  const server = await startServer([...MEMORY, ...args], { env });
  await server.waitForLog('MQTT bridge connected');
  return server;
}

/** Waits until `client` has received a message with this text. */
async function received(client: TestClient, text: string): Promise<void> {
  while (!client.texts().includes(text)) await client.waitFor(client.received.length + 1);
}

function count(list: string[], value: string): number {
  return list.filter((v) => v === value).length;
}

/** Every value of the metrics endpoint, by series. */
async function scrape(server: RunningServer): Promise<Map<string, number>> {
  return scrapeMetrics(await adminOf(server));
}

test('MQTT -> channel: every message once, in order; valid UTF-8 as text, anything else binary', T, async (t) => {
  const mosquitto = needBroker(t);
  if (!mosquitto) return;
  const server = await bridged(['--mqtt', mosquitto.url, '--mqtt-prefix', 'in/']);
  t.after(() => server.stop());
  const alice = await TestClient.join(server.url, 'alice', 'sensors');
  t.after(() => alice.close());
  const sensor = await MqttPeer.connect(mosquitto.url);
  t.after(() => sensor.close());

  const binary = Buffer.from([0xff, 0xfe, 0x00, 0x80]);
  for (let i = 0; i < 100; i++) await sensor.publish('in/sensors', `reading:${i}`);
  await sensor.publish('in/sensors', binary);
  await sensor.publish('in/sensors', 'end');
  await received(alice, 'end');
  // QoS 0 too (only once the bridge is idle: the broker may drop QoS 0 for a subscriber behind).
  await sensor.client.publishAsync('in/sensors', 'qos0', { qos: 0 });
  await received(alice, 'qos0');

  const expected = [...Array.from({ length: 100 }, (_, i) => `reading:${i}`)];
  const readings = alice.received.filter((m) => m.text.startsWith('reading:'));
  assert.deepEqual(readings.map((m) => m.text), expected, 'each once, in the order published');
  assert.ok(readings.every((m) => !m.binary), 'UTF-8 payloads arrive as text frames');
  const frames = alice.received.filter((m) => m.binary);
  assert.equal(frames.length, 1, 'one binary frame');
  assert.deepEqual(frames[0]!.data, binary, 'the bytes exactly');
  assert.deepEqual(alice.texts().slice(-2), ['end', 'qos0']);
});

test('channel -> MQTT: each message once, in order per sender, none echoed back into the channel', T, async (t) => {
  const mosquitto = needBroker(t);
  if (!mosquitto) return;
  // MQTT 5 (No Local) and MQTT 3.1.1, whose broker echoes the bridge's own publications: the
  // dedup must drop those (mles_mqtt_duplicates_total counts them).
  for (const version of ['5', '4']) {
    const prefix = `out${version}/`;
    const server = await bridged(['--mqtt', `${mosquitto.url}?protocolVersion=${version}`, '--mqtt-prefix', prefix, '--admin-port', '0']);
    t.after(() => server.stop());
    const watcher = await MqttPeer.connect(mosquitto.url);
    t.after(() => watcher.close());
    await watcher.subscribe(`${prefix}#`);
    const alice = await TestClient.join(server.url, 'alice', 'chat');
    const bob = await TestClient.join(server.url, 'bob', 'chat');
    t.after(() => Promise.all([alice.close(), bob.close()]));

    for (let i = 0; i < 50; i++) alice.send(`alice:${i}`);
    for (let i = 0; i < 50; i++) bob.send(`bob:${i}`);
    alice.send(Buffer.from([0x00, 0xc3]));
    alice.send('alice:end');
    bob.send('bob:end');
    const topic = `${prefix}chat`;
    await watcher.waitFor((p) => p.text === 'alice:end');
    await watcher.waitFor((p) => p.text === 'bob:end');
    const texts = watcher.texts(topic);
    const series = (who: string): string[] => [...Array.from({ length: 50 }, (_, i) => `${who}:${i}`), `${who}:end`];
    assert.deepEqual(texts.filter((m) => m.startsWith('alice:')), series('alice'), `MQTT ${version}: alice's, once, in order`);
    assert.deepEqual(texts.filter((m) => m.startsWith('bob:')), series('bob'), `MQTT ${version}: bob's, once, in order`);
    const binary = watcher.received.filter((p) => p.payload.equals(Buffer.from([0x00, 0xc3])));
    assert.equal(binary.length, 1, 'the binary frame, bytes exactly');
    if (version === '5') {
      assert.equal(watcher.received.find((p) => p.text === 'alice:0')!.packet.properties?.payloadFormatIndicator, true, 'text is marked UTF-8');
      assert.equal(binary[0]!.packet.properties?.payloadFormatIndicator, undefined, 'binary is not');
    }

    // A marker published after every bridged message: once it is in the channel, any echo of
    // the bridge's own publications would have come before it.
    await watcher.publish(topic, 'mqtt:marker');
    await received(alice, 'mqtt:marker');
    await received(bob, 'mqtt:marker');
    assert.equal(alice.texts().filter((m) => m.startsWith('alice:')).length, 0, 'alice gets none of her own back');
    assert.deepEqual(alice.texts().filter((m) => m.startsWith('bob:')), series('bob'), 'bob\'s once each, not again from MQTT');
    assert.deepEqual(bob.texts().filter((m) => m.startsWith('alice:')), series('alice'));
    assert.equal(count(watcher.texts(topic), 'mqtt:marker'), 1, 'what came from MQTT is not published back');
    const metrics = await scrape(server);
    assert.equal(metrics.get('mles_mqtt_messages_out_total'), 103);
    assert.equal(metrics.get('mles_mqtt_connected'), 1);
    if (version === '4') assert.ok(metrics.get('mles_mqtt_duplicates_total')! >= 103, 'the broker echoed, the bridge dropped the echoes');
  }
});

test('what MQTT publishes to a channel nobody is in is in its history for a later joiner', T, async (t) => {
  const mosquitto = needBroker(t);
  if (!mosquitto) return;
  const server = await bridged(['--mqtt', mosquitto.url, '--mqtt-prefix', 'hist/']);
  t.after(() => server.stop());
  const probe = await TestClient.join(server.url, 'probe', 'probe');
  t.after(() => probe.close());
  const sensor = await MqttPeer.connect(mosquitto.url);
  t.after(() => sensor.close());
  for (let i = 0; i < 20; i++) await sensor.publish('hist/logbook', `entry:${i}`);
  await sensor.publish('hist/logbook', Buffer.from([0xff]));
  // The bridge takes the broker's messages one at a time, each stored before the next: once the
  // probe's arrives, the logbook's are stored.
  await sensor.publish('hist/probe', 'stored');
  await received(probe, 'stored');

  const late = await TestClient.join(server.url, 'late', 'logbook');
  t.after(() => late.close());
  const history = await late.waitFor(21);
  assert.deepEqual(history.slice(0, 20).map((m) => m.text), Array.from({ length: 20 }, (_, i) => `entry:${i}`));
  assert.deepEqual([history[20]!.binary, history[20]!.data], [true, Buffer.from([0xff])]);
});

test('a broker restart: local traffic goes on, the bridge reconnects by itself, queued messages are bridged after, the oldest dropped when full', T, async (t) => {
  const mosquitto = needBroker(t);
  if (!mosquitto) return;
  // 2 KiB of queue: about 15 small messages (bytes + 128 each).
  const server = await bridged(['--mqtt', mosquitto.url, '--mqtt-prefix', 'restart/', '--max-buffered', '2048', '--admin-port', '0']);
  t.after(() => server.stop());
  // A persistent session: the broker keeps the watcher's subscription and queue across its restart.
  const watcher = await MqttPeer.connect(mosquitto.url, { clientId: 'restart-watcher', clean: false, properties: { sessionExpiryInterval: 600 } });
  t.after(() => watcher.close());
  await watcher.subscribe('restart/#');
  const alice = await TestClient.join(server.url, 'alice', 'outage');
  const bob = await TestClient.join(server.url, 'bob', 'outage');
  t.after(() => Promise.all([alice.close(), bob.close()]));
  alice.send('before');
  await watcher.waitFor((p) => p.text === 'before');

  await mosquitto.kill('SIGTERM');
  await server.waitForLog('MQTT broker connection lost');
  for (let i = 0; i < 30; i++) alice.send(`down:${i}`);
  alice.send('down:end');
  await received(bob, 'down:end'); // the broker's absence does not hold up the channel
  const down = await scrape(server);
  const dropped = down.get('mles_mqtt_dropped_total{reason="queue_full"}')!;
  assert.equal(down.get('mles_mqtt_connected'), 0);
  assert.ok(dropped > 0 && dropped < 31, `some dropped (${dropped}), some kept`);
  assert.equal(down.get('mles_mqtt_queued_messages'), 31 - dropped);
  await server.waitForLog('MQTT queue full: dropping the oldest unsent messages');

  await mosquitto.start();
  await server.waitForLog(/MQTT bridge connected[\s\S]*MQTT bridge connected/);
  alice.send('after');
  await watcher.waitFor((p) => p.text === 'after');
  const kept = [...Array.from({ length: 30 }, (_, i) => `down:${i}`), 'down:end'].slice(dropped);
  assert.deepEqual(watcher.texts('restart/outage'), ['before', ...kept, 'after'], 'the newest queued, once, in order; then live again');
  assert.match(server.stderr(), new RegExp(`"dropped":${dropped}.*MQTT bridge connected`), 'the reconnect says how many were dropped');

  await watcher.publish('restart/outage', 'mqtt:back');
  await received(bob, 'mqtt:back');
  const up = await scrape(server);
  assert.equal(up.get('mles_mqtt_connected'), 1);
  assert.equal(up.get('mles_mqtt_outages_total'), 1);
  assert.equal(up.get('mles_mqtt_messages_out_total'), 2 + kept.length);
  assert.equal(up.get('mles_mqtt_messages_in_total'), 1);
});

test('channel names that cannot be topics are not bridged, and logged once; "/" makes topic levels', T, async (t) => {
  const mosquitto = needBroker(t);
  if (!mosquitto) return;
  const server = await bridged(['--mqtt', mosquitto.url, '--mqtt-prefix', 'names/']);
  t.after(() => server.stop());
  const watcher = await MqttPeer.connect(mosquitto.url);
  t.after(() => watcher.close());
  await watcher.subscribe('#');

  for (const name of ['bad+plus', 'bad#hash', '$dollar']) {
    const a = await TestClient.join(server.url, 'alice', name);
    const b = await TestClient.join(server.url, 'bob', name);
    a.send(`local in ${name}`);
    await received(b, `local in ${name}`); // the channel works, locally
    await Promise.all([a.close(), b.close()]);
    await server.waitForLog(`"channel":${JSON.stringify(name)}`);
  }
  // The same channel again: no second log line.
  const again = await TestClient.join(server.url, 'carol', 'bad+plus');
  again.send('again');
  await again.close();
  // A topic that cannot be a channel (Mles channel names are ASCII), twice.
  await watcher.publish('names/caf\u00e9', 'x');
  await watcher.publish('names/caf\u00e9', 'y');

  // A channel with "/" is a topic with levels, both ways.
  const kitchen = await TestClient.join(server.url, 'alice', 'home/kitchen');
  t.after(() => kitchen.close());
  kitchen.send('lights on');
  await watcher.waitFor((p) => p.topic === 'names/home/kitchen' && p.text === 'lights on');
  await watcher.publish('names/home/kitchen', 'lights off');
  await received(kitchen, 'lights off');

  const logs = server.stderr();
  assert.equal(logs.match(/"channel":"bad\+plus".*channel not bridged to MQTT/g)?.length, 1, logs);
  assert.equal(logs.match(/"channel":"bad#hash".*channel not bridged to MQTT/g)?.length, 1);
  assert.equal(logs.match(/"channel":"\$dollar".*channel not bridged to MQTT/g)?.length, 1);
  assert.equal(logs.match(/MQTT topic not bridged to a channel/g)?.length, 1, 'the topic is logged once');
  const published = watcher.received.map((p) => p.topic);
  assert.deepEqual([...new Set(published)].sort(), ['names/caf\u00e9', 'names/home/kitchen'], 'nothing from the unbridgeable channels');
});

test('over websockets (ws://), TLS (mqtts://) and websockets over TLS (wss://), with a private CA', T, async (t) => {
  const mosquitto = needBroker(t);
  if (!mosquitto) return;
  const watcher = await MqttPeer.connect(mosquitto.url);
  t.after(() => watcher.close());
  await watcher.subscribe('tr/#');
  // The broker's certificate is its own CA; the server trusts it as an operator would.
  const trusted = { NODE_EXTRA_CA_CERTS: mosquitto.caFile };
  const transports: Array<[string, string]> = [
    ['ws', `${mosquitto.wsUrl}/mqtt`], ['mqtts', mosquitto.tlsUrl], ['wss', `${mosquitto.wssUrl}/mqtt`],
  ];
  for (const [name, url] of transports) {
    const server = await bridged(['--mqtt', url, '--mqtt-prefix', 'tr/'], trusted);
    t.after(() => server.stop());
    const alice = await TestClient.join(server.url, 'alice', name);
    t.after(() => alice.close());
    alice.send(`over ${name}`);
    await watcher.waitFor((p) => p.topic === `tr/${name}` && p.text === `over ${name}`);
    await watcher.publish(`tr/${name}`, `back over ${name}`);
    await received(alice, `back over ${name}`);
    assert.deepEqual(alice.texts(), [`back over ${name}`]);
  }
  // Without the CA the broker's certificate is refused, and said so.
  const untrusted = await startServer([...MEMORY, '--mqtt', mosquitto.tlsUrl]);
  t.after(() => untrusted.stop());
  await untrusted.waitForLog(/"error":"self-signed certificate".*"msg":"MQTT connection failed; retrying"/);
});

test('a repeated payload is a message every time, both ways (a sensor\'s "on", "off", "on", the same reading twice)', T, async (t) => {
  const mosquitto = needBroker(t);
  if (!mosquitto) return;
  const server = await bridged(['--mqtt', mosquitto.url, '--mqtt-prefix', 'repeat/']);
  t.after(() => server.stop());
  const alice = await TestClient.join(server.url, 'alice', 'switch');
  t.after(() => alice.close());
  const sensor = await MqttPeer.connect(mosquitto.url);
  t.after(() => sensor.close());
  await sensor.subscribe('repeat/#');

  const readings = ['on', 'on', 'off', 'on', '21.5', '21.5', '21.5'];
  for (const reading of readings) await sensor.publish('repeat/switch', reading);
  await sensor.publish('repeat/switch', 'sensor:end');
  await received(alice, 'sensor:end');
  assert.deepEqual(alice.texts(), [...readings, 'sensor:end'], 'every publication, in order');

  for (let i = 0; i < 3; i++) alice.send('same');
  alice.send('on'); // also what MQTT sent a moment ago
  alice.send('alice:end');
  await sensor.waitFor((p) => p.text === 'alice:end');
  assert.deepEqual(sensor.texts('repeat/switch'), [...readings, 'sensor:end', 'same', 'same', 'same', 'on', 'alice:end']);
  // None of alice's came back into the channel: a marker after them is the next thing she gets.
  await sensor.publish('repeat/switch', 'sensor:flush');
  await received(alice, 'sensor:flush');
  assert.deepEqual(alice.texts().slice(readings.length + 1), ['sensor:flush']);

  // The price (docs/mqtt.md): a device's message with the bytes of one the bridge published is
  // taken for that message come back by a peer link, once per publication; later ones are new.
  await sensor.publish('repeat/switch', 'on');
  await sensor.publish('repeat/switch', 'on');
  await sensor.publish('repeat/switch', 'sensor:end2');
  await received(alice, 'sensor:end2');
  assert.deepEqual(alice.texts().slice(readings.length + 2), ['on', 'sensor:end2']);
});

test('what carries the bridge\'s own mark is not taken in, also where the broker does not apply No Local', T, async (t) => {
  const mosquitto = needBroker(t);
  if (!mosquitto) return;
  const server = await bridged(['--mqtt', `${mosquitto.url}?clientId=marked-bridge`, '--mqtt-prefix', 'mark/']);
  t.after(() => server.stop());
  const alice = await TestClient.join(server.url, 'alice', 'room');
  t.after(() => alice.close());
  const watcher = await MqttPeer.connect(mosquitto.url);
  t.after(() => watcher.close());
  await watcher.subscribe('mark/#');

  alice.send('from alice');
  await watcher.waitFor((p) => p.text === 'from alice');
  const mark = watcher.received.find((p) => p.text === 'from alice')!.packet.properties?.userProperties;
  assert.deepEqual({ ...mark }, { 'mles-bridge': 'marked-bridge' }, 'each publication names its bridge');
  // As if the bridge's publication came back by a path No Local does not cover (another
  // broker's bridge): dropped. Another bridge's mark, or none, is taken in.
  const as = (bridge: string): IClientOptions['properties'] => ({ userProperties: { 'mles-bridge': bridge } });
  await watcher.client.publishAsync('mark/room', 'own mark', { qos: 1, properties: as('marked-bridge') });
  await watcher.client.publishAsync('mark/room', 'other mark', { qos: 1, properties: as('another-bridge') });
  await watcher.publish('mark/room', 'no mark');
  await received(alice, 'no mark');
  assert.deepEqual(alice.texts(), ['other mark', 'no mark']);
});

test('a loop: two peer-linked servers bridged to one broker give members each message once', T, async (t) => {
  const mosquitto = needBroker(t);
  if (!mosquitto) return;
  const bridge = ['--mqtt', mosquitto.url, '--mqtt-prefix', 'loop/'];
  const b = await bridged(bridge, NO_PEER_KEY);
  t.after(() => b.stop());
  const a = await bridged([...bridge, '--peer', b.url, '--peer-uid', 'link-a'], NO_PEER_KEY);
  t.after(() => a.stop());
  const alice = await TestClient.join(a.url, 'alice', 'ring');
  await a.waitForLog('peer link resynchronised');
  const bob = await TestClient.join(b.url, 'bob', 'ring');
  t.after(() => Promise.all([alice.close(), bob.close()]));
  const sensor = await MqttPeer.connect(mosquitto.url);
  t.after(() => sensor.close());
  await sensor.subscribe('loop/#');

  for (let i = 0; i < 30; i++) alice.send(`alice:${i}`);
  for (let i = 0; i < 30; i++) bob.send(`bob:${i}`);
  for (let i = 0; i < 30; i++) await sensor.publish('loop/ring', `mqtt:${i}`);
  alice.send('alice:end');
  bob.send('bob:end');
  await sensor.publish('loop/ring', 'mqtt:end');
  await Promise.all([received(alice, 'bob:end'), received(alice, 'mqtt:end'), received(bob, 'alice:end'), received(bob, 'mqtt:end')]);
  // Whatever came the other way round (peer link, or the broker from the other bridge) comes
  // before a message that goes the same ways after it.
  alice.send('alice:flush');
  bob.send('bob:flush');
  await Promise.all([received(alice, 'bob:flush'), received(bob, 'alice:flush')]);
  await sensor.waitFor((p) => p.text === 'alice:flush');
  await sensor.waitFor((p) => p.text === 'bob:flush');
  await sensor.publish('loop/ring', 'mqtt:flush');
  await Promise.all([received(alice, 'mqtt:flush'), received(bob, 'mqtt:flush')]);

  const series = (who: string): string[] => [...Array.from({ length: 30 }, (_, i) => `${who}:${i}`), `${who}:end`, `${who}:flush`];
  const of = (client: TestClient, who: string): string[] => client.texts().filter((m) => m.startsWith(`${who}:`));
  assert.deepEqual(of(alice, 'bob'), series('bob'));
  assert.deepEqual(of(alice, 'mqtt'), series('mqtt'));
  assert.deepEqual(of(alice, 'alice'), []);
  assert.deepEqual(of(bob, 'alice'), series('alice'));
  assert.deepEqual(of(bob, 'mqtt'), series('mqtt'));
  assert.deepEqual(of(bob, 'bob'), []);
  // On the broker every member's message is there, in order; a bridge publishes it at most
  // once, so at most once per bridge.
  for (const who of ['alice', 'bob']) {
    const seen = sensor.texts('loop/ring').filter((m) => m.startsWith(`${who}:`));
    assert.deepEqual([...new Set(seen)], series(who), `${who}'s, in order`);
    for (const text of series(who)) assert.ok(count(seen, text) <= 2, `${text} published by each bridge at most once`);
  }
});

test('--mqtt and --mqtt-prefix are validated at start-up, the password never shown', T, async () => {
  const cases: Array<[string[], RegExp]> = [
    [['--mqtt', 'http://bob:hunter2@127.0.0.1:1883'], /^error: --mqtt: "http:\/\/bob:\*\*\*@127\.0\.0\.1:1883" must use mqtt, mqtts, ws or wss/],
    [['--mqtt', 'not a url'], /^error: --mqtt: "not a url" is not a URL/],
    [['--mqtt', 'mqtt://127.0.0.1?protocolVersion=3'], /^error: --mqtt: protocolVersion must be 4/],
    [['--mqtt', 'mqtt://127.0.0.1?qos=2'], /^error: --mqtt: unknown URL parameter "qos"/],
    [['--mqtt', 'mqtt://127.0.0.1', '--mqtt-prefix', 'mles'], /^error: --mqtt-prefix: "mles" must end with \//],
    [['--mqtt', 'mqtt://127.0.0.1', '--mqtt-prefix', 'a/+/'], /^error: --mqtt-prefix: .*must not contain \+, # or NUL/],
    [['--mqtt', 'mqtt://127.0.0.1?protocolVersion=4', '--redis', 'redis://127.0.0.1:1'], /^error: --mqtt: cluster mode \(--redis, --redis-cluster\) needs MQTT 5/],
    [['--mqtt', 'mqtt://127.0.0.1?clientId=x', '--redis', 'redis://127.0.0.1:1', '--workers', '2'], /^error: --mqtt: \?clientId= would be the same for every worker/],
  ];
  const results = await Promise.all(cases.map(([args]) => runCli(['--history', 'memory', '--port', '0', ...args])));
  results.forEach((result, i) => {
    assert.equal(result.code, 1, cases[i]![0].join(' '));
    assert.match(result.stderr, cases[i]![1]);
    assert.equal(result.stdout, '', 'never listening');
    assert.ok(!result.stderr.includes('hunter2'), 'no password');
  });

  // The config file takes the same keys; --print-config only mentions a password-bearing URL, masked.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mles-mqtt-config-'));
  try {
    const file = path.join(dir, 'mles.toml');
    fs.writeFileSync(file, 'history = "memory"\nmqtt = "mqtts://bob:hunter2@broker.example:8883"\nmqtt-prefix = "iot/"\n');
    const printed = await runCli(['--config', file, '--print-config']);
    assert.equal(printed.code, 0, printed.stderr);
    assert.ok(!printed.stdout.includes('hunter2'), printed.stdout);
    assert.match(printed.stdout, /^# mqtt = "mqtts:\/\/bob:\*\*\*@broker\.example:8883" /m);
    assert.match(printed.stdout, /^mqtt-prefix = "iot\/"$/m);
    fs.writeFileSync(file, 'mqtt = "ftp://x"\n');
    const bad = await runCli(['--config', file, '--history', 'memory']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^error: .*mles\.toml:1: mqtt: "ftp:\/\/x" must use mqtt/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// A bounded, seeded fuzz run (issue 11, "Fuzzing and soak"): thousands of mutated HTTP requests
// to every listener (local, TLS, redirect, admin), mutated first frames, and mutated WebSocket
// frames after a valid join, against real server processes. Any reply is fine and a socket may be
// closed; what must hold is that no input crashes or freezes a server or makes it log an error,
// that the server lets go of every connection once its client is gone (its socket descriptors
// come back), that bystanders joined to the fuzzed channels keep their sessions, and that
// afterwards each server serves `/`, upgrades, joins, relays, and exits 0 on SIGTERM.
//
// The seed is printed first; FUZZ_SEED=<n> replays the same inputs:
//   FUZZ_SEED=123 node --import tsx --test test/fuzz.test.ts
// FUZZ_SCALE (default 1) multiplies the number of inputs of every phase; FUZZ_ARGS adds flags to
// both servers (e.g. FUZZ_ARGS='--message-rate 20 --max-connections-per-ip 40').
// When a server dies, the inputs that were in flight are replayed one by one on a fresh server
// to name the one that kills it; the run then goes on with that fresh server.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import https from 'node:https';
import { execFileSync } from 'node:child_process';
import { startServer, type RunningServer } from './helpers/server.js';
import { request } from './helpers/http.js';
import { TestClient } from './helpers/client.js';
import { selfSignedCertificate, type TestCertificate } from './helpers/certs.js';
import { hasProgram, requirePrograms } from './helpers/programs.js';
import {
  afterJoinInput, describeInput, exchange, firstFrameInput, httpInput, runPool, upgradeRequest, Rng,
  type Endpoint, type Exchange, type FuzzInput, type ListenerKind,
} from './helpers/fuzz.js';

const SEED = process.env.FUZZ_SEED !== undefined && /^\d+$/.test(process.env.FUZZ_SEED)
  ? Number(process.env.FUZZ_SEED) >>> 0
  : Math.floor(Math.random() * 2 ** 32);
const SCALE = Math.max(0.01, Number(process.env.FUZZ_SCALE ?? 1) || 1);
const HTTP_PER_LISTENER = Math.ceil(2000 * SCALE);
const FIRST_FRAMES = Math.ceil(2000 * SCALE);
const AFTER_JOIN = Math.ceil(2000 * SCALE);
/** The same WebSocket phases, smaller, over TLS. */
const TLS_WS = Math.ceil(500 * SCALE);
const CONCURRENCY = 16;
/** Per input: how long to wait for the server to close after we half-closed, or to hold a socket open. */
const ENDED_TIMEOUT_MS = 2000;
const HELD_TIMEOUT_MS = 300;
const PROBE_TIMEOUT_MS = 5000;
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;
/** How long a server may take to close its side of connections its clients have closed (after a phase; at the end). */
const PHASE_LINGER_MS = 3000;
const LINGER_MS = 5000;
const FUZZ_CHANNELS = 8;
const REPRO = `FUZZ_SEED=${SEED} node --import tsx --test test/fuzz.test.ts`;

/** Every assertion message carries the seed and how to replay it. */
function withSeed(message: string): string {
  return `${message}\n  seed ${SEED} (replay: ${REPRO})`;
}

console.log(`fuzz seed ${SEED} (replay: ${REPRO})`);

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms))),
  ]);
}

function logUrl(server: RunningServer, message: string): number {
  const line = server.stderr().split('\n').find((l) => l.includes(message));
  assert.ok(line, withSeed(`log line "${message}"`));
  return Number(new URL((JSON.parse(line) as { url: string }).url).port);
}

/** Error and fatal log lines, and anything on stderr that is not a JSON log line (a stack trace). */
function badLogLines(stderr: string): string[] {
  return stderr.split('\n').filter((line) => {
    // The start-up line naming the history store is the one plain line a healthy server prints.
    if (line.trim() === '' || /^history: /.test(line)) return false;
    try {
      return ((JSON.parse(line) as { level?: number }).level ?? 0) >= 50;
    } catch {
      return true;
    }
  });
}

interface Live {
  server: RunningServer;
  ports: Partial<Record<ListenerKind, number>>;
}

/** A server process of the run, restarted (and the crash kept) if an input kills it. */
class Managed {
  live!: Live;
  readonly inFlight = new Set<FuzzInput>();
  /**
   * The inputs started last: a killer's socket may close (the process is gone) before the exit
   * event arrives, so it is no longer in flight by then.
   */
  readonly recent: FuzzInput[] = [];
  /** Set when the current process exits unasked: what was in flight or just sent. */
  crashed: { code: number | string; inFlight: FuzzInput[]; stderr: string } | undefined;
  /** stderr of every process this server had, for the log scan at the end. */
  readonly logs: Array<() => string> = [];
  private stopping = false;
  /** Socket descriptors of the fresh process (listeners and stdio): what it must come back to. */
  baselineSockets = 0;
  /** Socket descriptors phases of this process left open (already reported). */
  leakedSockets = 0;

  constructor(readonly name: string, private readonly launch: () => Promise<Live>) {}

  async start(): Promise<void> {
    this.crashed = undefined;
    const live = await withTimeout(this.launch(), START_TIMEOUT_MS, `starting the ${this.name} server`);
    this.live = live;
    this.baselineSockets = this.socketFds();
    this.leakedSockets = 0;
    this.logs.push(() => live.server.stderr());
    live.server.proc.once('exit', (code, signal) => {
      if (this.stopping || this.live !== live) return;
      this.crashed = { code: code ?? signal ?? 'unknown', inFlight: this.suspects(), stderr: live.server.stderr() };
    });
  }

  started(input: FuzzInput): void {
    this.recent.push(input);
    if (this.recent.length > 3 * CONCURRENCY) this.recent.shift();
  }

  suspects(): FuzzInput[] {
    return [...new Set([...this.inFlight, ...this.recent])];
  }

  /** Socket descriptors the process holds (TCP connections in any state, listeners, its stdio pipes). */
  socketFds(): number {
    const pid = this.live.server.proc.pid!;
    return fs.readdirSync(`/proc/${pid}/fd`).filter((fd) => {
      try {
        return fs.readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:');
      } catch {
        return false; // closed meanwhile
      }
    }).length;
  }

  /** The process's TCP sockets other than its listening ones, from ss: "STATE local peer" each. */
  connections(): string[] {
    const pid = `pid=${this.live.server.proc.pid},`;
    return execFileSync('ss', ['-tanpH'], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 })
      .split('\n')
      .filter((line) => line.includes(pid) && !line.startsWith('LISTEN'))
      .map((line) => line.split(/\s+/).filter((_, i) => i === 0 || i === 3 || i === 4).join(' '));
  }

  /** The connections as a summary by state and local port, for a report. */
  sockets(): string {
    try {
      const states = new Map<string, number>();
      const lines = this.connections();
      for (const line of lines) {
        const [state, local] = line.split(' ');
        count(states, `${state} on :${local!.split(':').pop()}`);
      }
      return `${lines.length} TCP connections {${summary(states, 20)}}`;
    } catch (error) {
      return `? connections (${(error as Error).message})`;
    }
  }

  dead(): boolean {
    const proc = this.live.server.proc;
    return proc.exitCode !== null || proc.signalCode !== null;
  }

  endpoint(kind: ListenerKind): Endpoint {
    const port = this.live.ports[kind];
    assert.ok(port, withSeed(`${this.name} has no ${kind} listener`));
    return { port, tls: kind === 'tls' };
  }

  /** Answers within PROBE_TIMEOUT_MS on a plain listener, or this server is frozen or dead. */
  async probe(): Promise<'ok' | 'dead' | 'frozen'> {
    if (this.dead()) return 'dead';
    const port = this.live.ports.admin ?? this.live.ports.local!;
    try {
      await withTimeout(request(port, this.live.ports.admin ? '/healthz' : '/'), PROBE_TIMEOUT_MS, 'probe');
      return 'ok';
    } catch {
      // Refused or reset: it is going down; give the exit event a moment to arrive.
      if (!this.dead()) await withTimeout(new Promise((resolve) => this.live.server.proc.once('exit', resolve)), PROBE_TIMEOUT_MS, 'exit').catch(() => {});
      return this.dead() ? 'dead' : 'frozen';
    }
  }

  /** Stops the process; resolves with its exit status, or 'hung' if it outlived STOP_TIMEOUT_MS (then it is killed). */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | string> {
    this.stopping = true;
    if (this.dead()) return 'not running';
    const server = this.live.server;
    try {
      return await withTimeout(server.stop(signal), STOP_TIMEOUT_MS, `${this.name} server stop`);
    } catch {
      const held = this.sockets();
      await server.stop('SIGKILL');
      const tail = server.stderr().trim().split('\n').slice(-3).join('\n      ');
      return `no exit within ${STOP_TIMEOUT_MS} ms (killed; it still held ${held}; its last log lines:\n      ${tail})`;
    }
  }

  /** A fresh process in place of a frozen one. */
  async restart(): Promise<void> {
    await this.stop('SIGKILL');
    this.stopping = false;
    await this.start();
  }
}

interface Phase {
  name: string;
  managed: Managed;
  listener: ListenerKind;
  inputs: FuzzInput[];
  /** WebSocket phases: the upgrade request sent (and answered 101) before the input. */
  upgrade?: (input: FuzzInput) => Buffer;
}

const findings: string[] = [];

/** A line in the test's report, and at once on stdout (the runner shows diagnostics only at the end). */
function note(t: TestContext, line: string): void {
  t.diagnostic(line);
  console.log(line);
}

function report(t: TestContext, finding: string): void {
  findings.push(finding);
  note(t, `FINDING: ${finding}`);
}

function count(map: Map<string, number>, key: string): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}

function summary(map: Map<string, number>, top = 12): string {
  return [...map.entries()].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, v]) => `${k}: ${v}`).join(', ');
}

function send(phase: Phase, input: FuzzInput): Promise<Exchange> {
  const endpoint = phase.managed.endpoint(phase.listener);
  // A reader that stopped reading sees no close either: it only holds the socket for a while.
  const timeout = input.end && !input.stopReading ? ENDED_TIMEOUT_MS : HELD_TIMEOUT_MS;
  return exchange(endpoint, input, timeout, phase.upgrade?.(input));
}

/** Replays the inputs in flight at a crash one at a time on fresh processes; returns the killers. */
async function triage(t: TestContext, phase: Phase, candidates: FuzzInput[]): Promise<Array<{ input: FuzzInput; log: string }>> {
  const killers: Array<{ input: FuzzInput; log: string }> = [];
  for (const input of [...candidates].sort((a, b) => a.index - b.index)) {
    if (phase.managed.dead()) await phase.managed.start();
    await send(phase, input);
    if ((await phase.managed.probe()) === 'dead') {
      killers.push({ input, log: crashLog(phase.managed.live.server.stderr()) });
      note(t, `${phase.name}: reproduced alone: ${describeInput(input)}`);
      if (killers.length >= 3) break;
    }
  }
  if (phase.managed.dead()) await phase.managed.start();
  return killers;
}

async function runPhase(t: TestContext, phase: Phase): Promise<void> {
  const started = performance.now();
  const outcomes = new Map<string, number>();
  const answers = new Map<string, number>();
  const stuck: FuzzInput[] = [];
  const silent: FuzzInput[] = [];
  const { managed } = phase;
  managed.recent.length = 0;
  const live = managed.live;
  const socketsBefore = managed.socketFds();
  const watchdog = watch(t, phase);
  const done = await runPool(phase.inputs, CONCURRENCY, async (input) => {
    managed.started(input);
    const result = await send(phase, input);
    count(outcomes, result.outcome);
    if (phase.upgrade) {
      if (result.closeCode !== undefined) count(answers, `${result.closeCode}${result.closeReason ? ` ${result.closeReason.slice(0, 40)}` : ''}`);
      else if (result.outcome === 'reply' || result.outcome === 'closed') count(answers, 'no close frame');
    } else if (result.firstLine !== undefined) {
      count(answers, /^HTTP\/1\.[01] \d{3}/.test(result.firstLine) ? result.firstLine.slice(9, 12) : 'non-HTTP reply');
    }
    if (result.outcome === 'timeout' && input.end && !input.stopReading) stuck.push(input);
    // Held open by us, closed by the server: it must have said why in a close frame.
    if (phase.upgrade && !input.end && !input.stopReading && (result.outcome === 'reply' || result.outcome === 'closed') && result.closeCode === undefined) silent.push(input);
  }, () => managed.dead(), managed.inFlight);
  await watchdog.stop();

  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  note(t, `${phase.name}: ${done}/${phase.inputs.length} inputs in ${seconds} s; outcomes {${summary(outcomes)}}; answers {${summary(answers)}}`);
  if (stuck.length > 0) {
    note(t, `${phase.name}: ${stuck.length} half-closed inputs got no close within ${ENDED_TIMEOUT_MS} ms, e.g. ${stuck.slice(0, 3).map((i) => describeInput(i, 160)).join(' | ')}`);
  }

  if (silent.length > 0 && !managed.crashed) {
    note(t, `${phase.name}: ${silent.length} connections the server closed without a close frame, e.g. ${silent.slice(0, 3).map((i) => describeInput(i, 160)).join(' | ')}`);
  }

  const state = managed.crashed ? 'dead' : await managed.probe();
  if (state === 'ok' && managed.live === live) {
    // Every connection of the phase is over on our side: the server must have let go of it too.
    const extra = await socketsLeft(managed, socketsBefore, PHASE_LINGER_MS);
    if (extra > 0) {
      managed.leakedSockets += extra;
      report(t, `${phase.name}: the ${managed.name} server kept ${extra} socket descriptor${extra === 1 ? "" : "s"} of the phase's connections ${PHASE_LINGER_MS} ms after the last one ended (a leak: fds run out, and shutdown waits for them)`);
    }
  }
  if (state === 'ok') return;
  if (state === 'frozen') {
    report(t, `${phase.name}: ${managed.name} server did not answer a probe within ${PROBE_TIMEOUT_MS} ms after the phase (frozen)`);
    await managed.restart();
    return;
  }
  const crash = managed.crashed ?? { code: 'unknown', inFlight: managed.suspects(), stderr: managed.live.server.stderr() };
  note(t, `${phase.name}: ${managed.name} server exited (${crash.code}) after ${done} inputs; triage of the ${crash.inFlight.length} last sent...`);
  const killers = await triage(t, phase, crash.inFlight);
  report(t, `${phase.name}: the ${managed.name} server process exited (${crash.code}) after ${done} of ${phase.inputs.length} inputs.\n` +
    (killers.length > 0
      ? killers.map((k) => `    killed by this input alone: ${describeInput(k.input)}\n      ${k.log}`).join('\n')
      : `    no single input reproduced it; last sent: ${crash.inFlight.map((k) => describeInput(k, 200)).join('\n      ')}\n      ${crashLog(crash.stderr)}`));
}

/** Waits up to `ms` for the server's socket descriptors to be at most `target`; how many more it holds then. */
async function socketsLeft(managed: Managed, target: number, ms: number): Promise<number> {
  const started = performance.now();
  while (managed.socketFds() > target && performance.now() - started < ms) await new Promise((resolve) => setTimeout(resolve, 100));
  return Math.max(0, managed.socketFds() - target);
}

/** What a dead server said last: its error lines without the stack frames. */
function crashLog(stderr: string): string {
  return badLogLines(stderr).filter((line) => !/^\s+at /.test(line)).slice(0, 10).join('\n      ');
}

/**
 * Probes the phase's server every 500 ms while the phase runs: a probe unanswered for
 * PROBE_TIMEOUT_MS while the process lives is a freeze (one input held the event loop).
 */
function watch(t: TestContext, phase: Phase): { stop(): Promise<void> } {
  let running = true;
  let slowest = 0;
  const loop = (async () => {
    while (running) {
      const before = performance.now();
      const state = await phase.managed.probe();
      if (state === 'dead') return;
      slowest = Math.max(slowest, performance.now() - before);
      if (state === 'frozen') {
        report(t, `${phase.name}: the ${phase.managed.name} server left a probe unanswered for ${PROBE_TIMEOUT_MS} ms (frozen); last sent: ${phase.managed.suspects().map((k) => describeInput(k, 160)).join('\n      ')}`);
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      note(t, `${phase.name}: slowest probe during the phase ${slowest.toFixed(0)} ms`);
    },
  };
}

function scratch(t: TestContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mles-fuzz-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function httpsGet(port: number, cert: TestCertificate): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port, path: '/', servername: 'example.test', headers: { host: 'example.test' }, ca: cert.cert, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode!));
    });
    req.on('error', reject);
  });
}

/** Two fresh clients join one channel; a message from one reaches the other. */
async function roundTrip(url: string, cert: TestCertificate | undefined, channel: string): Promise<void> {
  const options = cert ? { ca: cert.cert } : {};
  const alice = new TestClient(url, 'mles-websocket', options);
  const bob = new TestClient(url, 'mles-websocket', options);
  try {
    await Promise.all([alice.opened(), bob.opened()]);
    assert.equal(alice.ws.protocol, 'mles-websocket');
    alice.send(JSON.stringify({ uid: 'after-alice', channel }));
    bob.send(JSON.stringify({ uid: 'after-bob', channel }));
    const text = `round trip ${SEED}`;
    alice.send(text);
    for (let n = 1; !bob.texts().includes(text); n++) await bob.waitFor(n);
  } finally {
    await Promise.all([alice.close(), bob.close()]);
  }
}

test('fuzz: mutated requests and frames crash, freeze or disconnect no one', { timeout: 120_000 }, async (t) => {
  if (!requirePrograms(t, 'openssl', ['openssl'])) return;
  const runStarted = performance.now();
  t.diagnostic(`seed ${SEED} (replay: ${REPRO}); ${HTTP_PER_LISTENER} HTTP inputs per listener, ${FIRST_FRAMES} first frames, ${AFTER_JOIN} frame sequences after a join, ${TLS_WS} of each over TLS`);

  const dir = scratch(t);
  const cert = selfSignedCertificate(dir, 'site', ['example.test', 'www.example.test'], ['127.0.0.1']);
  for (const domain of ['example.test', 'www.example.test']) {
    fs.mkdirSync(path.join(dir, 'www', domain), { recursive: true });
    fs.writeFileSync(path.join(dir, 'www', domain, 'index.html'), `<!doctype html><title>${domain}</title>\n`);
  }
  // A small history keeps every join's replay short (joins replay it thousands of times here).
  const common = ['--history', 'memory', '--limit', '50', ...(process.env.FUZZ_ARGS ?? '').split(/\s+/).filter(Boolean)];
  const local = new Managed('local', async () => {
    const server = await startServer([...common]);
    return { server, ports: { local: server.port } };
  });
  const secure = new Managed('tls', async () => {
    const server = await startServer([
      ...common, '--domains', 'example.test', '--domains', 'www.example.test', '--host', '127.0.0.1', '--wwwroot', path.join(dir, 'www'),
      '--tls-cert', cert.certFile, '--tls-key', cert.keyFile, '--redirect', '--http-port', '0', '--admin-port', '0',
    ]);
    await withTimeout(Promise.all([server.waitForLog('redirecting HTTP to HTTPS'), server.waitForLog('admin listening')]), 10_000, 'listener logs');
    return { server, ports: { tls: server.port, redirect: logUrl(server, 'redirecting HTTP to HTTPS'), admin: logUrl(server, 'admin listening') } };
  });
  await Promise.all([local.start(), secure.start()]);
  t.after(() => Promise.all([local.stop(), secure.stop()]));

  // Bystanders: one member per fuzzed channel that must keep its session through all of it.
  const watchers: TestClient[] = [];
  for (let k = 0; k < FUZZ_CHANNELS; k++) watchers.push(await TestClient.join(local.live.server.url, `watcher-${k}`, `fz${k}`));
  const watcherServer = local.live;

  const httpPhase = (managed: Managed, listener: ListenerKind): Phase => {
    const rng = new Rng(SEED, `http-${listener}`);
    return { name: `HTTP to ${listener}`, managed, listener, inputs: Array.from({ length: HTTP_PER_LISTENER }, (_, i) => httpInput(rng, listener, i)) };
  };
  const wsPhase = (name: string, managed: Managed, listener: ListenerKind, n: number, make: (rng: Rng, i: number) => FuzzInput): Phase => {
    const rng = new Rng(SEED, name);
    const upgrades = new Rng(SEED, `${name} upgrades`);
    return {
      name, managed, listener, inputs: Array.from({ length: n }, (_, i) => make(rng, i)),
      upgrade: () => upgradeRequest(upgrades, listener === 'tls' ? 'example.test' : '127.0.0.1'),
    };
  };

  const phases: Phase[] = [
    httpPhase(local, 'local'),
    httpPhase(secure, 'admin'),
    httpPhase(secure, 'tls'),
    httpPhase(secure, 'redirect'),
    wsPhase('first frames (local)', local, 'local', FIRST_FRAMES, firstFrameInput),
    wsPhase('frames after a join (local)', local, 'local', AFTER_JOIN, (rng, i) => afterJoinInput(rng, i, FUZZ_CHANNELS)),
    wsPhase('first frames (TLS)', secure, 'tls', TLS_WS, firstFrameInput),
    wsPhase('frames after a join (TLS)', secure, 'tls', TLS_WS, (rng, i) => afterJoinInput(rng, i, FUZZ_CHANNELS)),
  ];
  for (const phase of phases) await runPhase(t, phase);

  // Afterwards: both processes alive, serving, upgrading, joining and relaying.
  for (const managed of [local, secure]) {
    assert.ok(!managed.dead(), withSeed(`the ${managed.name} server is not running`));
    assert.equal(await managed.probe(), 'ok', withSeed(`the ${managed.name} server does not answer`));
  }
  assert.equal((await request(local.live.ports.local!, '/')).status, 200, withSeed('local GET /'));
  assert.equal(await httpsGet(secure.live.ports.tls!, cert), 200, withSeed('TLS GET /'));
  const redirect = await request(secure.live.ports.redirect!, '/x', { headers: { host: 'example.test' } });
  assert.equal(redirect.status, 301, withSeed('redirect GET /'));
  assert.equal(redirect.headers.location, `https://example.test:${secure.live.ports.tls}/x`, withSeed('redirect Location'));
  assert.equal((await request(secure.live.ports.admin!, '/healthz')).status, 200, withSeed('admin /healthz'));
  await withTimeout(roundTrip(local.live.server.url, undefined, `after-${SEED}`), 10_000, withSeed('local round trip'));
  await withTimeout(roundTrip(`wss://127.0.0.1:${secure.live.ports.tls}`, cert, `after-${SEED}`), 10_000, withSeed('TLS round trip'));

  // The bystanders kept their sessions and still get the channel's messages.
  if (local.live === watcherServer) {
    const closed = watchers.filter((w) => w.ws.readyState !== w.ws.OPEN);
    if (closed.length > 0) {
      const codes = await Promise.all(closed.map((w) => w.closed));
      report(t, `bystanders disconnected by fuzz traffic in their channels: ${codes.map((c) => `${c.code} ${c.reason}`).join('; ')}`);
    } else {
      const sender = await TestClient.join(local.live.server.url, 'last-word', 'fz0');
      sender.send(`last word ${SEED}`);
      const first = watchers[0]!;
      for (let n = first.received.length + 1; !first.texts().includes(`last word ${SEED}`); n++) await withTimeout(first.waitFor(n), 10_000, withSeed('bystander'));
      await sender.close();
    }
  }
  await Promise.all(watchers.map((w) => w.close()));

  // Every client is gone: each server must let go of every connection (nothing half-open kept):
  // its socket descriptors come back to what the fresh process had (plus what phases already
  // reported as kept).
  for (const managed of [local, secure]) {
    const extra = await socketsLeft(managed, managed.baselineSockets + managed.leakedSockets, LINGER_MS);
    if (extra > 0) {
      const tcp = hasProgram('ss') ? `; ss sees ${managed.sockets()} (one whose connection is over, state CLOSE, is not listed)` : '';
      report(t, `the ${managed.name} server holds ${extra} more socket descriptor${extra === 1 ? "" : "s"} than when it started, ${LINGER_MS} ms after every client left${tcp}`);
    }
  }

  // SIGTERM still closes everyone and exits 0 (README), fuzzed or not.
  for (const managed of [local, secure]) {
    const status = await managed.stop();
    if (status !== 0) report(t, `SIGTERM after the fuzz run: the ${managed.name} server ended with ${status}, expected exit 0 within ${STOP_TIMEOUT_MS} ms`);
  }
  // No input may make a server log an error (a refusal is logged at info at most).
  for (const managed of [local, secure]) {
    const bad = managed.logs.flatMap((stderr) => badLogLines(stderr()));
    if (bad.length > 0 && !findings.some((f) => f.includes(`${managed.name} server process exited`))) {
      report(t, `the ${managed.name} server logged ${bad.length} error-level or non-JSON lines, e.g.\n  ${bad.slice(0, 8).join('\n  ')}`);
    }
  }
  const seconds = (performance.now() - runStarted) / 1000;
  note(t, `fuzz run took ${seconds.toFixed(1)} s`);
  assert.deepEqual(findings, [], withSeed(`the fuzz run found ${findings.length} problem(s):\n${findings.join('\n')}`));
});

// The pieces of test/fuzz.test.ts: a seeded PRNG, corpora of valid HTTP requests and Mles
// frames with the mutations applied to them, and the raw exchanges (TCP or TLS) that send one
// input and take whatever comes back. Everything random comes from the seed, so a seed names
// the same inputs on every run (only their interleaving under concurrency differs).

import net from 'node:net';
import tls from 'node:tls';
import { authHash } from '../../src/protocol/join.js';

// mulberry32, the bench's seeded PRNG: good enough to pick mutations.
import { seededRandom as mulberry32 } from '../../bench/scenarios/shapes.js';

/** FNV-1a of `text`: derives a phase's seed from the run's, so phases do not shift each other. */
function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

export class Rng {
  private readonly next: () => number;
  constructor(seed: number, phase = '') {
    this.next = mulberry32((seed ^ fnv1a(phase)) >>> 0);
  }
  float(): number {
    return this.next();
  }
  /** 0 <= n < max */
  int(max: number): number {
    return Math.floor(this.next() * max);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  bytes(n: number): Buffer {
    const out = Buffer.alloc(n);
    for (let i = 0; i < n; i++) out[i] = this.int(256);
    return out;
  }
}

/** One thing to send: bytes, cut into writes, then the socket half-closed or held open. */
export interface FuzzInput {
  /** Position in its phase: with the seed, enough to regenerate it. */
  index: number;
  /** The mutations applied, for people. */
  label: string;
  /** For HTTP: the whole request. For WebSocket phases: the frames written after the upgrade. */
  bytes: Buffer;
  /** Offsets where the bytes are cut into separate writes. */
  cuts: number[];
  /** Half-close after writing (most inputs) or keep the socket open until the timeout. */
  end: boolean;
  /** WebSocket phases: the bytes are client frames (reports decode them). */
  frames?: boolean;
  /** WebSocket phases: stop reading once upgraded (a member that never reads its replay and messages). */
  stopReading?: boolean;
  /** TLS listener only: talk plain TCP to it instead of TLS. */
  plainToTls?: boolean;
  /** TLS only: the SNI name sent, if any. */
  servername?: string;
}

const OPCODES: Record<number, string> = { 0: 'cont', 1: 'text', 2: 'binary', 8: 'close', 9: 'ping', 10: 'pong' };

/** Client frames as people read them (unmasked): "text fin=0 rsv=2 unmasked len=5 "hello"", ... */
export function describeFrames(bytes: Buffer, max = 60): string {
  const out: string[] = [];
  let offset = 0;
  while (offset < bytes.length && out.length < 30) {
    if (offset + 2 > bytes.length) break;
    const b0 = bytes[offset]!;
    const b1 = bytes[offset + 1]!;
    let length = BigInt(b1 & 0x7f);
    let header = 2;
    if (length === 126n) {
      if (offset + 4 > bytes.length) break;
      length = BigInt(bytes.readUInt16BE(offset + 2));
      header = 4;
    } else if (length === 127n) {
      if (offset + 10 > bytes.length) break;
      length = bytes.readBigUInt64BE(offset + 2);
      header = 10;
    }
    const masked = (b1 & 0x80) !== 0;
    const start = offset + header + (masked ? 4 : 0);
    if (start > bytes.length) break;
    const available = Math.min(bytes.length - start, Number(length > BigInt(bytes.length) ? BigInt(bytes.length) : length));
    const payload = Buffer.from(bytes.subarray(start, start + available));
    if (masked) for (let i = 0; i < payload.length; i++) payload[i]! ^= bytes[offset + header + (i & 3)]!;
    const opcode = b0 & 0x0f;
    const shown = opcode === 8 && payload.length >= 2
      ? `code=${payload.readUInt16BE(0)} ${JSON.stringify(payload.subarray(2).toString('latin1').slice(0, max))}`
      : JSON.stringify(payload.toString('latin1').slice(0, max)) + (payload.length > max ? '...' : '');
    out.push(`${OPCODES[opcode] ?? `opcode=${opcode}`}${b0 & 0x80 ? '' : ' fin=0'}${b0 & 0x70 ? ` rsv=${(b0 >> 4) & 7}` : ''}${masked ? '' : ' unmasked'} len=${length}${BigInt(available) < length ? ` (${available} sent)` : ''} ${shown}`);
    offset = start + available;
  }
  if (offset < bytes.length) out.push(`+${bytes.length - offset} bytes ${JSON.stringify(bytes.subarray(offset, offset + 24).toString('latin1'))}`);
  return `[${out.join(' | ')}]`;
}

/** An input as a report line: index, mutations and the bytes (JSON-escaped, shortened when long; frames decoded). */
export function describeInput(input: FuzzInput, max = 400): string {
  const text = input.bytes.toString('latin1');
  const shown = input.frames
    ? `frames ${describeFrames(input.bytes, Math.max(20, Math.floor(max / 6)))}`
    : text.length > max ? `${JSON.stringify(text.slice(0, max))}... (${text.length} bytes)` : JSON.stringify(text);
  return `#${input.index} [${input.label}]${input.plainToTls ? ' plain TCP to TLS port' : ''}${input.end ? '' : ' held open'}${input.stopReading ? ' not reading' : ''} ${shown}`;
}

// ---------------------------------------------------------------------------------------------
// HTTP

interface HttpRequest {
  method: string;
  target: string;
  version: string;
  headers: string[];
  body: Buffer;
}

export type ListenerKind = 'local' | 'tls' | 'redirect' | 'admin';

const SPECIAL_TARGETS = [
  '/', '//', '///', '////x', 'http://x/', 'http://:99999/', 'http://[/', 'http://a%zz/', 'https://example.test/a?b',
  'http://example.test:99999/', 'http://[::1]:80/', 'http://user:pw@example.test/', 'ftp://x/', 'mailto:a@b', '*',
  'example.test:443', '/%', '/%zz', '/%00', '/%2e%2e/%2e%2e/etc/passwd', '/../../../../etc/passwd', '/..%2f..%2fetc/passwd',
  '/index.html', '/index.html?x=1', '/style.css', '/metrics', '/healthz', '/healthz?', '/metrics#frag', '/?' + 'a'.repeat(300),
  '/\u00e9', '/\u2603', '/\ud83d\ude00', '/a b', '/\t', '\\', '/\\..\\..\\', '?', '#', '/.', '/..', '/./index.html',
  '/index.html/', '/index.html%00.txt', '/%c0%ae%c0%ae/', '/' + 'x'.repeat(9000), 'http:', 'http:/', 'http:///', '//example.test/x',
  '/api/x', '/favicon.ico',
];
const METHODS = [
  'GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'TRACE', 'CONNECT', 'PATCH', 'PRI', 'PROPFIND', 'get', 'Get', 'G ET',
  'GET\t', '', 'X'.repeat(300), 'M-SEARCH', 'SOURCE', 'ACL', 'QUERY', '\u00c9T', 'GET\0',
];
const VERSIONS = ['HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'HTTP/0.9', 'HTTP/9.9', 'HTTP/1.1x', 'http/1.1', 'HTTP/1.', 'HTTP/', '', 'HTTP/1.1 extra'];
const EXTRA_HEADERS = [
  'Transfer-Encoding: chunked', 'Transfer-Encoding: gzip, chunked', 'Transfer-Encoding: chunked, identity', 'Transfer-Encoding: xchunked',
  'Content-Length: 0', 'Content-Length: 5', 'Content-Length: -1', 'Content-Length: 99999999999999999999', 'Content-Length: 1, 2',
  'Content-Length: abc', 'Host: example.test', 'Host:', 'Host: [::1]:99999', 'Host: example.test:99999', 'Host: \u00e9.test',
  'Host: example.test.', 'Host: EXAMPLE.TEST', 'Host: a@b', 'Host: %zz', 'Host: [', 'Host: example.test:abc', 'Host: ::',
  'Connection: close', 'Connection: keep-alive', 'Connection: upgrade', 'Connection: Upgrade, close', 'Upgrade: websocket',
  'Upgrade: h2c', 'Upgrade: WebSocket', 'Sec-WebSocket-Version: 8', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Version: abc',
  'Sec-WebSocket-Key: x', 'Sec-WebSocket-Key: ', 'Sec-WebSocket-Protocol: mles-websocket', 'Sec-WebSocket-Protocol: chat, mles-websocket',
  'Sec-WebSocket-Protocol: ,,,', 'Sec-WebSocket-Protocol: mles-websocket, mles-websocket', 'Sec-WebSocket-Extensions: permessage-deflate',
  'Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=0', 'Accept-Encoding: br, gzip, zstd', 'Accept-Encoding: *;q=0',
  'Accept-Encoding: ' + 'x,'.repeat(500), 'Range: bytes=0-10', 'Range: bytes=-1', 'Range: bytes=99999999-', 'Range: bytes=5-1',
  'Range: bytes=0-1,2-3,4-5', 'Range: bytes=' + '0-0,'.repeat(200) + '0-0', 'Range: lines=1-2', 'If-None-Match: *',
  'If-None-Match: "x", W/"y"', 'If-Modified-Since: yesterday', 'If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT', 'If-Range: "x"',
  'Expect: 100-continue', 'Expect: something', 'X-Forwarded-For: 1.2.3.4', 'Forwarded: for=evil', 'Cookie: a=b',
  'Authorization: Basic x', 'User-Agent: fuzz', 'Accept: */*', 'Origin: null', 'Content-Type: application/json',
  'Bad Header: x', 'NoColon', ':empty-name', 'X-Null: a\0b', 'X-Cr: a\rb', 'X-Utf8: \u00e9\u2603', ' Folded: x', '\tfolded',
  'X: ' + 'y'.repeat(100),
];

function upgradeHeaders(rng: Rng, protocol: boolean): string[] {
  return [
    'Upgrade: websocket', 'Connection: Upgrade', `Sec-WebSocket-Key: ${rng.bytes(16).toString('base64')}`, 'Sec-WebSocket-Version: 13',
    ...(protocol ? ['Sec-WebSocket-Protocol: mles-websocket'] : []),
  ];
}

/** Valid requests for a listener, the corpus every mutation starts from. */
function corpus(rng: Rng, kind: ListenerKind): HttpRequest {
  const host = kind === 'tls' || kind === 'redirect' ? rng.pick(['example.test', 'example.test:443', 'www.example.test']) : rng.pick(['127.0.0.1', 'localhost']);
  const req = (method: string, target: string, headers: string[] = [], body = ''): HttpRequest => ({
    method, target, version: 'HTTP/1.1', headers: [`Host: ${host}`, ...headers], body: Buffer.from(body, 'latin1'),
  });
  const choices: Array<() => HttpRequest> = [
    () => req('GET', '/'),
    () => req('HEAD', '/'),
    () => req('GET', kind === 'admin' ? '/metrics' : '/index.html', ['Accept-Encoding: br, gzip']),
    () => req('GET', kind === 'admin' ? '/healthz' : '/style.css', ['Range: bytes=0-10']),
    () => req('GET', '/', ['If-None-Match: "abc"']),
    () => req('GET', rng.pick(['/', '/chat', '/x?y=z']), upgradeHeaders(rng, true)),
    () => req('GET', '/', upgradeHeaders(rng, false)),
    () => req('GET', rng.pick(SPECIAL_TARGETS)),
    () => req(rng.pick(['GET', 'HEAD']), rng.pick(['//', 'http://x/', 'http://:99999/', 'http://[/', 'http://a%zz/', '///'])),
    () => req('GET', rng.pick(['//', 'http://x/', 'http://:99999/']), upgradeHeaders(rng, true)),
    () => req('POST', '/', ['Content-Length: 5', 'Content-Type: text/plain'], 'hello'),
    () => req('POST', '/', ['Transfer-Encoding: chunked'], '5\r\nhello\r\n0\r\n\r\n'),
    () => req('OPTIONS', '*'),
    () => req('CONNECT', 'example.test:443'),
    () => ({ ...req('GET', '/'), version: 'HTTP/1.0', headers: [] }),
    () => req('GET', '/', ['Connection: keep-alive']),
  ];
  return rng.pick(choices)();
}

function serialize(r: HttpRequest): Buffer {
  const head = `${r.method} ${r.target} ${r.version}\r\n${r.headers.map((h) => h + '\r\n').join('')}\r\n`;
  return Buffer.concat([Buffer.from(head, 'utf8'), r.body]);
}

const BAD_CHUNKED = [
  'zz\r\nhello\r\n0\r\n\r\n', 'ffffffffffffffff\r\n', '5\r\nhel', '5\r\nhelloXX\r\n0\r\n\r\n', '5;ext=' + 'e'.repeat(5000) + '\r\nhello\r\n0\r\n\r\n',
  '-1\r\n\r\n', '0\r\nTrailer: x\r\n\r\n', '0\r\n', '5\nhello\n0\n\n', '\r\n\r\n', '1\r\na\r\n'.repeat(2000) + '0\r\n\r\n', '0x5\r\nhello\r\n0\r\n\r\n',
  ' 5\r\nhello\r\n0\r\n\r\n', '5 \r\nhello\r\n0\r\n\r\n',
];

/** Mutations on the structure of a request. */
const STRUCTURAL: Array<[string, (r: HttpRequest, rng: Rng) => void]> = [
  ['method', (r, rng) => (r.method = rng.pick(METHODS))],
  ['target', (r, rng) => (r.target = rng.pick(SPECIAL_TARGETS))],
  ['target-junk', (r, rng) => (r.target = '/' + rng.bytes(1 + rng.int(40)).toString('latin1').replace(/[\r\n ]/g, '_'))],
  ['target-huge', (r, rng) => (r.target = '/' + 'a'.repeat(rng.pick([8_000, 70_000, 200_000])))],
  ['version', (r, rng) => (r.version = rng.pick(VERSIONS))],
  ['header', (r, rng) => r.headers.splice(rng.int(r.headers.length + 1), 0, rng.pick(EXTRA_HEADERS))],
  ['headers-3', (r, rng) => { for (let i = 0; i < 3; i++) r.headers.push(rng.pick(EXTRA_HEADERS)); }],
  ['header-huge', (r, rng) => r.headers.push(`X-Big: ${'b'.repeat(rng.pick([16_000, 64_000, 300_000]))}`)],
  ['headers-many', (r, rng) => { for (let i = 0, n = rng.pick([150, 2_100]); i < n; i++) r.headers.push(`X-H${i}: ${i}`); }],
  ['drop-host', (r) => (r.headers = r.headers.filter((h) => !/^host:/i.test(h)))],
  ['dup-host', (r) => r.headers.push('Host: evil.test')],
  ['drop-header', (r, rng) => r.headers.splice(rng.int(r.headers.length), 1)],
  ['upgrade', (r, rng) => r.headers.push(...upgradeHeaders(rng, rng.chance(0.8)))],
  ['injection', (r, rng) => r.headers.push(rng.pick(['X: a\r\nInjected: b', 'X: a\nHost: evil.test', 'X: a\r\n\r\nGET / HTTP/1.1', 'X: a\rHost: b']))],
  ['target-injection', (r, rng) => (r.target += rng.pick([' HTTP/1.1\r\nHost: evil.test\r\n', '\r\n\r\n', '\n', ' x', '\0']))],
  ['chunked-bad', (r, rng) => {
    r.headers.push('Transfer-Encoding: chunked');
    r.body = Buffer.from(rng.pick(BAD_CHUNKED), 'latin1');
  }],
  ['cl-mismatch', (r, rng) => {
    r.headers.push(`Content-Length: ${rng.pick([0, 3, 100, 10_000])}`);
    r.body = Buffer.from('body-bytes', 'latin1');
  }],
  ['cl-and-te', (r) => {
    r.headers.push('Content-Length: 4', 'Transfer-Encoding: chunked');
    r.body = Buffer.from('0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n', 'latin1');
  }],
  ['body-junk', (r, rng) => (r.body = rng.bytes(rng.int(2_000)))],
];

/** Mutations on the bytes. */
const BYTEWISE: Array<[string, (b: Buffer, rng: Rng) => Buffer]> = [
  ['truncate', (b, rng) => b.subarray(0, rng.int(b.length))],
  ['lf-only', (b) => Buffer.from(b.toString('latin1').replace(/\r\n/g, '\n'), 'latin1')],
  ['cr-only', (b) => Buffer.from(b.toString('latin1').replace(/\r\n/g, '\r'), 'latin1')],
  ['crcrlf', (b) => Buffer.from(b.toString('latin1').replace(/\r\n/g, '\r\r\n'), 'latin1')],
  ['leading-crlf', (b, rng) => Buffer.concat([Buffer.from('\r\n'.repeat(1 + rng.int(5))), b])],
  ['no-final-crlf', (b) => Buffer.from(b.toString('latin1').replace(/\r\n\r\n/, '\r\n'), 'latin1')],
  ['flip', (b, rng) => {
    const out = Buffer.from(b);
    for (let i = 0, n = 1 + rng.int(4); i < n && out.length > 0; i++) out[rng.int(out.length)] ^= 1 << rng.int(8);
    return out;
  }],
  ['insert', (b, rng) => {
    const at = rng.int(b.length + 1);
    return Buffer.concat([b.subarray(0, at), rng.bytes(1 + rng.int(8)), b.subarray(at)]);
  }],
  ['delete', (b, rng) => {
    const at = rng.int(b.length);
    return Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + rng.int(8))]);
  }],
  ['junk-tail', (b, rng) => Buffer.concat([b, rng.bytes(1 + rng.int(300))])],
  ['pipeline', (b, rng) => Buffer.concat([b, b, rng.chance(0.5) ? b.subarray(0, rng.int(b.length)) : Buffer.alloc(0)])],
  ['ws-frame-tail', (b, rng) => Buffer.concat([b, frame({ opcode: 1, payload: Buffer.from('{"uid":"u","channel":"c"}') }, rng)])],
  ['binary', (_b, rng) => rng.bytes(1 + rng.int(600))],
  ['h2-preface', () => Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00', 'latin1')],
  ['tls-hello-on-plain', (_b, rng) => Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03]), rng.bytes(160)])],
];

function cutsFor(rng: Rng, length: number): number[] {
  if (length < 2 || rng.chance(0.6)) return [];
  if (rng.chance(0.1) && length < 300) return Array.from({ length: length - 1 }, (_, i) => i + 1); // byte by byte
  const cuts = new Set<number>();
  for (let i = 0, n = 1 + rng.int(3); i < n; i++) cuts.add(1 + rng.int(length - 1));
  return [...cuts].sort((a, b) => a - b);
}

/** The `index`th mutated request for a listener. */
export function httpInput(rng: Rng, kind: ListenerKind, index: number): FuzzInput {
  const request = corpus(rng, kind);
  const labels: string[] = [];
  const structural = rng.int(4); // 0..3 structural mutations
  for (let i = 0; i < structural; i++) {
    const [name, mutate] = rng.pick(STRUCTURAL);
    mutate(request, rng);
    labels.push(name);
  }
  let bytes = serialize(request);
  const bytewise = rng.chance(0.45) ? 1 + rng.int(2) : 0;
  for (let i = 0; i < bytewise; i++) {
    const [name, mutate] = rng.pick(BYTEWISE);
    bytes = mutate(bytes, rng);
    labels.push(name);
  }
  const input: FuzzInput = { index, label: labels.join(',') || 'valid', bytes, cuts: cutsFor(rng, bytes.length), end: rng.chance(0.92) };
  if (kind === 'tls') {
    if (rng.chance(0.05)) input.plainToTls = true;
    const sni = rng.pick([undefined, 'example.test', 'www.example.test', 'other.test', 'EXAMPLE.TEST', 'x'.repeat(250)]);
    if (sni !== undefined) input.servername = sni;
  }
  return input;
}

// ---------------------------------------------------------------------------------------------
// WebSocket frames (RFC 6455 section 5.2), every bit of them open to mutation

export interface FrameSpec {
  opcode: number;
  payload?: Buffer;
  fin?: boolean;
  /** RSV1..3 as bits 0b100, 0b010, 0b001. */
  rsv?: number;
  masked?: boolean;
  /** Force the 16-bit or 64-bit length form, or claim a length other than the payload's. */
  lengthForm?: 7 | 16 | 64;
  claimedLength?: bigint;
}

export function frame(spec: FrameSpec, rng: Rng): Buffer {
  const payload = spec.payload ?? Buffer.alloc(0);
  const length = spec.claimedLength ?? BigInt(payload.length);
  const form = spec.lengthForm ?? (length < 126n ? 7 : length < 65_536n ? 16 : 64);
  const masked = spec.masked ?? true;
  const head = Buffer.alloc(2 + (form === 16 ? 2 : form === 64 ? 8 : 0));
  head[0] = (spec.fin ?? true ? 0x80 : 0) | ((spec.rsv ?? 0) << 4) | (spec.opcode & 0x0f);
  const maskBit = masked ? 0x80 : 0;
  if (form === 7) head[1] = maskBit | Number(length & 0x7fn);
  else if (form === 16) {
    head[1] = maskBit | 126;
    head.writeUInt16BE(Number(length & 0xffffn), 2);
  } else {
    head[1] = maskBit | 127;
    head.writeBigUInt64BE(length & 0xffffffffffffffffn, 2);
  }
  if (!masked) return Buffer.concat([head, payload]);
  const mask = rng.bytes(4);
  const body = Buffer.alloc(payload.length);
  for (let i = 0; i < payload.length; i++) body[i] = payload[i]! ^ mask[i & 3]!;
  return Buffer.concat([head, mask, body]);
}

const text = (s: string): Buffer => Buffer.from(s, 'utf8');

function closePayload(code: number, reason: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.alloc(2 + reason.length);
  out.writeUInt16BE(code, 0);
  reason.copy(out, 2);
  return out;
}

const INVALID_UTF8 = [
  Buffer.from([0xff]), Buffer.from([0xc0, 0x80]), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from([0xe2, 0x82]),
  Buffer.from([0xf4, 0x90, 0x80, 0x80]), Buffer.from([0x80]), Buffer.from([0xf8, 0x88, 0x80, 0x80, 0x80]),
];

/** The `{"uid":..., "channel":...}` texts a first frame starts from, with odd values mixed in. */
function joinText(rng: Rng, index: number): { text: string; label: string } {
  const odd: Array<[string, unknown]> = [
    ['number', 42], ['null', null], ['true', true], ['array', ['a']], ['object', { a: 1 }], ['empty', ''], ['non-ascii', '\u00e9'],
    ['nul', '\u0000'], ['huge-60k', 'u'.repeat(60_000)], ['huge-70k', 'u'.repeat(70_000)], ['emoji', '\ud83d\ude00'],
    ['lone-surrogate', '\ud800'], ['control', '\u0001\u001f'], ['space', ' '], ['long-1k', 'x'.repeat(1000)], ['proto', '__proto__'],
    ['toString', 'toString'], ['html', '<script>'],
  ];
  const uid = rng.pick(['alice', 'bob', `fz-${index}`, `fz-${index}`]);
  const channel = rng.pick(['fz0', 'fz1', 'fz2', `c-${index % 50}`]);
  const fields: Record<string, unknown> = { uid, channel };
  const labels: string[] = [];
  const changes = rng.int(3);
  for (let i = 0; i < changes; i++) {
    const which = rng.pick(['uid', 'channel', 'auth', 'peer', 'extra', 'drop']);
    if (which === 'drop') {
      delete fields[rng.pick(['uid', 'channel'])];
      labels.push('drop');
    } else if (which === 'auth') {
      const valid = typeof fields.uid === 'string' && typeof fields.channel === 'string' ? authHash(fields.uid, fields.channel) : '0';
      const [name, value] = rng.pick<[string, unknown]>([
        ['auth-valid', valid], ['auth-upper', valid.toUpperCase()], ['auth-zeros', '0000' + valid], ['auth-bad', 'zz'], ['auth-17', '1'.repeat(17)],
        ['auth-empty', ''], ['auth-number', 123], ['auth-wrong', '0123456789abcdef'], ['auth-huge', 'f'.repeat(50_000)],
      ]);
      fields.auth = value;
      labels.push(name);
    } else if (which === 'peer') {
      fields.peer = rng.pick([true, 'true', 1, null]);
      labels.push('peer');
    } else if (which === 'extra') {
      fields[rng.pick(['x', '__proto__', 'constructor', 'uid '])] = rng.pick([1, 'x', {}, []]);
      labels.push('extra');
    } else {
      const [name, value] = rng.pick(odd);
      fields[which] = value;
      labels.push(`${which}-${name}`);
    }
  }
  let json = JSON.stringify(fields);
  if (rng.chance(0.3)) {
    const [name, mutated] = rng.pick<[string, (s: string) => string]>([
      ['truncate', (s) => s.slice(0, rng.int(s.length))],
      ['trailing', (s) => s + rng.pick(['x', '}', ' ', '\u0000', ',{}'])],
      ['bom', (s) => '\ufeff' + s],
      ['dup-key', (s) => s.replace('{', '{"uid":"dup",')],
      ['single-quotes', (s) => s.replace(/"/g, "'")],
      ['deep', () => '['.repeat(rng.pick([1_000, 20_000])) + ']'.repeat(rng.pick([0, 1_000]))],
      ['deep-object', () => '{"a":'.repeat(10_000) + '1' + '}'.repeat(10_000)],
      ['not-object', () => rng.pick(['null', '[]', '"str"', '1', 'true', '{}', '', ' ', '[{"uid":"a","channel":"b"}]'])],
      ['escaped', (s) => s.replace(/"uid":"([^"]*)"/, '"\\u0075id":"$1"')],
      ['big-number', (s) => s.replace('{', '{"n":1e99999,')],
      ['whitespace', (s) => ' \n\t\r' + s + ' \n'],
    ]);
    json = mutated(json);
    labels.push(name);
  }
  return { text: json, label: labels.join(',') || 'valid' };
}

/** A first frame (and what may follow it in the same connection). */
export function firstFrameInput(rng: Rng, index: number): FuzzInput {
  const join = joinText(rng, index);
  const labels = [join.label];
  let payload = text(join.text);
  const spec: FrameSpec = { opcode: 1, payload };
  const extra: Buffer[] = [];
  const frameMutation = rng.chance(0.45) ? rng.pick([
    'binary', 'fragmented', 'unmasked', 'invalid-utf8', 'empty', 'ping-first', 'pong-first', 'close-first', 'rsv', 'opcode',
    'claim-9MiB', 'claim-2^63', 'non-minimal-length', 'continuation-first', 'truncated-frame',
  ] as const) : undefined;
  switch (frameMutation) {
    case 'binary': spec.opcode = 2; break;
    case 'unmasked': spec.masked = false; break;
    case 'invalid-utf8': {
      const at = rng.int(payload.length + 1);
      spec.payload = payload = Buffer.concat([payload.subarray(0, at), rng.pick(INVALID_UTF8), payload.subarray(at)]);
      break;
    }
    case 'empty': spec.payload = Buffer.alloc(0); break;
    case 'ping-first': extra.unshift(frame({ opcode: 9, payload: text('p') }, rng)); break;
    case 'pong-first': extra.unshift(frame({ opcode: 10 }, rng)); break;
    case 'close-first': extra.unshift(frame({ opcode: 8, payload: closePayload(1000) }, rng)); break;
    case 'rsv': spec.rsv = 1 + rng.int(7); break;
    case 'opcode': spec.opcode = rng.pick([0, 3, 4, 5, 6, 7, 11, 12, 13, 14, 15]); break;
    case 'claim-9MiB': spec.claimedLength = 9n * 1024n * 1024n; break;
    case 'claim-2^63': spec.claimedLength = 1n << 63n; break;
    case 'non-minimal-length': spec.lengthForm = rng.pick([16, 64] as const); break;
    case 'continuation-first': spec.opcode = 0; break;
    case 'truncated-frame': break; // cut below
    case 'fragmented': case undefined: break;
  }
  if (frameMutation) labels.push(frameMutation);
  let frames: Buffer[];
  if (frameMutation === 'fragmented' && payload.length > 1) {
    const at = 1 + rng.int(payload.length - 1);
    frames = [
      frame({ opcode: spec.opcode, payload: payload.subarray(0, at), fin: false }, rng),
      ...(rng.chance(0.3) ? [frame({ opcode: 9, payload: text('mid') }, rng)] : []),
      frame({ opcode: 0, payload: payload.subarray(at) }, rng),
    ];
  } else {
    frames = [frame(spec, rng)];
  }
  if (frameMutation === 'truncated-frame') frames = [frames[0]!.subarray(0, rng.int(frames[0]!.length))];
  if (rng.chance(0.3)) {
    frames.push(frame({ opcode: rng.pick([1, 2]), payload: text(`after-join-${index}`) }, rng));
    labels.push('+data');
  }
  const bytes = Buffer.concat([...extra, ...frames]);
  return { index, label: labels.join(','), bytes, cuts: cutsFor(rng, bytes.length), end: rng.chance(0.85), frames: true };
}

/** Frames sent after a valid join. */
const AFTER_JOIN: Array<[string, (rng: Rng, i: number) => Buffer]> = [
  ['text', (rng, i) => frame({ opcode: 1, payload: text(`m-${i}`) }, rng)],
  ['binary', (rng) => frame({ opcode: 2, payload: rng.bytes(rng.int(200)) }, rng)],
  ['empty-text', (rng) => frame({ opcode: 1 }, rng)],
  ['big-binary', (rng) => frame({ opcode: 2, payload: Buffer.alloc(rng.pick([70_000, 300_000]), 7) }, rng)],
  ['invalid-utf8', (rng) => frame({ opcode: 1, payload: Buffer.concat([text('ok'), rng.pick(INVALID_UTF8)]) }, rng)],
  ['reserved-opcode', (rng) => frame({ opcode: rng.pick([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]), payload: text('x') }, rng)],
  ['rsv', (rng) => frame({ opcode: rng.pick([1, 2, 9]), rsv: 1 + rng.int(7), payload: text('x') }, rng)],
  ['unmasked', (rng) => frame({ opcode: rng.pick([1, 2, 8, 9]), payload: text('x'), masked: false }, rng)],
  ['fragmented-ping', (rng) => frame({ opcode: 9, payload: text('p'), fin: false }, rng)],
  ['fragmented-close', (rng) => frame({ opcode: 8, payload: closePayload(1000), fin: false }, rng)],
  ['long-ping', (rng) => frame({ opcode: 9, payload: Buffer.alloc(126, 1) }, rng)],
  ['long-close', (rng) => frame({ opcode: 8, payload: closePayload(1000, Buffer.alloc(124, 0x61)) }, rng)],
  ['ping', (rng) => frame({ opcode: 9, payload: rng.bytes(rng.int(125)) }, rng)],
  ['pong', (rng) => frame({ opcode: 10, payload: rng.bytes(rng.int(20)) }, rng)],
  ['close-code', (rng) => frame({ opcode: 8, payload: closePayload(rng.pick([0, 1, 999, 1000, 1001, 1004, 1005, 1006, 1012, 1014, 1015, 1016, 2999, 3000, 4999, 5000, 65535])) }, rng)],
  ['close-1-byte', (rng) => frame({ opcode: 8, payload: Buffer.from([3]) }, rng)],
  ['close-bad-reason', (rng) => frame({ opcode: 8, payload: closePayload(1000, rng.pick(INVALID_UTF8)) }, rng)],
  ['close-empty', (rng) => frame({ opcode: 8 }, rng)],
  ['continuation-alone', (rng) => frame({ opcode: 0, payload: text('c') }, rng)],
  ['text-then-text', (rng) => Buffer.concat([frame({ opcode: 1, payload: text('a'), fin: false }, rng), frame({ opcode: 1, payload: text('b') }, rng)])],
  ['fragments-with-ping', (rng) => Buffer.concat([
    frame({ opcode: 1, payload: text('fr'), fin: false }, rng), frame({ opcode: 9, payload: text('p') }, rng), frame({ opcode: 0, payload: text('ag') }, rng),
  ])],
  ['unfinished-fragment', (rng) => frame({ opcode: 2, payload: text('part'), fin: false }, rng)],
  ['many-fragments', (rng) => Buffer.concat([
    frame({ opcode: 2, payload: text('0'), fin: false }, rng),
    ...Array.from({ length: 200 }, () => frame({ opcode: 0, payload: text('1'), fin: false }, rng)),
    frame({ opcode: 0, payload: text('2') }, rng),
  ])],
  ['split-utf8', (rng) => Buffer.concat([
    frame({ opcode: 1, payload: Buffer.from([0xe2, 0x82]), fin: false }, rng), frame({ opcode: 0, payload: Buffer.from([0xac]) }, rng),
  ])],
  ['non-minimal-length', (rng) => frame({ opcode: 1, payload: text('nm'), lengthForm: rng.pick([16, 64] as const) }, rng)],
  ['length-msb', (rng) => frame({ opcode: 2, claimedLength: (1n << 63n) + 5n }, rng)],
  ['claim-9MiB', (rng) => frame({ opcode: 2, claimedLength: 9n * 1024n * 1024n }, rng)],
  ['claim-1MiB-short', (rng) => frame({ opcode: 2, claimedLength: 1024n * 1024n, payload: rng.bytes(100) }, rng)],
  ['junk', (rng) => rng.bytes(1 + rng.int(64))],
  ['ping-flood', (rng) => Buffer.concat(Array.from({ length: 100 }, () => frame({ opcode: 9 }, rng)))],
  ['tiny-many', (rng) => Buffer.concat(Array.from({ length: 50 }, (_, k) => frame({ opcode: 1, payload: text(`t${k}`) }, rng)))],
];

/** A valid join (unique uid) followed by 1..6 mutated frames. */
export function afterJoinInput(rng: Rng, index: number, channels: number): FuzzInput {
  const join = frame({ opcode: 1, payload: text(JSON.stringify({ uid: `aj-${index}`, channel: `fz${index % channels}` })) }, rng);
  const labels: string[] = [];
  const frames = [join];
  for (let i = 0, n = 1 + rng.int(6); i < n; i++) {
    const [name, make] = rng.pick(AFTER_JOIN);
    frames.push(make(rng, index));
    labels.push(name);
  }
  const bytes = Buffer.concat(frames);
  const input: FuzzInput = { index, label: labels.join(','), bytes, cuts: cutsFor(rng, bytes.length), end: rng.chance(0.8), frames: true };
  if (rng.chance(0.08)) input.stopReading = true;
  return input;
}

/** The upgrade request every WebSocket phase starts with. */
export function upgradeRequest(rng: Rng, host: string): Buffer {
  return Buffer.from(`GET / HTTP/1.1\r\nHost: ${host}\r\n${upgradeHeaders(rng, true).map((h) => h + '\r\n').join('')}\r\n`);
}

// ---------------------------------------------------------------------------------------------
// Sending

export interface Endpoint {
  port: number;
  tls: boolean;
}

export type Outcome = 'reply' | 'closed' | 'timeout' | 'reset' | 'refused' | 'no-upgrade';

export interface Exchange {
  outcome: Outcome;
  /** The first line of the reply (HTTP status line), if any. */
  firstLine?: string;
  /** Close code of the server's close frame (WebSocket phases). */
  closeCode?: number;
  closeReason?: string;
  bytes: number;
}

function open(endpoint: Endpoint, input: Pick<FuzzInput, 'plainToTls' | 'servername'>): net.Socket {
  if (!endpoint.tls || input.plainToTls) return net.connect({ host: '127.0.0.1', port: endpoint.port });
  return tls.connect({
    host: '127.0.0.1', port: endpoint.port, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'],
    ...(input.servername === undefined ? {} : { servername: input.servername }),
  });
}

async function writeCut(socket: net.Socket, bytes: Buffer, cuts: number[]): Promise<void> {
  let from = 0;
  for (const to of [...cuts, bytes.length]) {
    if (socket.destroyed) return;
    if (to > from) socket.write(bytes.subarray(from, to));
    from = to;
    if (to < bytes.length) await new Promise((resolve) => setImmediate(resolve));
  }
}

/**
 * Reads the server's frames as they stream in, keeping only the first close frame: payloads are
 * skipped, so a long history replay costs nothing to read through.
 */
class CloseScanner {
  close: { code: number; reason: string } | undefined;
  private pending = Buffer.alloc(0);
  /** Payload bytes of the current frame still to skip (non-close frames). */
  private skip = 0;

  push(chunk: Buffer): void {
    if (this.close) return;
    if (this.skip >= chunk.length) {
      this.skip -= chunk.length;
      return;
    }
    let data = chunk.subarray(this.skip);
    this.skip = 0;
    data = this.pending.length > 0 ? Buffer.concat([this.pending, data]) : data;
    let offset = 0;
    while (offset + 2 <= data.length) {
      let length = data[offset + 1]! & 0x7f;
      let header = 2;
      if (length === 126) {
        if (offset + 4 > data.length) break;
        length = data.readUInt16BE(offset + 2);
        header = 4;
      } else if (length === 127) {
        if (offset + 10 > data.length) break;
        length = Number(data.readBigUInt64BE(offset + 2));
        header = 10;
      }
      const start = offset + header;
      if ((data[offset]! & 0x0f) === 8) {
        if (start + length > data.length) break; // wait for the whole close payload
        const payload = data.subarray(start, start + length);
        this.close = payload.length < 2 ? { code: 1005, reason: '' } : { code: payload.readUInt16BE(0), reason: payload.subarray(2).toString() };
        return;
      }
      if (start + length > data.length) {
        this.skip = start + length - data.length;
        offset = data.length;
        break;
      }
      offset = start + length;
    }
    this.pending = Buffer.from(data.subarray(offset));
  }
}

/**
 * Sends one input and collects the answer until the server closes or `timeoutMs` passes. With
 * `upgrade`, first sends that upgrade request and waits for the 101 before writing the input.
 */
export function exchange(endpoint: Endpoint, input: FuzzInput, timeoutMs: number, upgrade?: Buffer): Promise<Exchange> {
  return new Promise((resolve) => {
    const socket = open(endpoint, input);
    let firstBytes = Buffer.alloc(0);
    const frames = new CloseScanner();
    let total = 0;
    let upgraded = upgrade === undefined;
    let head = Buffer.alloc(0);
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = (outcome: Outcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      const result: Exchange = { outcome, bytes: total };
      if (upgrade === undefined) {
        if (firstBytes.length > 0) {
          const eol = firstBytes.indexOf('\r\n');
          result.firstLine = firstBytes.subarray(0, eol > 0 ? Math.min(eol, 120) : Math.min(80, firstBytes.length)).toString('latin1');
        }
      } else if (frames.close) {
        result.closeCode = frames.close.code;
        result.closeReason = frames.close.reason;
      }
      resolve(result);
    };
    const arm = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => finish(upgraded ? 'timeout' : 'no-upgrade'), timeoutMs);
    };
    socket.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ECONNREFUSED') finish('refused');
      else finish(total > 0 ? 'reply' : 'reset');
    });
    socket.on('close', () => finish(upgraded ? (total > 0 ? 'reply' : 'closed') : 'no-upgrade'));
    socket.on('data', (chunk: Buffer) => {
      if (!upgraded) {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) return;
        if (!head.subarray(0, 13).toString('latin1').startsWith('HTTP/1.1 101')) return finish('no-upgrade');
        upgraded = true;
        chunk = head.subarray(end + 4);
        if (input.stopReading) socket.pause();
        void send();
      }
      total += chunk.length;
      if (upgrade !== undefined) frames.push(chunk);
      else if (firstBytes.length < 256) firstBytes = Buffer.concat([firstBytes, chunk.subarray(0, 256)]);
    });
    const send = async (): Promise<void> => {
      arm();
      await writeCut(socket, input.bytes, input.cuts);
      if (input.end && !socket.destroyed) socket.end();
    };
    const onOpen = (): void => {
      if (upgrade === undefined) void send();
      else {
        socket.write(upgrade);
        arm();
      }
    };
    if (socket instanceof tls.TLSSocket) socket.once('secureConnect', onOpen);
    else socket.once('connect', onOpen);
    // A TLS handshake that never completes still ends within the timeout.
    timer = setTimeout(() => finish('timeout'), timeoutMs * 4);
  });
}

/**
 * Runs `work` over `items`, `concurrency` at a time, until done or `stop()` says so. `inFlight`
 * holds the items being worked on (what was in flight when a server died).
 */
export async function runPool<T>(items: T[], concurrency: number, work: (item: T) => Promise<void>, stop: () => boolean, inFlight: Set<T>): Promise<number> {
  let next = 0;
  let done = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length && !stop()) {
      const item = items[next++]!;
      inFlight.add(item);
      try {
        await work(item);
      } finally {
        inFlight.delete(item);
        done++;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
  return done;
}

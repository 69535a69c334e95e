// Compression of text-like files (spec section 5): negotiation with q-values, brotli/gzip (zstd
// where the runtime has it), one ETag per encoding, Vary, the LRU cache bounded in bytes and
// never serving an edited file stale.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { startServer, type RunningServer } from './helpers/server.js';
import { request, tempTree } from './helpers/http.js';
import { AVAILABLE_ENCODINGS, isCompressible, negotiateEncoding, type Encoding } from '../src/net/http/encoding.js';
import { CompressionCache, MAX_COMPRESSED_FILE } from '../src/net/http/compression-cache.js';

const TEXT = 'The quick brown fox jumps over the lazy dog. '.repeat(100);

const DECOMPRESS: Record<string, (b: Buffer) => Buffer> = {
  br: (b) => zlib.brotliDecompressSync(b),
  gzip: (b) => zlib.gunzipSync(b),
  ...('zstdDecompressSync' in zlib ? { zstd: (b: Buffer) => (zlib as unknown as { zstdDecompressSync: (b: Buffer) => Buffer }).zstdDecompressSync(b) } : {}),
};

let server: RunningServer;
let www: ReturnType<typeof tempTree>;

before(async () => {
  www = tempTree({
    'app.js': TEXT,
    'style.css': TEXT,
    'data.json': JSON.stringify({ text: TEXT }),
    'icon.svg': `<svg xmlns="http://www.w3.org/2000/svg"><!-- ${TEXT} --></svg>`,
    'module.wasm': Buffer.alloc(4096, 0),
    'photo.png': Buffer.alloc(4096, 7),
    'tiny.txt': 'tiny',
    'edit.txt': TEXT,
    'huge.txt': Buffer.alloc(MAX_COMPRESSED_FILE + 1, 'a'),
  });
  server = await startServer(['--wwwroot', www.dir]);
});

after(async () => {
  await server?.stop();
  www?.cleanup();
});

test('negotiation follows q-values, the wildcard and an explicit identity', () => {
  const both: Encoding[] = ['br', 'gzip'];
  assert.equal(negotiateEncoding(undefined, both), undefined);
  assert.equal(negotiateEncoding('', both), undefined);
  assert.equal(negotiateEncoding('gzip, deflate, br', both), 'br', 'ties go to the preferred coding');
  assert.equal(negotiateEncoding('gzip;q=1.0, br;q=0.5', both), 'gzip');
  assert.equal(negotiateEncoding('br;q=0, gzip', both), 'gzip');
  assert.equal(negotiateEncoding('br;q=0, gzip;q=0', both), undefined);
  assert.equal(negotiateEncoding('*', both), 'br');
  assert.equal(negotiateEncoding('*;q=0.2, br;q=0.1', both), 'gzip');
  assert.equal(negotiateEncoding('identity;q=1, gzip;q=0.5', both), undefined);
  assert.equal(negotiateEncoding('x-gzip', both), 'gzip');
  assert.equal(negotiateEncoding('br;q=2, gzip;q=0.3', both), 'gzip', 'an invalid q-value drops its entry');
  assert.equal(negotiateEncoding('deflate, compress', both), undefined);
  assert.equal(negotiateEncoding('zstd, br', ['zstd', 'br', 'gzip']), 'zstd');
  assert.equal(negotiateEncoding('zstd', ['br', 'gzip']), undefined, 'zstd only where the runtime has it');
});

test('text-like types are compressible, binary ones are not', () => {
  for (const type of ['text/html; charset=utf-8', 'text/css', 'application/json', 'application/manifest+json', 'text/javascript', 'application/javascript', 'image/svg+xml', 'application/wasm']) {
    assert.ok(isCompressible(type), type);
  }
  for (const type of ['image/png', 'application/octet-stream', 'video/mp4', 'application/zip']) assert.ok(!isCompressible(type), type);
});

test('each available coding is served, decodes to the file, with Vary and its own ETag', async () => {
  const plain = await request(server.port, '/app.js');
  assert.equal(plain.headers['content-encoding'], undefined);
  assert.equal(plain.headers.vary, 'Accept-Encoding');
  const etags = new Set([plain.headers.etag]);
  for (const encoding of AVAILABLE_ENCODINGS) {
    const res = await request(server.port, '/app.js', { headers: { 'Accept-Encoding': encoding } });
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-encoding'], encoding);
    assert.equal(res.headers.vary, 'Accept-Encoding');
    assert.equal(Number(res.headers['content-length']), res.body.length);
    assert.ok(res.body.length < TEXT.length / 5, `${encoding} body is compressed`);
    assert.equal(DECOMPRESS[encoding]!(res.body).toString(), TEXT);
    etags.add(res.headers.etag);
  }
  assert.equal(etags.size, AVAILABLE_ENCODINGS.length + 1, 'one ETag per representation');
  assert.ok(AVAILABLE_ENCODINGS.includes('br') && AVAILABLE_ENCODINGS.includes('gzip'));
});

test('q-values pick the coding; the types of the spec are all compressed', async () => {
  const gzip = await request(server.port, '/style.css', { headers: { 'Accept-Encoding': 'gzip;q=1, br;q=0.5' } });
  assert.equal(gzip.headers['content-encoding'], 'gzip');
  const none = await request(server.port, '/style.css', { headers: { 'Accept-Encoding': 'br;q=0, gzip;q=0' } });
  assert.equal(none.headers['content-encoding'], undefined);
  assert.equal(none.text, TEXT);
  for (const file of ['data.json', 'icon.svg', 'module.wasm']) {
    const res = await request(server.port, `/${file}`, { headers: { 'Accept-Encoding': 'gzip' } });
    assert.equal(res.headers['content-encoding'], 'gzip', file);
  }
  const json = await request(server.port, '/data.json', { headers: { 'Accept-Encoding': 'br' } });
  assert.equal(json.headers['access-control-allow-origin'], '*');
});

test('binary, tiny and huge files go out uncompressed', async () => {
  const png = await request(server.port, '/photo.png', { headers: { 'Accept-Encoding': 'br, gzip' } });
  assert.equal(png.headers['content-encoding'], undefined);
  assert.equal(png.headers.vary, undefined);
  const tiny = await request(server.port, '/tiny.txt', { headers: { 'Accept-Encoding': 'br, gzip' } });
  assert.equal(tiny.headers['content-encoding'], undefined);
  assert.equal(tiny.text, 'tiny');
  const huge = await request(server.port, '/huge.txt', { method: 'HEAD', headers: { 'Accept-Encoding': 'br, gzip' } });
  assert.equal(huge.headers['content-encoding'], undefined);
  assert.equal(Number(huge.headers['content-length']), MAX_COMPRESSED_FILE + 1);
});

test('HEAD of a compressed body announces its length', async () => {
  const get = await request(server.port, '/app.js', { headers: { 'Accept-Encoding': 'br' } });
  const head = await request(server.port, '/app.js', { method: 'HEAD', headers: { 'Accept-Encoding': 'br' } });
  assert.equal(head.headers['content-length'], get.headers['content-length']);
  assert.equal(head.headers['content-encoding'], 'br');
  assert.equal(head.body.length, 0);
});

test('304 for any coding of the current version, keeping ETag and Vary', async () => {
  const br = await request(server.port, '/app.js', { headers: { 'Accept-Encoding': 'br' } });
  const revalidated = await request(server.port, '/app.js', { headers: { 'Accept-Encoding': 'gzip', 'If-None-Match': br.headers.etag! } });
  assert.equal(revalidated.status, 304);
  assert.equal(revalidated.headers.vary, 'Accept-Encoding');
  assert.match(revalidated.headers.etag!, /-gzip"$/);
  const plainRevalidated = await request(server.port, '/app.js', { headers: { 'If-None-Match': br.headers.etag! } });
  assert.equal(plainRevalidated.status, 304);
});

test('a Range request gets the plain bytes, never a compressed body', async () => {
  const res = await request(server.port, '/app.js', { headers: { 'Accept-Encoding': 'br, gzip', Range: 'bytes=4-8' } });
  assert.equal(res.status, 206);
  assert.equal(res.headers['content-encoding'], undefined);
  assert.equal(res.text, TEXT.slice(4, 9));
});

test('an edited file is never served stale, even at the same size', async () => {
  const file = path.join(www.dir, 'edit.txt');
  const before = await request(server.port, '/edit.txt', { headers: { 'Accept-Encoding': 'br' } });
  assert.equal(zlib.brotliDecompressSync(before.body).toString(), TEXT);
  const sameSize = TEXT.replace('quick', 'QUICK');
  fs.writeFileSync(file, sameSize);
  const later = new Date(fs.statSync(file).mtimeMs + 5_000);
  fs.utimesSync(file, later, later);
  const after = await request(server.port, '/edit.txt', { headers: { 'Accept-Encoding': 'br' } });
  assert.equal(zlib.brotliDecompressSync(after.body).toString(), sameSize);
  assert.notEqual(after.headers.etag, before.headers.etag);
  assert.equal((await request(server.port, '/edit.txt', { headers: { 'If-None-Match': before.headers.etag! } })).status, 200);
  fs.writeFileSync(file, 'shorter now, and shorter again: '.repeat(20));
  const shorter = await request(server.port, '/edit.txt', { headers: { 'Accept-Encoding': 'gzip' } });
  assert.equal(zlib.gunzipSync(shorter.body).toString(), 'shorter now, and shorter again: '.repeat(20));
});

test('cache: concurrent misses share one compression, then hits', async () => {
  const cache = new CompressionCache(1024 * 1024);
  let reads = 0;
  const read = async (): Promise<Buffer> => {
    reads++;
    return Buffer.from(TEXT);
  };
  const bodies = await Promise.all(Array.from({ length: 10 }, () => cache.get('/a.js', 'v1', 'br', read)));
  assert.equal(reads, 1);
  assert.equal(cache.stats.compressions, 1);
  assert.ok(bodies.every((body) => body === bodies[0]));
  await cache.get('/a.js', 'v1', 'br', read);
  assert.equal(cache.stats.hits, 1);
  await cache.get('/a.js', 'v1', 'gzip', read);
  await cache.get('/a.js', 'v2', 'br', read);
  assert.equal(cache.stats.compressions, 3, 'another coding or version is compressed anew');
  assert.equal(reads, 3);
});

test('cache: bounded in bytes, evicting the least recently used; 0 disables it', async () => {
  const random = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => Math.floor(Math.random() * 256)));
  const cache = new CompressionCache(10_000);
  for (let i = 0; i < 10; i++) await cache.get(`/f${i}`, 'v', 'gzip', async () => random(3_000));
  assert.ok(cache.size <= 10_000 && cache.size > 0, `holds ${cache.size} bytes`);
  const compressions = cache.stats.compressions;
  await cache.get('/f9', 'v', 'gzip', async () => random(3_000));
  assert.equal(cache.stats.compressions, compressions, 'the newest entry is still cached');
  await cache.get('/f0', 'v', 'gzip', async () => random(3_000));
  assert.equal(cache.stats.compressions, compressions + 1, 'the oldest entry was evicted');

  const disabled = new CompressionCache(0);
  await disabled.get('/a', 'v', 'br', async () => Buffer.from(TEXT));
  await disabled.get('/a', 'v', 'br', async () => Buffer.from(TEXT));
  assert.equal(disabled.size, 0);
  assert.equal(disabled.stats.compressions, 2);
  assert.ok(!disabled.accepts(MAX_COMPRESSED_FILE + 1));
  assert.ok(disabled.accepts(MAX_COMPRESSED_FILE));
});

test('--compression-cache 0 still compresses', async () => {
  const uncached = await startServer(['--wwwroot', www.dir, '--compression-cache', '0']);
  try {
    const res = await request(uncached.port, '/app.js', { headers: { 'Accept-Encoding': 'gzip' } });
    assert.equal(res.headers['content-encoding'], 'gzip');
    assert.equal(zlib.gunzipSync(res.body).toString(), TEXT);
  } finally {
    await uncached.stop();
  }
});

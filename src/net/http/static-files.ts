// Static files, per domain: `WWWROOT/<host>/<path>` for the configured domains, or WWWROOT
// itself for any host in local mode. Directory paths serve their index.html. Text-like files
// go out compressed from the compression cache; plain bodies are streamed, with ranges. Every
// open file holds a --filelimit slot until it is closed, so neither a client that stops reading
// nor a full set of slots may last: a stalled download is ended, a wait for a slot is bounded.

import { constants, existsSync, type Stats } from 'node:fs';
import { open, realpath, type FileHandle } from 'node:fs/promises';
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import path from 'node:path';
import { pipeline } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { parseRequestPath, resolveInside, type RequestPath } from './safe-path.js';
import { etagFor, fileVersion, isNotModified, lastModifiedSeconds, requestedRange } from './conditional.js';
import { isCompressible, negotiateEncoding } from './encoding.js';
import type { CompressionCache } from './compression-cache.js';
import type { FileLimit, Release } from './file-limit.js';
import { sendText } from './respond.js';

/** The nearest folder above `from` holding a package.json: the installed package's root. */
function packageRoot(from: string): string {
  for (let dir = from; path.dirname(dir) !== dir; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, 'package.json'))) return dir;
  }
  return from;
}

/** The bundled web app, served when no --wwwroot is given (found from this file, not the cwd). */
export const DEFAULT_WWWROOT = path.join(packageRoot(path.dirname(fileURLToPath(import.meta.url))), 'public');

// O_NONBLOCK: opening a FIFO that slipped into the root must not hang a libuv thread.
const OPEN_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK;

/** A download whose client takes nothing (not one more 64 KiB chunk) for this long is ended. */
export const RESPONSE_IDLE_MS = 30_000;
/** A request waits this long for a --filelimit slot, then gets 503. */
export const SLOT_WAIT_MS = 10_000;
/** Retry-After of that 503, in seconds. */
const BUSY_RETRY_AFTER_S = 5;

/** Errors that mean "no such file to serve" rather than a server fault. */
const NOT_FOUND_CODES = new Set(['ENOENT', 'ENOTDIR', 'EACCES', 'EPERM', 'ELOOP', 'ENAMETOOLONG']);

/** The Host header's name without its port, lower case, without a trailing dot. */
export function hostName(host: string | undefined): string | undefined {
  if (!host) return undefined;
  const name = host.startsWith('[') ? host.slice(0, host.indexOf(']') + 1) : host.replace(/:\d*$/, '');
  return name.toLowerCase().replace(/\.$/, '');
}

export interface StaticOptions {
  /** Folder served; with domains, each domain is served from its subfolder. */
  wwwroot: string;
  /** Configured domains; empty means local mode (wwwroot for every host). */
  domains: readonly string[];
  fileLimit: FileLimit;
  cache: CompressionCache;
  /** Default RESPONSE_IDLE_MS (tests shorten it). */
  responseIdleMs?: number;
  /** Default SLOT_WAIT_MS (tests shorten it). */
  slotWaitMs?: number;
}

/**
 * mime-types parses all of mime-db (3-4 MB of heap): loaded with the first file served, not at
 * start (issue 14, lean start).
 */
let mimeTypes: Promise<typeof import('mime-types')> | undefined;

async function contentTypeOf(name: string): Promise<string> {
  mimeTypes ??= import('mime-types');
  return (await mimeTypes).contentType(path.extname(name)) || 'application/octet-stream';
}

export class StaticFiles {
  private readonly domains: Set<string>;
  /** Real paths of the roots, resolved once each (a root that does not exist yet is retried). */
  private readonly realRoots = new Map<string, string>();

  constructor(private readonly options: StaticOptions) {
    this.domains = new Set(options.domains);
  }

  /** Answers a GET or HEAD request. */
  async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const target = parseRequestPath(req.url ?? '');
    if (!target.ok) return sendText(res, target.status);
    const realRoot = await this.rootFor(req.headers.host);
    if (realRoot === undefined) return sendText(res, 404);
    const segments = target.directory ? [...target.segments, 'index.html'] : target.segments;
    const file = await resolveInside(realRoot, segments);
    if (file === undefined) return sendText(res, 404);

    const release = await this.options.fileLimit.acquire(this.options.slotWaitMs ?? SLOT_WAIT_MS);
    if (release === undefined) return sendText(res, 503, 'Busy: try again shortly', { 'Retry-After': String(BUSY_RETRY_AFTER_S) });
    let handle: FileHandle | undefined;
    let handedOver = false;
    try {
      handle = await open(file, OPEN_FLAGS);
      const stat = await handle.stat();
      if (stat.isDirectory() && !target.directory) return redirectToDirectory(res, target);
      if (!stat.isFile()) return sendText(res, 404);
      const name = segments[segments.length - 1] ?? 'index.html';
      handedOver = await this.sendFile(req, res, { file, name, handle, stat, release });
    } catch (error) {
      if (!NOT_FOUND_CODES.has((error as NodeJS.ErrnoException).code ?? '')) throw error;
      sendText(res, 404);
    } finally {
      if (!handedOver) {
        await handle?.close().catch(() => {});
        release();
      }
    }
  }

  private async rootFor(host: string | undefined): Promise<string | undefined> {
    let root = this.options.wwwroot;
    if (this.domains.size > 0) {
      const name = hostName(host);
      if (name === undefined || !this.domains.has(name)) return undefined;
      root = path.join(root, name);
    }
    const known = this.realRoots.get(root);
    if (known !== undefined) return known;
    try {
      const real = await realpath(root);
      this.realRoots.set(root, real);
      return real;
    } catch {
      return undefined;
    }
  }

  /**
   * Sends an open regular file. Returns true if a body stream took over the handle and the
   * file-limit slot (it releases both when it closes); otherwise the caller closes them.
   */
  private async sendFile(
    req: IncomingMessage,
    res: ServerResponse,
    { file, name, handle, stat, release }: { file: string; name: string; handle: FileHandle; stat: Stats; release: Release },
  ): Promise<boolean> {
    const type = await contentTypeOf(name);
    const compressible = isCompressible(type) && this.options.cache.accepts(stat.size);
    // Ranges are served from the plain file only, so a Range request is never compressed.
    const encoding = compressible && req.headers.range === undefined
      ? negotiateEncoding(req.headers['accept-encoding'])
      : undefined;
    const version = fileVersion(stat);
    const modifiedMs = lastModifiedSeconds(stat);
    const etag = etagFor(version, encoding);
    const headers: OutgoingHttpHeaders = {
      ETag: etag,
      'Last-Modified': new Date(modifiedMs).toUTCString(),
      // Revalidate every time (cheap with the validators): a redeployed app is never stale.
      'Cache-Control': 'no-cache',
      'X-Content-Type-Options': 'nosniff',
    };
    if (compressible) headers.Vary = 'Accept-Encoding';
    if (name.toLowerCase().endsWith('.json')) headers['Access-Control-Allow-Origin'] = '*';
    if (isNotModified(req.headers, version, modifiedMs)) {
      res.writeHead(304, headers).end();
      return false;
    }
    headers['Content-Type'] = type;
    const head = req.method === 'HEAD';

    if (encoding !== undefined) {
      const body = await this.options.cache.get(file, version, encoding, () => handle.readFile());
      res.writeHead(200, { ...headers, 'Content-Encoding': encoding, 'Content-Length': body.length });
      res.end(head ? undefined : body);
      return false;
    }

    headers['Accept-Ranges'] = 'bytes';
    const range = requestedRange(req.headers, stat.size, etag, modifiedMs);
    if (range === 'unsatisfiable') {
      sendText(res, 416, undefined, { 'Content-Range': `bytes */${stat.size}` });
      return false;
    }
    const { start, end } = range ?? { start: 0, end: stat.size - 1 };
    if (range) headers['Content-Range'] = `bytes ${start}-${end}/${stat.size}`;
    const length = end - start + 1;
    res.writeHead(range ? 206 : 200, { ...headers, 'Content-Length': length });
    if (head || length === 0) {
      res.end();
      return false;
    }
    const body = handle.createReadStream({ start, end });
    body.once('close', release);
    // On a failed read or a client that went away, pipeline destroys both streams.
    pipeline(body, res, () => {});
    // Backpressure stops the reads while the client takes nothing; past the idle time the
    // connection is cut, which ends the pipeline and frees the file and its slot.
    const idle = setTimeout(() => res.destroy(), this.options.responseIdleMs ?? RESPONSE_IDLE_MS);
    body.on('data', () => idle.refresh());
    res.once('close', () => clearTimeout(idle));
    return true;
  }
}

/** `/dir` -> `/dir/`, so the index page's relative links resolve inside the folder. */
function redirectToDirectory(res: ServerResponse, target: Extract<RequestPath, { ok: true }>): void {
  // rawPath never starts with "//" (empty segments are refused), so this stays on this site.
  sendText(res, 301, 'Moved Permanently', { Location: `${target.rawPath}/${target.query}` });
}

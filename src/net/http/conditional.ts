// Validators, conditional requests and byte ranges for static files (RFC 9110 sections 8.8,
// 13 and 14). Each encoding of a file is its own representation with its own ETag, so a cache
// holding the brotli body and one holding the plain body can both revalidate.

import type { Stats } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';

/** Identifies one version of a file's content: changes whenever size or mtime does. */
export function fileVersion(stat: Stats): string {
  return `${stat.size.toString(36)}-${Math.floor(stat.mtimeMs * 1000).toString(36)}`;
}

/** The ETag of a file version in one content encoding (undefined: the plain file). */
export function etagFor(version: string, encoding: string | undefined): string {
  return encoding ? `"${version}-${encoding}"` : `"${version}"`;
}

/** HTTP dates have whole seconds, so compare modification times at that precision. */
export function lastModifiedSeconds(stat: Stats): number {
  return Math.floor(stat.mtimeMs / 1000) * 1000;
}

function opaqueTag(tag: string): string {
  return tag.trim().replace(/^W\//, '');
}

/**
 * True when the client's cached copy is current (answer 304). If-None-Match, when present,
 * decides alone and matches any encoding's ETag of this version (weak comparison);
 * otherwise If-Modified-Since is compared at second precision.
 */
export function isNotModified(headers: IncomingHttpHeaders, version: string, modifiedMs: number): boolean {
  const noneMatch = headers['if-none-match'];
  if (noneMatch !== undefined) {
    return noneMatch.split(',').some((tag) => {
      const opaque = opaqueTag(tag);
      return opaque === '*' || opaque === `"${version}"` || opaque.startsWith(`"${version}-`);
    });
  }
  const since = headers['if-modified-since'];
  if (since === undefined) return false;
  const sinceMs = Date.parse(since);
  return !Number.isNaN(sinceMs) && modifiedMs <= sinceMs;
}

export interface ByteRange {
  start: number;
  /** Inclusive. */
  end: number;
}

/**
 * The byte range asked for, 'unsatisfiable' (answer 416), or undefined to send the whole file
 * (no Range, a stale If-Range, a malformed or multi-part Range: all allowed to be ignored).
 */
export function requestedRange(
  headers: IncomingHttpHeaders,
  size: number,
  etag: string,
  modifiedMs: number,
): ByteRange | 'unsatisfiable' | undefined {
  const header = headers.range;
  if (header === undefined) return undefined;
  const ifRange = (headers['if-range'] as string | undefined)?.trim();
  if (ifRange !== undefined) {
    // If-Range needs a strong match: an entity tag, or exactly the Last-Modified date.
    const current = ifRange.startsWith('"') || ifRange.startsWith('W/')
      ? ifRange === etag
      : Date.parse(ifRange) === modifiedMs;
    if (!current) return undefined;
  }
  const match = /^bytes=\s*(\d*)\s*-\s*(\d*)\s*$/.exec(header);
  if (!match || (match[1] === '' && match[2] === '')) return undefined;
  let start: number;
  let end: number;
  if (match[1] === '') {
    const suffix = Number(match[2]);
    if (suffix === 0) return 'unsatisfiable';
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(match[1]);
    end = match[2] === '' ? size - 1 : Math.min(Number(match[2]), size - 1);
    if (match[2] !== '' && Number(match[2]) < start) return undefined;
  }
  if (start >= size) return 'unsatisfiable';
  return { start, end };
}

// Turns a raw request target into path segments that cannot leave the web root, and resolves
// them to a real file inside it. The raw `req.url` is checked, never `new URL()`'s view of it:
// URL parsing folds `..` and `%2e%2e`, turns `\` into `/` and reads `//x` as a host, which
// hides exactly what must be refused. Symlinks are followed, then the real path must still be
// inside the root's real path.

import { realpath } from 'node:fs/promises';
import path from 'node:path';

/** Longer request paths (query excluded) get 414: no file path here needs more. */
export const MAX_PATH_LENGTH = 2048;

export type RequestPath =
  | {
      ok: true;
      /** Decoded segments, each a plain file or directory name. */
      segments: string[];
      /** The path ended with `/`: a directory was asked for. */
      directory: boolean;
      /** The raw path as sent (validated), for redirects. */
      rawPath: string;
      /** The raw query including its `?`, or ''. */
      query: string;
    }
  | { ok: false; status: 400 | 404 | 414 };

/** A segment that may name a file: no dot-segments, separators, NULs or other controls. */
function isPlainName(name: string): boolean {
  // Hidden files (.git, .env) are never served; .well-known is the one public dot-folder.
  if (name.startsWith('.') && name !== '.well-known') return false;
  return !/[/\\\u0000-\u001f\u007f]/.test(name);
}

/** Validates and decodes the raw request target of a static file request. */
export function parseRequestPath(rawUrl: string): RequestPath {
  // Only origin-form ("/path"): absolute-form and "*" are not file requests.
  if (!rawUrl.startsWith('/')) return { ok: false, status: 400 };
  const queryAt = rawUrl.indexOf('?');
  const rawPath = queryAt < 0 ? rawUrl : rawUrl.slice(0, queryAt);
  const query = queryAt < 0 ? '' : rawUrl.slice(queryAt);
  // The query is not limited: an app's index page may get long tokens there.
  if (rawPath.length > MAX_PATH_LENGTH) return { ok: false, status: 414 };
  const raw = rawPath.slice(1).split('/');
  const directory = raw[raw.length - 1] === '';
  if (directory) raw.pop();
  const segments: string[] = [];
  for (const part of raw) {
    // An empty segment ("//") is refused too: "//host" in a redirect would leave the site.
    if (part === '') return { ok: false, status: 404 };
    let name: string;
    try {
      name = decodeURIComponent(part);
    } catch {
      return { ok: false, status: 400 };
    }
    if (!isPlainName(name)) return { ok: false, status: 404 };
    segments.push(name);
  }
  return { ok: true, segments, directory, rawPath, query };
}

/** True if `candidate` (a real path) is `root` or lies below it. */
export function isInside(root: string, candidate: string): boolean {
  const prefix = root.endsWith(path.sep) ? root : root + path.sep;
  return candidate === root || candidate.startsWith(prefix);
}

/**
 * The real path of `segments` under `realRoot` (itself a real path), or undefined if it does not
 * exist or a symlink leads outside the root.
 */
export async function resolveInside(realRoot: string, segments: string[]): Promise<string | undefined> {
  let real: string;
  try {
    real = await realpath(path.join(realRoot, ...segments));
  } catch {
    return undefined;
  }
  return isInside(realRoot, real) ? real : undefined;
}

// Content codings for static files: which types are worth compressing, which coding a client
// accepts (Accept-Encoding with q-values), and the compressors themselves (Node's zlib; zstd
// only where the runtime has it, which Node 20 does not).

import zlib from 'node:zlib';
import { promisify } from 'node:util';

export type Encoding = 'zstd' | 'br' | 'gzip';

type Compress = (input: Buffer) => Promise<Buffer>;

const brotli = promisify(zlib.brotliCompress);
const gzip = promisify(zlib.gzip);
const zstdCompress = (zlib as unknown as { zstdCompress?: typeof zlib.gzip }).zstdCompress;
const zstd = zstdCompress ? promisify(zstdCompress) : undefined;

const COMPRESSORS: Partial<Record<Encoding, Compress>> = {
  // Quality 11 costs tens of times more CPU for a few percent; 5 is the usual middle ground.
  br: (input) =>
    brotli(input, {
      params: {
        [zlib.constants.BROTLI_PARAM_QUALITY]: 5,
        [zlib.constants.BROTLI_PARAM_SIZE_HINT]: input.length,
      },
    }),
  gzip: (input) => gzip(input, { level: 6 }),
  ...(zstd ? { zstd: (input: Buffer) => zstd(input) } : {}),
};

/** Codings this runtime can produce, most preferred first (zstd, as the reference does). */
export const AVAILABLE_ENCODINGS: readonly Encoding[] = (['zstd', 'br', 'gzip'] as const).filter(
  (encoding) => COMPRESSORS[encoding] !== undefined,
);

export function compress(encoding: Encoding, input: Buffer): Promise<Buffer> {
  return COMPRESSORS[encoding]!(input);
}

/** Text-like types that compress well: text/*, JSON, JavaScript, XML, SVG and wasm. */
export function isCompressible(contentType: string): boolean {
  const type = contentType.split(';')[0]!.trim().toLowerCase();
  return (
    type.startsWith('text/') ||
    type === 'application/json' ||
    type.endsWith('+json') ||
    type === 'application/javascript' ||
    type === 'application/xml' ||
    type.endsWith('+xml') ||
    type === 'application/wasm'
  );
}

/** Parses Accept-Encoding into coding -> q (RFC 9110 section 12.5.3); bad entries are skipped. */
function acceptedCodings(header: string): Map<string, number> {
  const accepted = new Map<string, number>();
  for (const entry of header.split(',')) {
    const [name, ...params] = entry.split(';').map((part) => part.trim().toLowerCase());
    if (!name) continue;
    let q = 1;
    for (const param of params) {
      const value = /^q\s*=\s*(.*)$/.exec(param)?.[1];
      if (value !== undefined) q = /^(0(\.\d{0,3})?|1(\.0{0,3})?)$/.test(value) ? Number(value) : Number.NaN;
    }
    if (!Number.isNaN(q)) accepted.set(name === 'x-gzip' ? 'gzip' : name, q);
  }
  return accepted;
}

/**
 * The coding to send, or undefined for the plain body: the available coding with the highest
 * q (ties go to the preferred one), unless the client rates `identity` higher still.
 */
export function negotiateEncoding(header: string | undefined, available: readonly Encoding[] = AVAILABLE_ENCODINGS): Encoding | undefined {
  if (!header) return undefined;
  const accepted = acceptedCodings(header);
  const wildcard = accepted.get('*') ?? 0;
  let best: Encoding | undefined;
  let bestQ = 0;
  for (const encoding of available) {
    const q = accepted.get(encoding) ?? wildcard;
    if (q > bestQ) {
      best = encoding;
      bestQ = q;
    }
  }
  const identity = accepted.get('identity');
  return identity !== undefined && identity > bestQ ? undefined : best;
}

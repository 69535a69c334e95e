// Bundles the demo web app (web/, TypeScript) into public/app.js with esbuild.
// Run by `npm run build` (and so by npm's prepare); the browser test runs it too.

import { build } from 'esbuild';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const result = await build({
  absWorkingDir: root,
  entryPoints: ['web/main.ts'],
  outfile: 'public/app.js',
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2020'],
  minify: true,
  sourcemap: true,
  // The client kit imports `ws` only where there is no native WebSocket, never in a browser.
  external: ['ws'],
  logLevel: 'warning',
  write: false,
});

// Each file is written beside its place and renamed over it: a server (or a test) reading
// public/app.js while another build runs sees the old bundle or the new one, never half of one.
for (const file of result.outputFiles) {
  const temporary = `${file.path}.${process.pid}.tmp`;
  fs.writeFileSync(temporary, file.contents);
  fs.renameSync(temporary, file.path);
}

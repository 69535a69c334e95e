// Bundles the demo web app (web/, TypeScript) into public/app.js with esbuild.
// Run by `npm run build`; the browser test runs it too.

import { build } from 'esbuild';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

await build({
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
});

// Test-only: `node --import ./test/helpers/record-modules.mjs ...` appends every module URL the
// process loads (ESM and CommonJS) to the file named by MLES_RECORD_MODULES, one a line.
// Used by test/lean-start.test.ts to prove a mode's dependencies load only when the mode is used.
import { appendFileSync } from 'node:fs';
import Module, { register } from 'node:module';
import { pathToFileURL } from 'node:url';

const out = process.env.MLES_RECORD_MODULES;
if (out) {
  const hooks = `
    import { appendFileSync } from 'node:fs';
    export async function load(url, context, next) {
      appendFileSync(${JSON.stringify(out)}, url + '\\n');
      return next(url, context);
    }`;
  register(`data:text/javascript,${encodeURIComponent(hooks)}`, pathToFileURL('./'));
  // require() inside CommonJS packages bypasses the ESM hooks on Node 20: record those too.
  const load = Module._load;
  Module._load = function (request, parent, isMain) {
    const loaded = load.apply(this, arguments);
    try {
      const file = Module._resolveFilename(request, parent, isMain);
      appendFileSync(out, (file.startsWith('/') ? pathToFileURL(file).href : `node:${file}`) + '\n');
    } catch { /* builtins resolve to themselves */ }
    return loaded;
  };
}

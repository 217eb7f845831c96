// js_types.mjs - the TypeScript declarations of our JavaScript modules
// (clients/js/retrod.d.mts, retrod_langchain.d.mts, retrod_llamaindex.d.mts),
// the last two against @langchain/core's and llamaindex's own: the
// TypeScript compiler (npm typescript, pinned in run.sh) checks
// js_types.mts, langchain_types.mts and llamaindex_types.mts under
// --strict, each of which uses the classes as documented and misuses them
// on lines marked to fail (an expected error that does not come fails the
// check); and every method of retrod.mjs's Client must be declared. run.sh
// copies this, the .mts files and the client modules with their
// declarations beside CACHE's node_modules; no server is used. TAP on
// stdout.
import ts from 'typescript';
import fs from 'node:fs';
import { Client } from './retrod.mjs';
import { done, ok } from './tap.mjs';

const base = {
  noEmit: true, strict: true, target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext, lib: ['lib.es2022.d.ts', 'lib.dom.d.ts', 'lib.dom.asynciterable.d.ts'],
};
// as in a project that has these node_modules: @types found from here
process.chdir(new URL('.', import.meta.url).pathname);

/** Compiles file; ok() when nothing is reported and the compiler read declarations. */
function check(file, declarations, against, options) {
  const program = ts.createProgram([file], { ...base, ...options });
  const diagnostics = ts.getPreEmitDiagnostics(program);
  const text = diagnostics.map((d) => ts.formatDiagnostic(d, {
    getCanonicalFileName: (f) => f, getCurrentDirectory: () => process.cwd(), getNewLine: () => '\n',
  })).join('');
  ok(diagnostics.length === 0 && program.getSourceFiles().some((f) => f.fileName.endsWith(declarations)),
    `TypeScript ${ts.version} --strict: ${file}, what ${declarations} declares used as documented checks${against ? ` against ${against}` : ''}, each marked misuse refused`,
    text || 'the compiler did not read ' + declarations);
}

check('js_types.mts', 'retrod.d.mts', '', {});
const dts = fs.readFileSync('retrod.d.mts', 'utf8');
const missing = Object.getOwnPropertyNames(Client.prototype)
  .filter((n) => n !== 'constructor' && !new RegExp(`^  ${n}\\(`, 'm').test(dts));
ok(missing.length === 0, "every method of retrod.mjs's Client is declared in retrod.d.mts", missing);
check('langchain_types.mts', 'retrod_langchain.d.mts', '@langchain/core', {});
// llamaindex 0.12.1's own declaration files do not check (they import ajv,
// which it does not install): skipped, as a project using it must; ours
// are still what every use is checked against.
check('llamaindex_types.mts', 'retrod_llamaindex.d.mts', 'llamaindex', { skipLibCheck: true });
done();

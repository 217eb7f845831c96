// langchain_types.mjs - our LangChain.js classes' TypeScript declarations
// (clients/js/retrod_langchain.d.mts) against @langchain/core's own: the
// TypeScript compiler (npm typescript, pinned in run.sh) checks
// langchain_types.mts under --strict, which uses each class as documented
// and misuses it on lines marked to fail (an expected error that does not
// come fails the check). run.sh copies this, the .mts file and the client
// modules with their declarations beside CACHE's node_modules; no server is
// used. TAP on stdout.
import ts from 'typescript';
import { done, ok } from './tap.mjs';

const options = {
  noEmit: true, strict: true, target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext, lib: ['lib.es2022.d.ts', 'lib.dom.d.ts', 'lib.dom.asynciterable.d.ts'],
};
// as in a project that has these node_modules: @types found from here
process.chdir(new URL('.', import.meta.url).pathname);
const program = ts.createProgram(['langchain_types.mts'], options);
const diagnostics = ts.getPreEmitDiagnostics(program);
const text = diagnostics.map((d) => ts.formatDiagnostic(d, {
  getCanonicalFileName: (f) => f, getCurrentDirectory: () => process.cwd(), getNewLine: () => '\n',
})).join('');
ok(diagnostics.length === 0,
  `TypeScript ${ts.version} --strict: each class of retrod_langchain.d.mts used as documented checks against @langchain/core, each marked misuse refused`,
  text);
ok(program.getSourceFiles().some((f) => f.fileName.endsWith('retrod_langchain.d.mts')),
  'the declarations are what the compiler read for retrod_langchain.mjs');
done();

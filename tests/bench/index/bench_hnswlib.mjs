// bench_hnswlib.mjs - the peer of bench_ann.cpp: hnswlib (npm hnswlib-node,
// the library Chroma embeds) on the same vectors and queries, one thread,
// one query at a time; prints one JSON object per efSearch, like bench_ann.
// Driven by ann_scale.py. Not run by CI.
//   [HNSWLIB_CACHE=DIR] node bench_hnswlib.mjs BASE N D QUERIES NQ GT M EF_CONSTRUCTION EF,...
// With HNSWLIB_CACHE the built graph is kept there (with its build time) and
// read back by a later run of the same N, M and efConstruction: at 4M vectors
// the one-thread build takes most of an hour.
import { closeSync, existsSync, openSync, readFileSync, readSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(process.env.HNSWLIB_DIR + '/');
const { HierarchicalNSW } = require('hnswlib-node');
const [base, n, d, queries, nq, gtPath, m, efc, efs] = process.argv.slice(2);
const N = +n, D = +d, NQ = +nq, K = 10;
const f32 = (p) => { const b = readFileSync(p); return new Float32Array(b.buffer, b.byteOffset, b.length / 4); };
// readFileSync stops at 2 GiB (4M x 256 floats is 4 GB): the base's first N rows in pieces
const firstFloats = (p, count) => {
  const out = new Float32Array(count), bytes = new Uint8Array(out.buffer), fd = openSync(p, 'r');
  for (let off = 0; off < bytes.length;) {
    const got = readSync(fd, bytes, off, Math.min(1 << 30, bytes.length - off), off);
    if (got <= 0) throw new Error(`${p}: shorter than ${count} floats`);
    off += got;
  }
  closeSync(fd);
  return out;
};
const xq = f32(queries);
const gtBuf = readFileSync(gtPath);
const gt = new Int32Array(gtBuf.buffer, gtBuf.byteOffset, NQ * K);
const row = (a, i) => Array.from(a.subarray(i * D, (i + 1) * D));

const cache = process.env.HNSWLIB_CACHE;
const file = cache ? join(cache, `hnswlib-${base.replace(/\W/g, '_')}-${N}-${m}-${efc}.bin`)
  : join(tmpdir(), `hnswlib-bench-${process.pid}.bin`);
const ix = new HierarchicalNSW('ip', D);
let buildS;
if (cache && existsSync(file) && existsSync(file + '.json')) {
  ix.readIndexSync(file);
  buildS = JSON.parse(readFileSync(file + '.json', 'utf8')).build_s;
  console.error(`hnswlib: read the graph built earlier from ${file}`);
} else {
  ix.initIndex({ maxElements: N, m: +m, efConstruction: +efc, randomSeed: 100 });
  const xb = firstFloats(base, N * D), t0 = performance.now();
  for (let i = 0; i < N; i++) ix.addPoint(row(xb, i), i);
  buildS = (performance.now() - t0) / 1e3;
  ix.writeIndexSync(file);
  if (cache) writeFileSync(file + '.json', JSON.stringify({ build_s: buildS }));
}
const bytesPerVec = statSync(file).size / N;
if (!cache) rmSync(file);
let t0;
const qs = Array.from({ length: NQ }, (_, i) => row(xq, i));
for (const ef of efs.split(',').map(Number)) {
  ix.setEf(ef);
  let hits = 0;
  qs.forEach((q) => ix.searchKnn(q, K)); // untimed: warms up, as bench_ann does
  t0 = performance.now();
  const found = qs.map((q) => ix.searchKnn(q, K).neighbors);
  const qps = NQ / ((performance.now() - t0) / 1e3);
  found.forEach((labels, i) => {
    const truth = new Set(gt.subarray(i * K, (i + 1) * K));
    hits += labels.filter((l) => truth.has(l)).length;
  });
  console.log(JSON.stringify({ index: 'hnswlib', n: N, params: `M=${m} efConstruction=${efc} efSearch=${ef}`,
    build_s: +buildS.toFixed(2), bytes_per_vec: +bytesPerVec.toFixed(1), recall: +(hits / (NQ * K)).toFixed(4),
    qps: +qps.toFixed(1) }));
}
// deletes: hnswlib marks them (filtered at search, slots reusable with allowReplaceDeleted)
t0 = performance.now();
for (let i = 0; i < 1000; i++) ix.markDelete(i * Math.floor(N / 1000));
console.error(`hnswlib: markDelete of 1000 ids took ${(performance.now() - t0).toFixed(1)} ms`);

// bench_hnswlib.mjs - the peer of bench_ann.cpp: hnswlib (npm hnswlib-node,
// the library Chroma embeds) on the same vectors and queries, one thread,
// one query at a time; prints one JSON object per efSearch, like bench_ann.
// Driven by ann_scale.py. Not run by CI.
//   node bench_hnswlib.mjs BASE N D QUERIES NQ GT M EF_CONSTRUCTION EF,...
import { closeSync, openSync, readFileSync, readSync, rmSync, statSync } from 'node:fs';
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
const xb = firstFloats(base, N * D), xq = f32(queries);
const gtBuf = readFileSync(gtPath);
const gt = new Int32Array(gtBuf.buffer, gtBuf.byteOffset, NQ * K);
const row = (a, i) => Array.from(a.subarray(i * D, (i + 1) * D));

const ix = new HierarchicalNSW('ip', D);
ix.initIndex({ maxElements: N, m: +m, efConstruction: +efc, randomSeed: 100 });
let t0 = performance.now();
for (let i = 0; i < N; i++) ix.addPoint(row(xb, i), i);
const buildS = (performance.now() - t0) / 1e3;
const file = join(tmpdir(), `hnswlib-bench-${process.pid}.bin`);
ix.writeIndexSync(file);
const bytesPerVec = statSync(file).size / N;
rmSync(file);
const qs = Array.from({ length: NQ }, (_, i) => row(xq, i));
for (const ef of efs.split(',').map(Number)) {
  ix.setEf(ef);
  let hits = 0;
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

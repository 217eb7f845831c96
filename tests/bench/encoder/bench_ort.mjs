// bench_ort.mjs - the ONNX Runtime peer of bench_encoder.c: the encoder
// exported by export_onnx.py, run by onnxruntime-node's CPU execution
// provider with THREADS intra-op threads (one inter-op thread, sequential
// execution, all graph optimisations), on the same inputs as bench_encoder.c
// and bench_torch.py. First checks its embeddings against PyTorch's
// (MODEL.onnx.ref.json). Prints "ort LEN BATCH sent_per_s ms_per_call
// sent_per_cpu_s min_ms_per_call" lines, as bench_torch.py does.
//   node bench_ort.mjs NODE_MODULES_DIR MODEL.onnx VOCAB_SIZE THREADS SECONDS
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";

const [modulesArg, onnxPath, vocab, threadsArg, secsArg] = process.argv.slice(2);
const modules = resolve(modulesArg);
const require = createRequire(join(modules, "x.js"));
const ort = require("onnxruntime-node");
const threads = Number(threadsArg), secs = Number(secsArg);
const session = await ort.InferenceSession.create(onnxPath, {
  executionProviders: ["cpu"],
  intraOpNumThreads: threads,
  interOpNumThreads: 1,
  executionMode: "sequential",
  graphOptimizationLevel: "all",
});
const version = require(join(modules, "onnxruntime-node", "package.json")).version;
console.log(`# onnxruntime-node ${version}, cpu provider, intra-op threads ${threads}`);

function feeds(rows) {
  const B = rows.length, T = rows[0].length;
  const ids = new BigInt64Array(B * T), mask = new BigInt64Array(B * T).fill(1n);
  rows.forEach((r, i) => r.forEach((v, j) => { ids[i * T + j] = BigInt(v); }));
  return { input_ids: new ort.Tensor("int64", ids, [B, T]), attention_mask: new ort.Tensor("int64", mask, [B, T]) };
}

// the same computation as PyTorch's, or the timing means nothing
const ref = JSON.parse(readFileSync(onnxPath + ".ref.json", "utf8"));
const got = (await session.run(feeds(ref.input_ids))).embeddings.data;
let maxDiff = 0;
ref.embeddings.flat().forEach((v, i) => { maxDiff = Math.max(maxDiff, Math.abs(v - got[i])); });
console.log(`# ort max |embedding - PyTorch's| ${maxDiff.toExponential(2)}`);
if (!(maxDiff < 1e-3)) throw new Error(`ONNX Runtime disagrees with PyTorch (max difference ${maxDiff})`);

// bench_encoder.c's inputs: [CLS] content [SEP], the content formula below
const span = Math.min(28000, Number(vocab) - 1000);
const cls = ref.input_ids[0][0], sep = ref.input_ids[0][ref.input_ids[0].length - 1];
const points = process.env.POINTS ? process.env.POINTS.split(',') : null; // e.g. 16x1,128x32
for (const T of [16, 64, 128]) {
  for (const B of [1, 32]) {
    if (points && !points.includes(`${T}x${B}`)) continue;
    const rows = [];
    for (let i = 0; i < B; i++) {
      const r = [cls];
      for (let j = 0; j < T - 2; j++) r.push(1000 + Number((BigInt(i) * 7919n + BigInt(j) * 104729n) % BigInt(span)));
      r.push(sep);
      rows.push(r);
    }
    const f = feeds(rows);
    await session.run(f); // warm up
    let it = 0, best = Infinity, el;
    const t0 = performance.now(), c0 = process.cpuUsage();
    for (;;) {
      const t1 = performance.now();
      await session.run(f);
      const t2 = performance.now();
      best = Math.min(best, t2 - t1);
      it++;
      el = (t2 - t0) / 1e3;
      if (el >= secs && it >= 3) break;
    }
    const c = process.cpuUsage(c0), cpu = (c.user + c.system) / 1e6;
    console.log(`ort ${T} ${B} ${(B * it / el).toFixed(1)} ${(1e3 * el / it).toFixed(3)} ${(B * it / cpu).toFixed(1)} ${best.toFixed(3)}`);
  }
}

// tap.mjs - TAP for the node test scripts (tests/compat/openai_client.mjs,
// tests/webui/browser_test.mjs): ok() prints one numbered result (and its
// detail, cut short, when it failed), skip() one skipped, attempt() runs one
// async step and counts a throw as a failure, done() prints the plan and
// exits non-zero when anything failed. The runners copy it beside the
// script they run.
let n = 0, failed = 0;
export function ok(cond, name, detail) {
  n++;
  if (!cond) failed++;
  console.log(`${cond ? 'ok' : 'not ok'} ${n} - ${name}`);
  if (!cond && detail !== undefined) console.log(`# ${JSON.stringify(detail).slice(0, 800)}`);
}
export function skip(name, why) {
  n++;
  console.log(`ok ${n} - ${name} # SKIP ${why}`);
}
export async function attempt(name, fn) {
  try { await fn(); } catch (e) { ok(false, name, String(e && e.stack || e)); }
}
export function done() {
  console.log(`1..${n}`);
  process.exit(failed ? 1 : 0);
}

// browser_test.mjs - the web playground (GET /) driven in headless chromium
// by puppeteer-core against a running `retro serve`: loads without console
// errors, searches, streams a completion (chunk boundaries, neighbours,
// attribution marks), upserts and deletes a document through the forms with
// the read-write key (by id, and all that match a metadata filter once
// confirmed) and shows the 403 with the read-only key, shows the
// status pane, fits 375 px, checks --no-webui answers 404, and that a page on
// another origin may call the API only when --cors-origins lists it. Prints TAP;
// writes screenshots to $SHOTS. Run by run.sh, which sets the environment.
import fs from 'node:fs';
import puppeteer from 'puppeteer-core';
import { attempt, done, ok, skip } from './tap.mjs';

const { RETRO_URL, RETRO_OFF_URL, RW_KEY, RO_KEY, CHROMIUM, SHOTS, CORPUS, TRAINED_PORT, TRAINED_DOC } = process.env;

// Documents long enough for several 64-token chunks each.
const lines = fs.readFileSync(`${CORPUS}/c.txt`, 'utf8').split('\n').filter(Boolean);
const docs = [];
for (let i = 0; i < 6; i++) docs.push({ id: `doc-${i}`, text: lines.slice(i * 30, i * 30 + 30).join('\n'), metadata: { part: i } });
const r = await fetch(`${RETRO_URL}/v1/documents`, { method: 'POST', headers: { Authorization: `Bearer ${RW_KEY}`, 'Content-Type': 'application/json' }, body: JSON.stringify({ documents: docs }) });
const ing = await r.json();
ok(r.status === 200 && ing.errors === 0 && ing.documents === docs.length, 'corpus ingested through the API', ing);

const browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
const page = await browser.newPage();
const errors = [];
let expect403 = false; // the browser logs the intended 403 as a failed resource
page.on('console', (m) => { if (m.type() === 'error' && !(expect403 && /status of 403/.test(m.text()))) errors.push(m.text()); });
page.on('pageerror', (e) => errors.push(String(e)));
await page.setViewport({ width: 1280, height: 900 });
const text = (sel) => page.$eval(sel, (e) => e.textContent);
const setValue = (sel, v) => page.$eval(sel, (e, v) => { e.value = v; e.dispatchEvent(new Event('change')); }, v);

await attempt('page loads', async () => {
  const resp = await page.goto(RETRO_URL + '/', { waitUntil: 'load' });
  ok(resp.status() === 200 && (await page.title()) === 'retrod playground', 'GET / loads the page');
  await new Promise((res) => setTimeout(res, 300));
  ok(errors.length === 0, 'no console errors after load', errors);
  const unlabelled = await page.$$eval('input, select, textarea', (els) => els.filter((e) => !e.labels || !e.labels.length).map((e) => e.id));
  ok(unlabelled.length === 0, 'every input has a label', unlabelled);
});

await attempt('key', async () => {
  await page.focus('#key');
  await page.keyboard.type(RW_KEY);
  await page.keyboard.press('Tab');
  const kept = await page.evaluate(() => sessionStorage.getItem('retrod.key'));
  ok(kept === RW_KEY && !page.url().includes(RW_KEY), 'the key is kept in sessionStorage, not the URL');
});

await attempt('search', async () => {
  await setValue('#s-filter', '{not json');
  await page.focus('#s-query');
  await page.keyboard.type('model chunk database');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.querySelector('#s-msg').textContent.includes('filter'));
  ok((await text('#s-msg')).includes('not valid JSON'), 'a bad filter is refused before sending');
  await setValue('#s-filter', '{"part": [0, 1, 2, 3, 4, 5]}');
  await page.keyboard.press('Enter');
  await page.waitForSelector('.hit', { timeout: 20000 });
  const hits = await page.$$eval('.hit', (h) => h.map((x) => x.textContent));
  ok(hits.length > 0 && hits.every((h) => /doc-\d/.test(h) && /score/.test(h)), `a search shows hits with document and score (${hits.length})`, hits.slice(0, 2));
  ok((await page.$$('.hit details')).length > 0, 'hits expand to their context (expand)');
  // "similar" on a hit: the chunks nearest it by its stored vector, with the form's options
  const first = Number((hits[0].match(/chunk (\d+) \(ordinal/) || [])[1]);
  await page.click('.hit .like');
  await page.waitForFunction((c) => document.querySelector('#s-msg').textContent.includes(`chunks like chunk ${c}`), {}, first);
  const shown = await page.$$eval('.hit', (h) => h.map((x) => Number(x.textContent.match(/chunk (\d+) \(ordinal/)[1])));
  const form = await page.evaluate(() => ({ k: Number(document.querySelector('#s-k').value) || 5, expand: Number(document.querySelector('#s-expand').value) || 0 }));
  const want = await (await fetch(`${RETRO_URL}/v1/search`, { method: 'POST', headers: { Authorization: `Bearer ${RO_KEY}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ chunk_id: first, k: form.k, filter: { part: [0, 1, 2, 3, 4, 5] }, ...(form.expand ? { expand: form.expand } : {}) }) })).json();
  ok(first > 0 && shown.length > 0 && !shown.includes(first) && JSON.stringify(shown) === JSON.stringify(want.results.map((h) => h.chunk_id)),
     '"similar" shows the chunks nearest the hit (chunk_id), itself left out', { first, shown, want: want.results && want.results.map((h) => h.chunk_id) });
  await page.screenshot({ path: `${SHOTS}/search-desktop.png` });
  // only some documents: "search within these"
  await setValue('#s-include', 'doc-2, doc-4');
  await page.click('#sform button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#s-msg').textContent === '' && [...document.querySelectorAll('.hit')].length &&
    [...document.querySelectorAll('.hit')].every((h) => /doc-[24]\b/.test(h.textContent)), { timeout: 20000 });
  const within = await page.$$eval('.hit', (h) => h.map((x) => (x.textContent.match(/doc-\d/) || [])[0]));
  ok(within.length > 0 && within.every((d) => d === 'doc-2' || d === 'doc-4'), 'only these documents: the hits are theirs', within);
  await setValue('#s-include', '');
  // rerank: the server's reranked hits, each with its rank before
  await page.click('#s-rerank');
  await page.click('#sform button[type=submit]');
  await page.waitForFunction(() => [...document.querySelectorAll('.hit')].some((h) => /relevance/.test(h.textContent)), { timeout: 20000 });
  const rr = await page.$$eval('.hit', (h) => h.map((x) => Number((x.textContent.match(/chunk (\d+) \(ordinal/) || [])[1])));
  const rrWant = await (await fetch(`${RETRO_URL}/v1/search`, { method: 'POST', headers: { Authorization: `Bearer ${RO_KEY}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ query: 'model chunk database', k: 5, filter: { part: [0, 1, 2, 3, 4, 5] }, expand: 1, rerank: true }) })).json();
  ok(rr.length > 0 && JSON.stringify(rr) === JSON.stringify(rrWant.results.map((h) => h.chunk_id)) &&
     (await page.$$eval('.hit', (h) => h.every((x) => /relevance [\d.]+ \(was #\d+/.test(x.textContent)))),
     'rerank: the reranked hits, each with its relevance and rank before', { rr, want: rrWant.results && rrWant.results.map((h) => h.chunk_id) });
  await page.click('#s-rerank');
  // group by document: documents ranked by their best chunk, each with its best 2
  await setValue('#s-group', '2');
  await page.click('#sform button[type=submit]');
  await page.waitForSelector('.group', { timeout: 20000 });
  const grouped = await page.$$eval('.group', (gs) => gs.map((g) => ({ doc: (g.querySelector('h3').textContent.match(/doc-\d+/) || [])[0],
    chunks: [...g.querySelectorAll('.hit')].map((x) => Number(x.textContent.match(/chunk (\d+) \(ordinal/)[1])) })));
  const gWant = await (await fetch(`${RETRO_URL}/v1/search`, { method: 'POST', headers: { Authorization: `Bearer ${RO_KEY}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ query: 'model chunk database', k: 5, filter: { part: [0, 1, 2, 3, 4, 5] }, expand: 1, group_by: 'document', group_size: 2 }) })).json();
  ok(grouped.length > 0 && JSON.stringify(grouped) === JSON.stringify(gWant.groups.map((g) => ({ doc: g.doc_id, chunks: g.hits.map((h) => h.chunk_id) }))),
     'group by document: the groups and their chunks, as the server groups them', { grouped, want: gWant.groups });
  await setValue('#s-group', '0');
});

await attempt('generate', async () => {
  await page.click('nav button[data-pane="generate"]');
  // the first 12 lines of doc-0: its continuation is in the index
  await setValue('#g-prompt', docs[0].text.split('\n').slice(0, 12).join('\n'));
  await setValue('#g-max', '140');
  await setValue('#g-seed', '7');
  await page.click('#g-cmp');
  await page.click('#g-go');
  await page.waitForFunction(() => [...document.querySelectorAll('#g-cols h3')].filter((h) => !h.closest('[hidden]')).every((h) => !h.textContent.endsWith('…')) && document.querySelectorAll('#g-off h3').length, { timeout: 120000 });
  const chunks = await page.$$('#g-main .gen-chunk');
  const bounds = await page.$$('#g-main .gen-chunk.boundary');
  const nbs = await page.$$('#g-main .gen-chunk .nb');
  ok(chunks.length >= 2 && bounds.length >= 1, `the streamed text is split at chunk boundaries (${chunks.length} chunks)`);
  ok(nbs.length >= 1, `generated chunks show their neighbours (${nbs.length})`);
  const genMarks = await page.$$('#g-main .prompt-row .gentext mark');
  const nbMarks = await page.$$('#g-main .prompt-row .nb mark');
  ok(genMarks.length > 0 && nbMarks.length > 0, `attribution: shared runs marked in the text and in a neighbour (${genMarks.length}/${nbMarks.length})`);
  const offNbs = await page.$$('#g-off .nb');
  const offChunks = await page.$$('#g-off .gen-chunk');
  ok(offNbs.length === 0 && (await text('#g-off h3')) === 'retrieval off' && (await text('#g-off .gentext')).length > 0 &&
     offChunks.length >= 2,
    `the run with retrieval off is shown beside it, without neighbours, split at its chunk boundaries (${offChunks.length} chunks)`);
  ok((await text('#g-msg')) === '', 'no error message', await text('#g-msg'));
  await page.screenshot({ path: `${SHOTS}/generate-desktop.png`, fullPage: true });
  // the small one the README shows (docs/webui.jpg)
  await page.setViewport({ width: 960, height: 640 });
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: `${SHOTS}/playground.jpg`, type: 'jpeg', quality: 60 });
  await page.setViewport({ width: 1280, height: 900 });
  // neighbours only from one document: generation grounded in it
  await setValue('#g-include', 'doc-3');
  await page.click('#g-cmp'); // one run is enough
  await page.click('#g-go');
  await page.waitForFunction(() => [...document.querySelectorAll('#g-main h3')].every((h) => !h.textContent.endsWith('…')) &&
    document.querySelectorAll('#g-main .nb').length, { timeout: 120000 });
  const from = await page.$$eval('#g-main .nb .meta', (m) => m.map((x) => x.textContent.split(' · ')[0]));
  ok(from.length > 0 && from.every((d) => d === 'doc-3'), `neighbours only from these documents: every one from doc-3 (${from.length})`, from);
  await setValue('#g-include', '');
});

await attempt('attribution of generated text (trained models)', async () => {
  if (!TRAINED_PORT) {
    skip('attribution of generated text', 'no Python 3.11 documentation or default models here');
    return;
  }
  // the start of a document that is in the index, greedy: the decoder copies
  // the next chunk from the neighbour that holds it, and the page marks it
  const doc = fs.readFileSync(TRAINED_DOC, 'utf8');
  await page.goto(`http://127.0.0.1:${TRAINED_PORT}/`, { waitUntil: 'load' });
  await page.click('nav button[data-pane="generate"]');
  await setValue('#g-prompt', doc.slice(0, doc.lastIndexOf(' ', 1500)));
  await setValue('#g-max', '64');
  await setValue('#g-temp', '0');
  await page.$eval('#g-cmp', (e) => { e.checked = false; });
  await page.click('#g-go');
  await page.waitForFunction(() => [...document.querySelectorAll('#g-main h3')].every((h) => !h.textContent.endsWith('…')) &&
    document.querySelectorAll('#g-main .gen-chunk').length, { timeout: 120000 });
  const marks = await page.$$eval('#g-main .gen-chunk .gentext mark', (m) => m.map((x) => x.textContent));
  const copied = marks.join('').length;
  ok(marks.length > 0 && copied >= 40, `attribution: generated text copied from a neighbour is marked (${marks.length} runs, ${copied} characters)`, marks.slice(0, 3));
  await page.screenshot({ path: `${SHOTS}/attribution-trained.png`, fullPage: true });
  await page.goto(RETRO_URL + '/', { waitUntil: 'load' });
});

await attempt('documents', async () => {
  await page.click('nav button[data-pane="documents"]');
  await page.waitForSelector('#d-list table');
  ok((await text('#d-list')).includes('doc-0'), 'the documents pane lists documents');
  await setValue('#u-id', 'ui-doc');
  await setValue('#u-text', 'a document written through the playground form');
  await setValue('#u-meta', '{"source": "ui"}');
  await page.click('#uform button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#u-msg').textContent.length > 0);
  ok((await text('#u-msg')).includes('upserted 1 document'), 'upsert through the form shows the result', await text('#u-msg'));
  await page.waitForFunction(() => document.querySelector('#d-list').textContent.includes('ui-doc'));
  let g = await fetch(`${RETRO_URL}/v1/documents/ui-doc`, { headers: { Authorization: `Bearer ${RO_KEY}` } });
  ok(g.status === 200 && (await g.json()).metadata.source === 'ui', 'the upserted document is stored');
  // its metadata edited in the document view: saved with PATCH as a merge patch
  await page.evaluate(() => [...document.querySelectorAll('#d-list button')].find((b) => b.textContent === 'ui-doc').click());
  await page.waitForSelector('#d-meta');
  await setValue('#d-meta', '{"lang": "en", "nested": {"x": 1}}');
  await page.click('#d-metaform button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#d-metamsg').textContent.length > 0);
  g = await fetch(`${RETRO_URL}/v1/documents/ui-doc`, { headers: { Authorization: `Bearer ${RO_KEY}` } });
  const edited = await g.json();
  ok((await text('#d-metamsg')).includes('metadata saved') && JSON.stringify(edited.metadata) === '{"lang":"en","nested":{"x":1}}' &&
     edited.text === 'a document written through the playground form',
     'metadata edited in the document view: a key removed, others added, the text kept', [await text('#d-metamsg'), edited.metadata]);
  await setValue('#d-meta', '{"lang": null}');
  await page.click('#d-metaform button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#d-metamsg').textContent.includes('null'));
  ok((await text('#d-metamsg')).includes('cannot store null'), 'a null value is refused before sending', await text('#d-metamsg'));
  await setValue('#del-id', 'ui-doc');
  await page.click('#delform button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#u-msg').textContent.includes('deleted'));
  g = await fetch(`${RETRO_URL}/v1/documents/ui-doc`, { headers: { Authorization: `Bearer ${RO_KEY}` } });
  ok(g.status === 404, 'delete through the form removes it');
  // a document named as a route of its own (POST /v1/documents/get): opened and deleted through the forms
  await setValue('#u-id', 'get');
  await setValue('#u-text', 'the document named get');
  await setValue('#u-meta', '');
  await page.click('#uform button[type=submit]');
  await page.waitForFunction(() => [...document.querySelectorAll('#d-list button')].some((b) => b.textContent === 'get'));
  await page.evaluate(() => [...document.querySelectorAll('#d-list button')].find((b) => b.textContent === 'get').click());
  await page.waitForFunction(() => document.querySelector('#d-doc h2')?.textContent === 'get' &&
    document.querySelector('#d-doc').textContent.includes('the document named get'), { timeout: 10000 });
  ok((await text('#d-doc h2')) === 'get' && (await text('#d-doc')).includes('the document named get'),
    'a document named get opens in the document view', await text('#d-doc'));
  await setValue('#del-id', 'get');
  await page.click('#delform button[type=submit]');
  await page.waitForFunction(() => /deleted/.test(document.querySelector('#u-msg').textContent));
  g = await fetch(`${RETRO_URL}/v1/documents/%67et`, { headers: { Authorization: `Bearer ${RO_KEY}` } });
  ok(g.status === 404, 'and is deleted through the form', await text('#u-msg'));
  // a .jsonl file: one document per line, sent as NDJSON
  const file = `${SHOTS}/upload.jsonl`;
  fs.writeFileSync(file, ['up-1', 'up-2'].map((id) => JSON.stringify({ id, text: `uploaded ${id} model chunk` })).join('\n') + '\n');
  await setValue('#u-id', '');
  await (await page.$('#u-file')).uploadFile(file);
  await page.click('#uform button[type=submit]');
  await page.waitForFunction(() => /upserted 2 document/.test(document.querySelector('#u-msg').textContent));
  g = await fetch(`${RETRO_URL}/v1/documents/up-2`, { headers: { Authorization: `Bearer ${RO_KEY}` } });
  ok(g.status === 200, 'a .jsonl upload upserts one document per line, with the per-document results');
  fs.unlinkSync(file);
  await page.$eval('#u-file', (e) => { e.value = ''; });
  // by metadata: list what a filter matches, then delete it once confirmed
  const tmp = ['tmp-1', 'tmp-2'].map((id) => ({ id, text: `temporary ${id} model chunk`, metadata: { tmp: true } }));
  await fetch(`${RETRO_URL}/v1/documents`, { method: 'POST', headers: { Authorization: `Bearer ${RW_KEY}`, 'Content-Type': 'application/json' }, body: JSON.stringify({ documents: tmp }) });
  await setValue('#d-filter', '{x');
  await page.click('#dfform button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#u-msg').textContent.includes('filter'));
  ok((await text('#u-msg')).includes('not valid JSON'), 'a bad documents filter is refused before sending', await text('#u-msg'));
  await setValue('#d-filter', '{"tmp": true}');
  await page.click('#dfform button[type=submit]');
  await page.waitForFunction(() => { const t = document.querySelector('#d-list').textContent; return t.includes('tmp-2') && !t.includes('doc-0'); });
  ok((await page.$$eval('#d-list tbody tr', (r) => r.length)) === 2, 'a metadata filter lists only the documents that match');
  // a metadata patch into all that match, once confirmed
  await setValue('#d-patch', '{"stage": 2}');
  page.once('dialog', (d) => d.accept());
  await page.click('#d-updf');
  await page.waitForFunction(() => document.querySelector('#u-msg').textContent.includes('updated 2 document'));
  g = await fetch(`${RETRO_URL}/v1/documents/tmp-2`, { headers: { Authorization: `Bearer ${RO_KEY}` } });
  ok(JSON.stringify((await g.json()).metadata) === '{"tmp":true,"stage":2}', 'update all that match: the patch merged into each');
  await page.waitForFunction(() => document.querySelector('#d-list').textContent.includes('"stage":2'));
  // download what matches, as the JSON lines retro index reads
  const cdp = await page.createCDPSession();
  await cdp.send('Browser.setDownloadBehavior', { behavior: 'allow', downloadPath: SHOTS });
  const saved = `${SHOTS}/retrod-export.jsonl`;
  if (fs.existsSync(saved)) fs.unlinkSync(saved);
  await page.click('#d-export');
  await page.waitForFunction(() => document.querySelector('#u-msg').textContent.includes('exported 2 document'));
  for (let i = 0; i < 50 && !fs.existsSync(saved); i++) await new Promise((res) => setTimeout(res, 100));
  const got = fs.existsSync(saved) ? fs.readFileSync(saved, 'utf8').trim().split('\n').map((l) => JSON.parse(l)) : [];
  ok(JSON.stringify(got) === JSON.stringify(tmp.map((d) => ({ ...d, metadata: { tmp: true, stage: 2 } }))),
    'download all that match: their ids, texts and metadata as JSON lines', got);
  page.once('dialog', (d) => d.dismiss());
  await page.click('#d-delf');
  g = await fetch(`${RETRO_URL}/v1/documents/tmp-1`, { headers: { Authorization: `Bearer ${RO_KEY}` } });
  ok(g.status === 200, 'delete all that match: nothing goes when the confirmation is dismissed');
  page.once('dialog', (d) => d.accept());
  await page.click('#d-delf');
  await page.waitForFunction(() => document.querySelector('#u-msg').textContent.includes('deleted 2 document'));
  await page.waitForFunction(() => document.querySelector('#d-list').textContent.includes('no documents'));
  g = await fetch(`${RETRO_URL}/v1/documents/tmp-2`, { headers: { Authorization: `Bearer ${RO_KEY}` } });
  ok(g.status === 404, 'confirmed, the matching documents are deleted and the list is empty');
  await setValue('#d-filter', '');
  await page.click('#dfform button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#d-list').textContent.includes('doc-0'));
  expect403 = true;
  await setValue('#key', RO_KEY);
  await setValue('#u-id', 'ro-doc');
  await page.click('#uform button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#u-msg').textContent.includes('403'));
  ok((await text('#u-msg')).includes('read-write key'), 'with the read-only key: a 403 message naming the read-write key', await text('#u-msg'));
  expect403 = false;
});

await attempt('status', async () => {
  await page.click('nav button[data-pane="status"]');
  await page.waitForSelector('#st-table');
  const t = await text('#pane-status');
  const figs = await page.$$eval('#st-figures tr', (rows) => Object.fromEntries(rows.map((r) => [r.cells[0].textContent, r.cells[1].textContent])));
  ok(/retrieval_mode/.test(t) && Number(figs['requests served']) > 10 && Number(figs['mean latency (ms)']) > 0 &&
     Number(figs.documents) === docs.length + 2 /* up-1, up-2 */ && figs['queue depth (workers)'] === '0' && figs['generating / waiting'] === '0 / 0',
     'the status pane shows the server, counts and metrics', figs);
});

await attempt('375 px', async () => {
  await page.setViewport({ width: 375, height: 800 });
  await page.click('nav button[data-pane="search"]');
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  ok(width <= 375, `no horizontal scrolling at 375 px (${width})`);
  await page.screenshot({ path: `${SHOTS}/search-375.png`, fullPage: true });
});

ok(errors.length === 0, 'no console errors in the whole session', errors);

await attempt('--no-webui', async () => {
  const resp = await page.goto(RETRO_OFF_URL + '/');
  ok(resp.status() === 404, '--no-webui: GET / answers 404');
});
// A page on another origin calling the API, as a web app would: the main
// server allows the --no-webui server's origin (--cors-origins), and not the
// same port named "localhost", which is another origin to the browser.
await attempt('cross-origin page (--cors-origins)', async () => {
  const other = await browser.newPage();
  const call = (url) => other.evaluate(async (url, key) => {
    try {
      const r = await fetch(url + '/v1/search', { method: 'POST', body: JSON.stringify({ query: 'model chunk', k: 2 }),
        headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' } });
      const js = await r.json();
      return { status: r.status, hits: js.results ? js.results.length : -1, id: r.headers.get('X-Request-Id') };
    } catch (e) { return { thrown: String(e) }; }
  }, url, RO_KEY);
  await other.goto(RETRO_OFF_URL + '/health');
  const allowed = await call(RETRO_URL);
  ok(allowed.status === 200 && allowed.hits === 2 && allowed.id, 'a page on an allowed origin searches with its key (preflight passed, X-Request-Id readable)', allowed);
  await other.goto(RETRO_OFF_URL.replace('127.0.0.1', 'localhost') + '/health');
  const refused = await call(RETRO_URL);
  ok(refused.thrown && /TypeError/.test(refused.thrown), 'a page on an origin not listed cannot call the API', refused);
  await other.close();
});
await browser.close();
done();

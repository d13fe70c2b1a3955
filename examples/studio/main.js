// The studio page: starts the engine worker (worker.js), hosts its WebGPU device, and draws
// what it reports: the loss curve (src/eval/plot.ts, the same SVG `attn train` writes as
// loss.svg), throughput, samples, checkpoint files and the Inside views.
// URL parameters: ?device=cpu forces the cpu backend; ?budget=MiB sets the memory budget.
import { hostWebGPUForWorker } from '../../dist/src/backend/webgpu/browser.js';
import { lossPlotSvg } from '../../dist/src/eval/plot.js';

const params = new URLSearchParams(location.search);
const device = params.get('device') === 'cpu' ? 'cpu' : 'webgpu';
const budgetMiB = Number(params.get('budget') ?? 0);
const $ = (id) => document.getElementById(id);
const setState = (s) => { document.body.dataset.state = s; };
const status = (s, error = false) => {
  $('status').textContent = s;
  $('status').className = error ? 'error' : '';
};
const mib = (b) => `${(b / 2 ** 20).toFixed(b < 2 ** 20 ? 2 : 0)} MiB`;
const fmtTime = (s) => (!Number.isFinite(s) ? '-' : s < 90 ? `${s.toFixed(0)} s` : s < 5400 ? `${(s / 60).toFixed(1)} min` : `${(s / 3600).toFixed(1)} h`);

const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
worker.addEventListener('error', (e) => status(`engine worker failed: ${e.message}`, true));
if (device === 'webgpu') hostWebGPUForWorker(worker).catch((e) => console.error(e));
const send = (msg, transfer) => worker.postMessage(msg, transfer ?? []);

// What the test and the page read back: records for the curve, the last answers.
const studio = (window.studio = { records: [], evals: [], lastSample: '', logprobs: null, files: null, model: null, stored: null });
let text = null;
let textName = '';
let model = null;

async function bundledText() {
  const res = await fetch(new URL('../../data/tinyshakespeare/input.txt', import.meta.url));
  if (!res.ok) throw new Error(`the bundled Tiny Shakespeare is missing (HTTP ${res.status})`);
  return res.text();
}

async function chosenText() {
  if (document.querySelector('input[name=src]:checked').value === 'file') {
    const f = $('text-file').files[0];
    if (!f) throw new Error('choose a text file, or pick the bundled Tiny Shakespeare');
    textName = f.name;
    return f.text();
  }
  textName = 'Tiny Shakespeare';
  return bundledText();
}

function drawCurve() {
  const recs = [...studio.records.map((r) => ({ step: r.iter, train_loss: r.loss })), ...studio.evals.map((e) => ({ step: e.iter, val_loss: e.val_loss }))];
  $('curve').innerHTML = recs.length ? lossPlotSvg(recs, { title: `loss: ${textName || 'text'}`, width: 720, height: 300 }) : '';
}

function setRunning(on) {
  $('train').disabled = on;
  $('pause').disabled = !on;
  $('resume').disabled = true;
  $('stop').disabled = !on;
  $('resume-stored').disabled = on || !studio.stored;
  $('lora').disabled = on || !model;
  for (const id of ['download', 'sample', 'inside-run']) $(id).disabled = !model;
}

function showStored(s) {
  studio.stored = s;
  $('stored').textContent = s ? `stored in this browser: step ${s.iter} (${s.model.n_layer} layers, ${s.model.n_embd} wide), saved ${s.savedAt}` : 'nothing stored in this browser';
  $('resume-stored').disabled = !s || document.body.dataset.state === 'training';
}

function showModel(m) {
  model = m;
  studio.model = m;
  const c = m.config;
  const family = c.family && c.family !== 'gpt' ? `${c.family}, ` : '';
  const context = m.context < c.block_size ? `context ${c.block_size} (trains on ${m.context})` : `context ${c.block_size}`;
  $('model').textContent = `${family}${(m.params / 1e6).toFixed(2)}M parameters: ${c.n_layer} layers, ${c.n_head} heads, ${c.n_embd} wide, ${context}, ${c.attention ?? 'dense'} attention, ${c.vocab_size} ${m.tokenizer === 'char' ? 'characters' : `tokens (${m.tokenizer} tokenizer)`}${m.lora ? `; LoRA ${m.lora}` : ''}`;
  $('s-mem').textContent = `${mib(m.memory.totalBytes)}`;
  $('s-mem').title = `weights+grads+AdamW ${mib(m.memory.stateBytes)}, activations ${mib(m.memory.activationBytes)}`;
  $('inside-layer').innerHTML = [...Array(c.n_layer).keys()].map((i) => `<option>${i}</option>`).join('');
  $('inside-head').innerHTML = [...Array(c.n_head).keys()].map((i) => `<option>${i}</option>`).join('');
  $('download-adapter').disabled = !m.lora;
  setRunning(document.body.dataset.state === 'training');
}

/** Offers the files as download links (one per file, the checkpoint folder's names). */
function offerFiles(what, files) {
  studio.files = { what, names: Object.keys(files) };
  const box = $('files');
  box.innerHTML = `<div class="muted">${what} files (save them into one folder):</div>`;
  for (const [name, bytes] of Object.entries(files)) {
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([bytes]));
    a.download = name;
    a.textContent = `${name} (${bytes.length.toLocaleString('en-US')} B)`;
    a.dataset.file = name;
    a.className = `dl-${what}`;
    box.appendChild(a);
  }
}

// ---------------------------------------------------------------- Inside views
// Each view: { id, title, render(box, data) } with data the worker's 'inside' answer
// ({ tokens, maps, mapsNote, next, pca, vocab }) and the chosen layer and head. Add a view by
// pushing an entry (the interpretability viewer of issue 23 plugs in here).
export const INSIDE_VIEWS = [
  {
    id: 'attention', title: 'Attention (layer, head)',
    render(box, d, { layer, head }) {
      if (!d.maps) {
        box.textContent = d.mapsNote;
        return;
      }
      const T = d.maps.T;
      const cell = Math.max(6, Math.min(22, Math.floor(300 / T)));
      const pad = 14;
      const cv = document.createElement('canvas');
      cv.width = T * cell + pad;
      cv.height = T * cell + pad;
      const g = cv.getContext('2d');
      const m = d.maps.probs[layer][head];
      for (let i = 0; i < T; i++) for (let j = 0; j < T; j++) {
        const v = m[i * T + j];
        g.fillStyle = `rgb(${255 - Math.round(200 * v)}, ${255 - Math.round(120 * v)}, ${255 - Math.round(40 * v)})`;
        g.fillRect(pad + j * cell, pad + i * cell, cell - 1, cell - 1);
      }
      g.fillStyle = '#333';
      g.font = `${Math.min(11, cell)}px monospace`;
      d.tokens.forEach((t, i) => {
        const s = t === '\n' ? '⏎' : t === ' ' ? '·' : t;
        g.fillText(s, 2, pad + i * cell + cell - 2);
        g.fillText(s, pad + i * cell + 1, 10);
      });
      box.appendChild(cv);
      const note = document.createElement('div');
      note.className = 'muted';
      note.textContent = 'row: query, column: key; darker = more attention';
      box.appendChild(note);
    },
  },
  {
    id: 'next-token', title: 'Next-token distribution',
    render(box, d) {
      for (const { token, p } of d.next) {
        const row = document.createElement('div');
        row.className = 'bar';
        row.innerHTML = `<code style="width:2.5em">${token === ' ' ? '·' : token === '\n' ? '⏎' : token.replace(/&/g, '&amp;').replace(/</g, '&lt;')}</code><span class="fill" style="width:${Math.round(p * 200)}px"></span>${(100 * p).toFixed(1)}%`;
        box.appendChild(row);
      }
    },
  },
  {
    id: 'embedding-pca', title: 'Token embeddings, PCA to 2-D',
    render(box, d) {
      const W = 300, H = 260, pad = 12;
      const xs = d.pca.points.map((p) => p[0]);
      const ys = d.pca.points.map((p) => p[1]);
      const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
      const cv = document.createElement('canvas');
      cv.width = W;
      cv.height = H;
      const g = cv.getContext('2d');
      g.font = '11px monospace';
      d.pca.points.forEach(([x, y], i) => {
        const ch = d.vocab[i];
        const s = ch === '\n' ? '⏎' : ch === ' ' ? '·' : ch;
        g.fillStyle = /[a-z]/.test(ch) ? '#1f77b4' : /[A-Z]/.test(ch) ? '#d62728' : '#2ca02c';
        g.fillText(s, pad + ((x - x0) / (x1 - x0 || 1)) * (W - 2 * pad), H - pad - ((y - y0) / (y1 - y0 || 1)) * (H - 2 * pad));
      });
      box.appendChild(cv);
      const note = document.createElement('div');
      note.className = 'muted';
      note.textContent = `PC1 ${(100 * d.pca.explained[0]).toFixed(1)}%, PC2 ${(100 * d.pca.explained[1]).toFixed(1)}% of the variance; blue lower case, red capitals, green the rest`;
      box.appendChild(note);
    },
  },
];

let lastInside = null;
function renderInside() {
  if (!lastInside) return;
  const opts = { layer: Number($('inside-layer').value || 0), head: Number($('inside-head').value || 0) };
  const root = $('inside-views');
  root.innerHTML = '';
  for (const v of INSIDE_VIEWS) {
    const box = document.createElement('div');
    box.className = 'view';
    box.dataset.view = v.id;
    box.innerHTML = `<h3>${v.title}</h3>`;
    v.render(box, lastInside, opts);
    root.appendChild(box);
  }
}

// ---------------------------------------------------------------- messages from the engine

let sampleId = 0;
worker.addEventListener('message', (e) => {
  const m = e.data;
  switch (m?.type) {
    case 'ready':
      $('backend').textContent = m.label;
      $('backend').dataset.backend = m.backend;
      $('budget').textContent = `${mib(m.budgetBytes)}${m.maxBufferBytes ? `, ${mib(m.maxBufferBytes)} a buffer` : ''}`;
      showStored(m.stored);
      status(`ready${m.note ? ` - ${m.note}` : ''}`);
      setState('ready');
      break;
    case 'refused':
      $('refusal').textContent = `Refused: ${m.reason}`;
      status(`refused before training: ${m.reason}`, true);
      setRunning(false);
      setState('refused');
      break;
    case 'model':
      showModel(m);
      if (m.resumed || m.loaded) status(`${m.resumed ? 'resumed from browser storage' : 'loaded the checkpoint'} at step ${m.iter}`);
      if (m.loaded) setState('loaded');
      break;
    case 'step':
      studio.records.push(m);
      $('s-step').textContent = `${m.iter} / ${m.maxIters}`;
      $('s-loss').textContent = m.loss.toFixed(4);
      $('s-tps').textContent = Math.round(m.tokensPerSec).toLocaleString('en-US');
      $('s-eta').textContent = fmtTime(m.etaSec);
      // The cpu backend's WebAssembly heap (it only grows): memory the tab really holds.
      if (m.heapBytes && model) $('s-mem').textContent = `${mib(model.memory.totalBytes)} est., heap ${mib(m.heapBytes)}`;
      drawCurve();
      if ($('auto-sample').checked && studio.records.length % 25 === 0) requestSample();
      break;
    case 'eval':
      studio.evals.push(m);
      $('s-val').textContent = m.val_loss.toFixed(4);
      drawCurve();
      break;
    case 'state':
      if (m.state === 'training') {
        setRunning(true);
        status('training...');
      } else if (m.state === 'paused') {
        $('pause').disabled = true;
        $('resume').disabled = false;
        status('paused');
      } else {
        setRunning(false);
        status(`${m.state} at step ${m.iter}`);
        model && (model.iter = m.iter);
      }
      setState(m.state);
      break;
    case 'stored':
      showStored(m.stored);
      break;
    case 'sample':
      studio.lastSample = m.text;
      $('sample-out').textContent = m.text;
      break;
    case 'logprobs':
      studio.logprobs = { tokens: m.tokens, logprobs: m.logprobs };
      break;
    case 'files':
      offerFiles(m.what, m.files);
      break;
    case 'inside':
      lastInside = m;
      renderInside();
      document.body.dataset.inside = 'shown';
      break;
    case 'error':
      status(`error${m.request ? ` (${m.request})` : ''}: ${m.message}`, true);
      if (m.request === undefined || ['start', 'resume-stored', 'lora', 'load-files'].includes(m.request)) {
        setRunning(false);
        setState('error');
      }
      break;
  }
});

function requestSample() {
  send({ type: 'sample', id: ++sampleId, prompt: $('prompt').value, maxNewTokens: Number($('sample-n').value) || 200, temperature: Number($('temperature').value), topK: Number($('top-k').value) || 0, seed: sampleId });
}

const runOptions = () => ({ evalInterval: Math.max(1, Number($('eval-every').value) || 100), saveInterval: 100 });

$('train').addEventListener('click', async () => {
  try {
    $('refusal').textContent = '';
    setState('starting');
    status('reading the text...');
    text = await chosenText();
    $('text-info').textContent = `${textName}: ${text.length.toLocaleString('en-US')} characters, ${new Set(text).size} distinct`;
    studio.records = [];
    studio.evals = [];
    drawCurve();
    const steps = Math.max(1, Number($('steps').value) || 2000);
    send({
      type: 'start', text, size: $('size').value, attention: $('attention').value, ...runOptions(),
      settings: { max_iters: steps, lr_decay_iters: steps, warmup_iters: Math.min(20, steps), batch_size: Math.max(1, Number($('batch').value) || 8), learning_rate: Number($('lr').value) || 1e-2, min_lr: (Number($('lr').value) || 1e-2) / 10 },
    });
  } catch (err) {
    status(String(err.message ?? err), true);
    setState('error');
  }
});
$('pause').addEventListener('click', () => send({ type: 'pause' }));
$('resume').addEventListener('click', () => send({ type: 'resume' }));
$('stop').addEventListener('click', () => send({ type: 'stop' }));
$('sample').addEventListener('click', requestSample);
$('resume-stored').addEventListener('click', () => {
  studio.records = [];
  studio.evals = [];
  send({ type: 'resume-stored', ...runOptions(), maxIters: Number($('steps').value) || undefined });
});
$('download').addEventListener('click', () => send({ type: 'download' }));
$('download-adapter').addEventListener('click', () => send({ type: 'download-adapter' }));
$('clear-storage').addEventListener('click', () => send({ type: 'clear-storage' }));
$('inside-run').addEventListener('click', () => send({ type: 'inside', prompt: $('inside-prompt').value, k: 12 }));
$('inside-layer').addEventListener('change', renderInside);
$('inside-head').addEventListener('change', renderInside);

async function loadCheckpointFiles(list) {
  const files = {};
  for (const f of list) files[f.name] = new Uint8Array(await f.arrayBuffer());
  // The current text (if any) stays the training text; else the bundled one.
  text ??= await bundledText();
  send({ type: 'load-files', files, text });
}
$('load-files').addEventListener('change', (e) => loadCheckpointFiles([...e.target.files]).catch((err) => status(String(err), true)));
$('load-folder').addEventListener('change', (e) => loadCheckpointFiles([...e.target.files]).catch((err) => status(String(err), true)));

$('lora').addEventListener('click', async () => {
  const f = $('lora-file').files[0];
  const second = f ? await f.text() : $('lora-text').value;
  if (!second) {
    status('give the second text for fine-tuning (a file or pasted text)', true);
    return;
  }
  studio.records = [];
  studio.evals = [];
  textName = f ? f.name : 'fine-tuning text';
  const steps = Math.max(1, Number($('lora-steps').value) || 200);
  send({ type: 'lora', text: second, rank: Number($('lora-rank').value) || 4, steps, learningRate: Number($('lora-lr').value) || 5e-3, evalInterval: Math.max(1, Math.min(50, steps)) });
});

// A dropped text file becomes the chosen text.
document.addEventListener('dragover', (e) => e.preventDefault());
document.addEventListener('drop', (e) => {
  e.preventDefault();
  const f = e.dataTransfer?.files?.[0];
  if (!f) return;
  const dt = new DataTransfer();
  dt.items.add(f);
  $('text-file').files = dt.files;
  document.querySelector('input[name=src][value=file]').checked = true;
  $('text-info').textContent = `dropped: ${f.name}`;
});

// For tests and the console: ask the engine for log-probabilities of a text.
studio.requestLogprobs = (t) => {
  studio.logprobs = null;
  send({ type: 'logprobs', text: t });
};

if (!crossOriginIsolated) status('warning: the page is not cross-origin isolated; serve it with `attn studio` (COOP/COEP headers)', true);
else status(`starting the ${device} backend...`);
send({ type: 'init', device, budgetMiB });

// The engine: runs in a dedicated Web Worker, where blocking (Atomics.wait) is allowed, which
// the synchronous backends need. With WebGPU the device itself lives on the page (main.js
// hosts it); without an adapter the cpu backend runs the WebAssembly kernels on Web Workers.
import {
  connectWebGPUFromPage, getBackend, setDefaultBackend, loadGPTFromUrl, generateStream, BpeTokenizer,
} from '../../dist/src/index.js';

let model = null;
let tokenizer = null;
let backend = null;

const post = (msg) => self.postMessage(msg);

function describeAdapter(a) {
  const parts = [a.vendor, a.architecture, a.device, a.description].filter((s) => s);
  return `webgpu (${parts.join(' ') || 'unnamed adapter'}, ${a.backend})`;
}

async function init({ device, checkpoint, halfWeights }) {
  let label;
  let note = '';
  if (device !== 'cpu') {
    try {
      backend = await connectWebGPUFromPage();
      label = describeAdapter(backend.adapter);
    } catch (e) {
      note = `no WebGPU: ${e.message}; falling back to the cpu backend`;
    }
  }
  if (!backend) {
    backend = await getBackend('cpu');
    label = `cpu (${backend.rt.threads} Web Workers)`;
  }
  setDefaultBackend(backend);
  const t0 = performance.now();
  const loaded = await loadGPTFromUrl(checkpoint, {
    backend,
    onProgress: (loaded, total) => post({ type: 'progress', loaded, total }),
  });
  model = loaded.model;
  tokenizer = loaded.tokenizer;
  if (halfWeights) {
    // float16 on webgpu, bfloat16 on cpu: half the memory of the weight matrices.
    const saved = model.halfWeights();
    const dtype = model.transformer.wte.weight.dtype;
    label += `, weights ${dtype} (${(saved / 2 ** 20).toFixed(1)} MiB saved)`;
  }
  if (!tokenizer) throw new Error(`${checkpoint} has no tokenizer files`);
  const c = loaded.config;
  post({
    type: 'ready', backend: backend.name, label, note,
    model: `${c.n_layer} layers, ${c.n_head} heads, ${c.n_embd} wide, vocabulary ${c.vocab_size}`,
    loadMs: Math.round(performance.now() - t0),
  });
}

async function generate({ prompt, maxNewTokens, temperature, seed }) {
  const eot = tokenizer.eotToken;
  const ids = tokenizer instanceof BpeTokenizer ? tokenizer.encode(prompt, { allowedSpecial: 'all' }) : tokenizer.encode(prompt);
  if (ids.length === 0) ids.push(eot ?? 0);
  const t0 = performance.now();
  let n = 0;
  const stream = generateStream(model, ids, {
    maxNewTokens, temperature, seed, eotToken: eot, decode: (x) => tokenizer.decode(x), backend,
  });
  for await (const ev of stream) {
    n++;
    if (ev.text) post({ type: 'text', text: ev.text });
  }
  const s = (performance.now() - t0) / 1000;
  post({ type: 'done', tokens: n, seconds: s });
}

self.addEventListener('message', async (e) => {
  const msg = e.data;
  try {
    if (msg?.type === 'init') await init(msg);
    else if (msg?.type === 'generate') await generate(msg);
  } catch (err) {
    post({ type: 'error', message: String(err?.stack ?? err) });
  }
});

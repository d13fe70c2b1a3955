// The studio's engine, in a module Web Worker (the backends block on Atomics.wait, which a
// page's main thread may not). It trains with src/studio/trainer.ts, stores checkpoints in the
// origin private file system (OPFS), and answers the page's questions (samples, log-probs,
// the Inside views). WebGPU's device lives on the page (main.js hosts it).
import { connectWebGPUFromPage, getBackend, setDefaultBackend, gptConfig } from '../../dist/src/index.js';
import { StudioTrainer, STUDIO_SIZES, estimateTrainingMemory, memoryRefusal, encodeText, loadRefusal } from '../../dist/src/studio/trainer.js';
import { attentionMaps, nextTokenDistribution, embeddingPca } from '../../dist/src/studio/inside.js';

const post = (msg, transfer) => self.postMessage(msg, transfer ?? []);

let backend = null;
let trainer = null;
let budgetBytes = 0;
let maxBufferBytes = Infinity;
/** The run in progress: { maxIters, evalInterval, saveInterval, mode } */
let run = null;
let paused = false;
let stopRequested = false;
let running = false;

function describeAdapter(a) {
  const parts = [a.vendor, a.architecture, a.device, a.description].filter((s) => s);
  return `webgpu (${parts.join(' ') || 'unnamed adapter'}, ${a.backend})`;
}

async function init({ device, budgetMiB }) {
  let label;
  let note = '';
  if (device !== 'cpu') {
    try {
      backend = await connectWebGPUFromPage();
      label = describeAdapter(backend.adapter);
    } catch (e) {
      note = `no WebGPU: ${e.message}; falling back to the cpu backend`;
      backend = null;
    }
  }
  if (!backend) {
    backend = await getBackend('cpu');
    label = `cpu (WebAssembly SIMD on ${backend.rt.threads} Web Workers)`;
  }
  setDefaultBackend(backend);
  // WebAssembly memory is 32-bit (4 GiB at most, shared by weights, activations and the
  // workers' scratch); a GPU is given the same default. ?budget=MiB overrides it.
  budgetBytes = (budgetMiB > 0 ? budgetMiB : 2048) * 2 ** 20;
  const limits = backend.adapter?.limits;
  if (limits?.maxStorageBufferBindingSize) maxBufferBytes = limits.maxStorageBufferBindingSize;
  post({ type: 'ready', backend: backend.name, label, note, budgetBytes, maxBufferBytes: Number.isFinite(maxBufferBytes) ? maxBufferBytes : null, stored: await storedInfo() });
}

// ---------------------------------------------------------------- browser storage (OPFS)

async function storageDir() {
  if (!navigator.storage?.getDirectory) throw new Error('this browser has no origin private file system (navigator.storage.getDirectory)');
  const root = await navigator.storage.getDirectory();
  return root.getDirectoryHandle('attn-studio', { create: true });
}

async function readJsonFile(dir, name) {
  try {
    const f = await (await dir.getFileHandle(name)).getFile();
    return JSON.parse(await f.text());
  } catch {
    return null;
  }
}

async function writeFile(dir, name, bytes) {
  const h = await dir.getFileHandle(name, { create: true });
  const w = await h.createWritable();
  await w.write(bytes);
  await w.close(); // the new contents replace the old only here
}

/** Writes the checkpoint into a fresh folder, then points current.json at it, then removes the old one. */
async function saveToStorage() {
  const dir = await storageDir();
  const files = trainer.checkpointFiles({ resumable: true });
  const name = `ckpt-${trainer.iter}-${Date.now()}`;
  const sub = await dir.getDirectoryHandle(name, { create: true });
  for (const [f, bytes] of Object.entries(files)) await writeFile(sub, f, bytes);
  const prev = await readJsonFile(dir, 'current.json');
  const info = { folder: name, iter: trainer.iter, tokens: trainer.tokens, model: trainer.model.config, savedAt: new Date().toISOString() };
  await writeFile(dir, 'current.json', new TextEncoder().encode(JSON.stringify(info)));
  if (prev?.folder && prev.folder !== name) await dir.removeEntry(prev.folder, { recursive: true }).catch(() => undefined);
  post({ type: 'stored', stored: info });
}

async function storedInfo() {
  try {
    const dir = await storageDir();
    return await readJsonFile(dir, 'current.json');
  } catch {
    return null;
  }
}

async function loadFromStorage() {
  const dir = await storageDir();
  const cur = await readJsonFile(dir, 'current.json');
  if (!cur) throw new Error('nothing is stored in this browser yet');
  const sub = await dir.getDirectoryHandle(cur.folder);
  const files = {};
  for await (const [name, h] of sub.entries()) files[name] = new Uint8Array(await (await h.getFile()).arrayBuffer());
  return files;
}

async function clearStorage() {
  const root = await navigator.storage.getDirectory();
  await root.removeEntry('attn-studio', { recursive: true }).catch(() => undefined);
  post({ type: 'stored', stored: null });
}

// ---------------------------------------------------------------- training

/** The model's shape in the GPT config's names (a decoder family's mapped onto them), for the page. */
function shapeOf(model) {
  const c = model.config;
  if (c.n_layer !== undefined) return { ...c, family: 'gpt' };
  return {
    family: c.model_type, n_layer: c.num_hidden_layers, n_head: c.num_attention_heads, n_kv_head: c.num_key_value_heads,
    n_embd: c.hidden_size, block_size: c.block_size, vocab_size: c.vocab_size,
    attention: c.sliding_window ? `${c.model_type}: RoPE, sliding window ${c.sliding_window}` : `${c.model_type}: RoPE`,
  };
}

function modelInfo() {
  const shape = shapeOf(trainer.model);
  // The estimate's formula is a GPT's; a decoder's count is exact, its activations approximate.
  const c = trainer.model.config;
  const gptShape = c.n_layer !== undefined ? c : { n_layer: shape.n_layer, n_head: shape.n_head, n_kv_head: shape.n_kv_head, n_embd: shape.n_embd, vocab_size: shape.vocab_size };
  const m = estimateTrainingMemory({ ...gptShape, block_size: trainer.context }, trainer.settings.batch_size);
  const params = trainer.model.numParameters();
  const memory = { ...m, parameters: params, stateBytes: 16 * params, totalBytes: 16 * params + m.activationBytes };
  return {
    params, config: shape, context: trainer.context, iter: trainer.iter, tokens: trainer.tokens,
    memory, lora: trainer.lora ? trainer.lora.summary() : null,
    tokenizer: trainer.tokenizer.kind ?? 'char', vocab: trainer.tokenizer.chars ?? null,
  };
}

function start({ text, size, attention, settings, evalInterval, saveInterval }) {
  if (running) throw new Error('a run is already in progress');
  const shape = STUDIO_SIZES[size];
  if (!shape) throw new Error(`unknown model size '${size}'`);
  const vocab = new Set(text).size;
  const extra = attention === 'local' ? { attention, attn_window: Math.max(8, shape.block_size >> 2) } : attention === 'dense' ? {} : { attention };
  const config = gptConfig({ ...shape, ...extra, vocab_size: vocab, dropout: 0, bias: false });
  const refusal = memoryRefusal(config, settings.batch_size, budgetBytes, maxBufferBytes);
  const m = estimateTrainingMemory(config, settings.batch_size);
  if (refusal) {
    post({ type: 'refused', reason: refusal, memory: m });
    return;
  }
  trainer?.dispose();
  trainer = StudioTrainer.create(text, { ...shape, ...extra }, { backend, settings });
  post({ type: 'model', ...modelInfo() });
  run = { maxIters: settings.max_iters, evalInterval, saveInterval, mode: 'pretrain' };
  void loop();
}

async function resumeStored({ evalInterval, saveInterval, maxIters }) {
  if (running) throw new Error('a run is already in progress');
  const files = await loadFromStorage();
  trainer?.dispose();
  trainer = StudioTrainer.fromFiles(files, null, { backend });
  post({ type: 'model', ...modelInfo(), resumed: true });
  run = { maxIters: maxIters ?? trainer.settings.max_iters, evalInterval, saveInterval, mode: 'pretrain' };
  void loop();
}

const tick = () => new Promise((r) => setTimeout(r, 0));

async function loop() {
  running = true;
  paused = false;
  stopRequested = false;
  const t0 = performance.now();
  const tokens0 = trainer.tokens;
  let lastSave = trainer.iter;
  post({ type: 'state', state: 'training' });
  try {
    if (trainer.iter === 0 || run.mode === 'lora') post({ type: 'eval', iter: trainer.iter, ...trainer.evaluate() });
    let pausedMs = 0;
    while (trainer.iter < run.maxIters && !stopRequested) {
      if (paused) {
        const p0 = performance.now();
        post({ type: 'state', state: 'paused' });
        while (paused && !stopRequested) await new Promise((r) => setTimeout(r, 50));
        pausedMs += performance.now() - p0;
        if (stopRequested) break;
        post({ type: 'state', state: 'training' });
      }
      // Steps for ~150 ms, then let messages in (pause, stop, sample, inside).
      const c0 = performance.now();
      let s;
      do {
        s = trainer.step();
        if (trainer.iter % run.evalInterval === 0 || trainer.iter === run.maxIters) post({ type: 'eval', iter: trainer.iter, ...trainer.evaluate() });
      } while (performance.now() - c0 < 150 && trainer.iter < run.maxIters && trainer.iter % run.evalInterval !== 0);
      const secs = (performance.now() - t0 - pausedMs) / 1000;
      const tps = (trainer.tokens - tokens0) / secs;
      const left = ((run.maxIters - trainer.iter) * trainer.settings.batch_size * trainer.context) / tps;
      post({ type: 'step', iter: s.iter, loss: s.loss, lr: s.lr, gradNorm: s.gradNorm, tokensPerSec: tps, etaSec: left, maxIters: run.maxIters, tokens: trainer.tokens, elapsedSec: secs, heapBytes: backend.rt?.memory?.buffer?.byteLength ?? null });
      if (run.mode === 'pretrain' && trainer.iter - lastSave >= run.saveInterval) {
        await saveToStorage();
        lastSave = trainer.iter;
      }
      await tick();
    }
    if (run.mode === 'pretrain' && trainer.iter !== lastSave) await saveToStorage();
    post({ type: 'state', state: stopRequested ? 'stopped' : 'done', iter: trainer.iter });
  } catch (e) {
    post({ type: 'error', message: String(e?.stack ?? e) });
  } finally {
    running = false;
  }
}

// ---------------------------------------------------------------- the other requests

function loadFiles({ files, text }) {
  if (running) throw new Error('stop the run before loading a checkpoint');
  // The weights in float32 (a bfloat16 checkpoint doubles), before anything is allocated; the
  // model held now is freed first, so it does not count.
  const refusal = loadRefusal(files, budgetBytes);
  if (refusal) {
    post({ type: 'refused', reason: refusal });
    return;
  }
  trainer?.dispose();
  trainer = StudioTrainer.fromFiles(files, text ?? null, { backend });
  post({ type: 'model', ...modelInfo(), loaded: true });
}

// targets: left out, the trainer's own (studioLoraTargets: a GPT's c_attn and c_proj, a decoder's q/k/v/o projections).
function startLora({ text, rank, targets, steps, learningRate, evalInterval }) {
  if (running) throw new Error('stop the run before fine-tuning');
  if (!trainer) throw new Error('train or load a model first');
  const summary = trainer.startLora(text, {
    rank, targets, baseName: 'attn-studio-base',
    settings: { max_iters: steps, lr_decay_iters: steps, learning_rate: learningRate, min_lr: learningRate / 10, warmup_iters: Math.min(10, steps) },
  });
  post({ type: 'model', ...modelInfo(), lora: summary });
  run = { maxIters: steps, evalInterval, saveInterval: Infinity, mode: 'lora' };
  void loop();
}

function inside({ prompt, k }) {
  const ids = encodeText(trainer.tokenizer, prompt).slice(-trainer.model.config.block_size);
  let maps = null;
  let mapsNote = '';
  try {
    maps = attentionMaps(trainer.model, ids);
  } catch (e) {
    mapsNote = e.message;
  }
  const next = nextTokenDistribution(trainer.model, ids, k ?? 12).map(({ id, p }) => ({ token: trainer.tokenizer.decode([id]), p }));
  const pca = embeddingPca(trainer.model);
  const vocab = trainer.tokenizer.chars ?? [...Array(pca.rows).keys()].map((i) => trainer.tokenizer.decode([i]));
  post({ type: 'inside', tokens: ids.map((i) => trainer.tokenizer.decode([i])), maps, mapsNote, next, pca, vocab });
}

self.addEventListener('message', async (e) => {
  const m = e.data;
  try {
    switch (m?.type) {
      case 'init': await init(m); break;
      case 'start': start(m); break;
      case 'resume-stored': await resumeStored(m); break;
      case 'pause': paused = true; break;
      case 'resume': paused = false; break;
      case 'stop': stopRequested = true; break;
      case 'sample': post({ type: 'sample', text: trainer.sample(m.prompt, m), id: m.id }); break;
      case 'logprobs': post({ type: 'logprobs', ...trainer.logprobs(m.text), id: m.id }); break;
      case 'download': post({ type: 'files', what: 'checkpoint', files: trainer.checkpointFiles() }); break;
      case 'download-adapter': post({ type: 'files', what: 'adapter', files: trainer.adapterFiles() }); break;
      case 'load-files': loadFiles(m); break;
      case 'lora': startLora(m); break;
      case 'inside': inside(m); break;
      case 'clear-storage': await clearStorage(); break;
      default: if (!String(m?.type ?? '').startsWith('attn-webgpu-')) throw new Error(`unknown request ${JSON.stringify(m?.type)}`);
    }
  } catch (err) {
    post({ type: 'error', message: String(err?.message ?? err), request: m?.type });
  }
});

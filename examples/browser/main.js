// The page: starts the engine worker, hosts its WebGPU device (the device must live on a
// thread that never blocks), and streams generated text into the page.
import { hostWebGPUForWorker } from '../../dist/src/backend/webgpu/browser.js';

const params = new URLSearchParams(location.search);
// ?device=cpu forces the cpu backend; ?checkpoint=URL picks the checkpoint directory.
const device = params.get('device') === 'cpu' ? 'cpu' : 'webgpu';
const checkpoint = params.get('checkpoint') ?? '/out/shakespeare-char-tiny/last/';
// ?weights=16 stores the weight matrices in 16 bits (float16 on webgpu, bfloat16 on cpu).
const halfWeights = params.get('weights') === '16';

const $ = (id) => document.getElementById(id);
const status = (s) => { $('status').textContent = s; };

const worker = new Worker(new URL('./engine-worker.js', import.meta.url), { type: 'module' });
worker.addEventListener('error', (e) => status(`engine worker failed: ${e.message}`));
if (device === 'webgpu') {
  // Resolves null when there is no adapter; the worker then falls back to cpu.
  hostWebGPUForWorker(worker).catch((e) => console.error(e));
}

worker.addEventListener('message', (e) => {
  const m = e.data;
  switch (m?.type) {
    case 'progress':
      status(`loading the checkpoint: ${(m.loaded / 1024).toFixed(0)} KiB${m.total ? ` of ${(m.total / 1024).toFixed(0)} KiB` : ''}`);
      break;
    case 'ready':
      $('backend').textContent = m.label;
      $('backend').dataset.backend = m.backend;
      $('model').textContent = m.model;
      status(`ready (loaded in ${m.loadMs} ms)${m.note ? ` - ${m.note}` : ''}`);
      $('generate').disabled = false;
      document.body.dataset.state = 'ready';
      break;
    case 'text':
      $('output').textContent += m.text;
      break;
    case 'done':
      status(`${m.tokens} tokens in ${m.seconds.toFixed(2)} s (${(m.tokens / m.seconds).toFixed(1)} tokens/s)`);
      $('generate').disabled = false;
      document.body.dataset.state = 'done';
      break;
    case 'error':
      status(`error: ${m.message}`);
      $('generate').disabled = false;
      document.body.dataset.state = 'error';
      break;
  }
});

$('generate').addEventListener('click', () => {
  $('generate').disabled = true;
  document.body.dataset.state = 'generating';
  $('output').textContent = $('prompt').value;
  status('generating...');
  worker.postMessage({
    type: 'generate',
    prompt: $('prompt').value,
    maxNewTokens: Number($('tokens').value) || 200,
    temperature: Number($('temperature').value),
    seed: 1337,
  });
});

if (!crossOriginIsolated) status('warning: the page is not cross-origin isolated; serve it with serve.mjs (COOP/COEP headers)');
else status(`starting the ${device} backend...`);
$('checkpoint').textContent = checkpoint;
worker.postMessage({ type: 'init', device, halfWeights, checkpoint: new URL(checkpoint, location.href).href });

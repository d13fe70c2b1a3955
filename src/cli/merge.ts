// attn merge: LoRA adapters folded into their base model, saved as a plain model directory.
import { DecoderLM } from '../models/decoder.js';
import { save } from '../models/files.js';
import { readHFConfig } from '../models/hf-decoder-files.js';
import { saveDecoderDir } from '../models/hf-decoder-files.js';
import { loadAdapters } from '../nn/lora-files.js';
import { mergeLora } from '../nn/lora.js';
import { loadTokenizer, type Tokenizer } from '../tokenizers/index.js';
import { type Flags, UsageError } from './args.js';
import { adapterBaseOf, backendFromFlags, loadModelDir, requireDir } from './common.js';

export async function runMerge(f: Flags): Promise<void> {
  const adapter = f.required('adapter', 'an adapter directory (adapter_config.json + adapter_model.safetensors)');
  const out = f.required('out', 'where the merged model goes');
  const dtype = f.choice('dtype', ['float32', 'bfloat16'] as const) ?? 'float32';
  const backend = await backendFromFlags(f);
  const baseFlag = f.string('model');
  f.done();
  await requireDir('merge', 'adapter', adapter);
  const base = baseFlag ?? (await adapterBaseOf(adapter));
  if (!base) throw new UsageError(`merge: ${adapter}'s adapter_config.json names no base_model_name_or_path; pass --model BASE`);
  const model = await loadModelDir('merge', base, backend, undefined);
  const handle = await loadAdapters(model, adapter, { dropout: 0 });
  mergeLora(handle);
  let tok: Tokenizer | null = null;
  try {
    tok = await loadTokenizer(base);
  } catch {
    tok = null;
  }
  if (model instanceof DecoderLM) {
    await saveDecoderDir(model, out, { hfConfig: await readHFConfig(base), dtype });
    if (tok) await tok.save(out);
  } else {
    if (dtype !== 'float32') throw new UsageError('merge: --dtype bfloat16 is for Hugging Face decoders; attn GPT checkpoints are saved in float32');
    await save(out, model, tok);
  }
  process.stderr.write(`merged ${handle.layers.length} adapted layers of ${base} into ${out}\n`);
  model.dispose();
}

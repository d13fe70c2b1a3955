// attn info: the backend in use, and a model's size, config and cost per token.
import { cpus } from 'node:os';
import { DecoderLM } from '../models/decoder.js';
import { fullGPTConfig, GPT, gptConfig, type GPTConfig } from '../models/gpt.js';
import { ARCHITECTURE_OF } from '../models/hf-decoder.js';
import { readHFConfig } from '../models/hf-decoder-files.js';
import { load } from '../models/files.js';
import { type Flags, UsageError } from './args.js';
import type { AdapterDescription } from '../backend/webgpu/protocol.js';
import { backendFromFlags, loadModelDir } from './common.js';
import { describeMpi } from '../train/parallel/mpi.js';

export async function runInfo(f: Flags): Promise<void> {
  const dir = f.string('model');
  const presetName = f.string('preset');
  const backend = await backendFromFlags(f);
  f.done();
  const kernels = (backend as { describeKernels?: () => string }).describeKernels?.();
  console.log(`backend: ${backend.name}${kernels ? ` (${kernels})` : ''}`);
  const adapter = (backend as { adapter?: AdapterDescription }).adapter;
  if (adapter) {
    const name = [adapter.vendor, adapter.architecture, adapter.device, adapter.description].filter((s) => s).join(' / ');
    console.log(`adapter: ${name || '(no description)'} via Dawn ${adapter.backend}`);
    console.log(`adapter features: ${adapter.features.join(', ') || 'none'}`);
    console.log(`adapter limits: ${Object.entries(adapter.limits).map(([k, v]) => `${k}=${v}`).join(', ')}`);
  }
  console.log(`machine: ${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} cores, Node ${process.version}`);
  console.log(describeMpi());
  let cfg: GPTConfig | undefined;
  const modelType = dir ? (await readHFConfig(dir).catch(() => ({} as Record<string, unknown>)))['model_type'] : undefined;
  if (dir && (modelType === 'bert' || modelType === 't5')) {
    // Hugging Face BERT and T5: the encoder (-decoder) families.
    const { model, kind } = await load(dir, { backend });
    const c = model.config as unknown as Record<string, unknown>;
    console.log(`model: ${kind === 't5' ? `t5 (T5ForConditionalGeneration), ${String(c['num_layers'])}+${String(c['num_decoder_layers'])} layers, d_model ${String(c['d_model'])}, ${String(c['num_heads'])} heads, ${String(c['feed_forward_proj'])}` : `bert, ${String(c['num_hidden_layers'])} layers, hidden ${String(c['hidden_size'])}, ${String(c['num_attention_heads'])} heads${c['num_labels'] ? `, ${String(c['num_labels'])}-class head` : ''}${c['mlm_head'] ? ', masked-LM head' : ''}`}`);
    console.log(`parameters: ${model.numParameters().toLocaleString('en-US')}`);
    console.log(`config: ${JSON.stringify(c)}`);
    model.dispose();
    return;
  }
  if (dir) {
    const model = await loadModelDir('info', dir, backend);
    if (model instanceof DecoderLM) {
      const c = model.config;
      console.log(`model: ${c.model_type} (${ARCHITECTURE_OF[c.model_type]}), ${c.num_hidden_layers} layers, hidden ${c.hidden_size}, ${c.num_attention_heads} heads (${c.num_key_value_heads} key/value), head_dim ${c.head_dim}, context ${c.block_size}`);
      console.log(`parameters: ${model.numParameters().toLocaleString('en-US')}`);
      console.log(`FLOPs per token (training, 6N + 12·L·H·Dh·T): ${model.flopsPerToken().toLocaleString('en-US')}`);
      console.log(`config: ${JSON.stringify(c)}`);
      model.dispose();
      return;
    }
    cfg = model.config;
    model.dispose();
  } else if (presetName) {
    const { PRESETS } = await import('../train/presets.js');
    const p = (PRESETS as Record<string, Record<string, unknown>>)[presetName];
    if (!p) throw new UsageError(`info: unknown preset '${presetName}' (known: ${Object.keys(PRESETS).join(', ')})`);
    const known = fullGPTConfig(gptConfig());
    const fields = Object.fromEntries(Object.entries(p).filter(([k]) => k in known));
    cfg = gptConfig({ vocab_size: 65, ...fields });
  }
  if (!cfg) return;
  const params = GPT.countParameters(cfg);
  console.log(`parameters: ${params.toLocaleString('en-US')}`);
  console.log(`FLOPs per token (training, 6N + 12·L·C·T): ${GPT.flopsPerToken(cfg).toLocaleString('en-US')}`);
  console.log(`config: ${JSON.stringify(cfg)}`);
}

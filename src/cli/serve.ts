// attn serve: a model over the OpenAI HTTP API with continuous batching (src/serve).
import { existsSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { ApiServer } from '../serve/server.js';
import { BpeTokenizer, loadTokenizer, type Tokenizer } from '../tokenizers/index.js';
import { type Flags, UsageError } from './args.js';
import { adapterBaseOf, backendFromFlags, describeQuantized, generationStopIds, loadModelDir, quantSpecFromFlags, requireDir, stopIdsOf, templateOf, tokenizerOfModel } from './common.js';

/** --name or --name_with_underscores. */
function str(f: Flags, name: string): string | undefined {
  return f.string(name) ?? f.string(name.replace(/-/g, '_'));
}
function int(f: Flags, name: string, min: number): number | undefined {
  return f.number(name, { integer: true, min }) ?? f.number(name.replace(/-/g, '_'), { integer: true, min });
}


export async function runServe(f: Flags): Promise<void> {
  let dir = f.required('model', 'a model directory');
  let adapter = f.string('adapter');
  const host = f.string('host') ?? '127.0.0.1';
  const port = f.number('port', { integer: true, min: 0, max: 65535 }) ?? 8080;
  const apiKey = str(f, 'api-key') ?? (process.env['ATTN_API_KEY'] || undefined);
  const maxBatch = int(f, 'max-batch', 1) ?? 16;
  const maxTokens = int(f, 'max-tokens', 1) ?? 4096;
  const maxQueue = int(f, 'max-queue', 0) ?? 4 * maxBatch;
  const maxBody = int(f, 'max-body', 1024) ?? 2 ** 20;
  const name = str(f, 'model-name');
  const quiet = f.bool('quiet');
  const quant = quantSpecFromFlags(f, f.choice('dtype', ['float32', 'int8', 'int4', 'int4z'] as const) ?? 'float32');
  const backend = await backendFromFlags(f);
  f.done();
  if (!dir.endsWith('.gguf')) {
    await requireDir('serve', 'model', dir);
    if (adapter === undefined && existsSync(join(dir, 'adapter_config.json'))) {
      adapter = dir;
      dir = (await adapterBaseOf(dir)) ?? dir;
    }
  }
  const model = await loadModelDir('serve', dir, backend, adapter, quant);
  process.stderr.write(describeQuantized(model));
  if (model.createKVCache().layers.some((l) => l.state)) throw new UsageError('serve: linear-attention models keep running sums, not a KV cache: continuous batching needs a KV cache');
  const tokDir = adapter && existsSync(join(adapter, 'tokenizer_config.json')) ? adapter : dir;
  let tok: Tokenizer;
  try {
    tok = adapter && tokDir === adapter ? await loadTokenizer(tokDir) : await tokenizerOfModel(dir, model);
  } catch (e) {
    throw new UsageError(`serve: ${dir}: no tokenizer (${(e as Error).message})`);
  }
  const template = dir.endsWith('.gguf') ? null : await templateOf(tokDir);
  const stopIds = stopIdsOf(model, tok);
  const chatStop = new Set([...stopIds, ...(dir.endsWith('.gguf') ? [] : await generationStopIds(dir))]);
  if (template?.eosToken) {
    const ids = tok instanceof BpeTokenizer ? tok.encode(template.eosToken, { allowedSpecial: 'all' }) : tok.kind === 'hf' ? (tok as Tokenizer & { encode(t: string, o?: { addSpecialTokens?: boolean }): number[] }).encode(template.eosToken, { addSpecialTokens: false }) : tok.encode(template.eosToken);
    if (ids.length === 1) chatStop.add(ids[0]!);
  }
  const modelId = name ?? basename(resolve(adapter ?? dir));
  const app = new ApiServer({
    model, tokenizer: tok, modelId, backend, chatTemplate: template, stopIds, chatStopIds: [...chatStop], apiKey, maxBatch, maxTokens, maxQueue, maxBodyBytes: maxBody,
    log: quiet ? undefined : (line) => process.stderr.write(`${new Date().toISOString()} ${line}\n`),
  });
  const addr = await app.listen(port, host);
  process.stderr.write(`chat template: ${template ? 'the model\'s' : 'plain "role: content" lines (the model has none)'}; max batch ${maxBatch}, queue ${maxQueue}${apiKey ? ', API key required' : ''}\n`);
  process.stdout.write(`attn serve: '${modelId}' on http://${addr.address}:${addr.port}/v1\n`);
  let stopping = false;
  const stop = (sig: string): void => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`${sig}: no new connections; finishing ${app.scheduler.batchSize + app.scheduler.queueLength} running sequences\n`);
    void app.shutdown().then(() => {
      model.dispose();
      process.exit(0);
    }, (e: unknown) => {
      process.stderr.write(`shutdown: ${(e as Error).message}\n`);
      process.exit(1);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  await new Promise<void>(() => {}); // runs until a signal
}

// Supervised fine-tuning of a causal model on conversations (the first step of InstructGPT,
// Ouyang et al. 2022): each JSONL line's messages are rendered with the model's chat template and
// the loss is the cross-entropy of the assistant's tokens only (the prompt's targets are ignored).
// With pack (attn GPTs) several conversations share a row, attention never crossing them and
// positions restarting at each, so a packed row computes exactly what its conversations would
// alone (test/alignment-tasks.test.ts checks it). Full fine-tuning or LoRA (lora_rank).
import { crossEntropy, noGrad, tidy, type Tensor } from '../tensor/index.js';
import type { Task, TaskRun } from '../train/loop.js';
import {
  alignmentProblems, batchTensors, EpochSampler, holdOut, loadPolicy, logitsOf, messagesOf, packedBatch, packExamples, padRows, policyConfig, policyLora, policyTensors,
  promptResponse, readJsonl, renderConversation, shiftExample, type CausalLM, type Example, type RowBatch,
} from './alignment-common.js';
import type { ChatTemplate } from '../generate/chat.js';
import type { Tokenizer } from '../tokenizers/index.js';

/** A JSONL line: {"messages": [...]} or {"prompt": ..., "completion"|"response": ...}. */
export function sftExample(value: Record<string, unknown>, where: string, template: ChatTemplate, tok: Tokenizer, eos: number | undefined): Example {
  if (value['messages'] !== undefined) {
    const ex = renderConversation(template, tok, messagesOf(value['messages'], where));
    if (!ex.scored.some((s) => s)) throw new Error(`${where}: no assistant message to learn from`);
    return ex;
  }
  const p = value['prompt'];
  const r = value['completion'] ?? value['response'];
  if ((typeof p !== 'string' && !Array.isArray(p)) || typeof r !== 'string') throw new Error(`${where}: each line needs "messages", or "prompt" and "completion"`);
  return promptResponse(template, tok, typeof p === 'string' ? p : messagesOf(p, where), r, eos);
}

/** Mean cross-entropy over the scored targets of a batch (graph kept). */
export function sftLoss(model: CausalLM, b: RowBatch): Tensor {
  const backend = model.parameters()[0]!.backend;
  const { x, y } = batchTensors(b, backend);
  return crossEntropy(logitsOf(model, x, b.segments), y, { ignoreIndex: -100 });
}

export const SFT_TASK: Task<RowBatch> = {
  task: 'sft',
  defaults: { out_dir: 'out/sft', max_iters: 200, batch_size: 8, block_size: 256, learning_rate: 1e-4, eval_interval: 50, eval_iters: 20, weight_decay: 0 },
  archFields: [],
  best: { metric: 'val_loss', higher: false },
  evalAtStart: true,
  title: () => 'SFT: loss on the assistant tokens',
  check(cfg, problems) {
    alignmentProblems('sft', cfg, problems);
  },
  async open(cfg, { backend, resume, say }): Promise<TaskRun<RowBatch>> {
    const from = resume ? resume.dir : cfg.init_from;
    const pol = await loadPolicy(from, backend);
    const model = pol.model;
    const block = Math.min(cfg.block_size, model.config.block_size);
    const lines = await readJsonl(cfg.data);
    const shifted = lines.map(({ line, value }) => shiftExample(sftExample(value, `${cfg.data}:${line}`, pol.template, pol.tokenizer, pol.eos), block))
      .filter((e) => e.y.some((t) => t !== -100));
    if (shifted.length < lines.length) say(`sft: ${lines.length - shifted.length} examples have no assistant token within block_size ${block} and are skipped`);
    const { train, val } = holdOut(shifted, cfg.data);
    const trainRows = cfg.pack ? packExamples(train, block) : null;
    const valRows = cfg.pack ? packExamples(val, block) : null;
    const sampler = new EpochSampler(trainRows ? trainRows.length : train.length, cfg.seed);
    const batchOf = (idx: number[], packed: typeof trainRows, plain: typeof train): RowBatch => (packed ? packedBatch(idx.map((i) => packed[i]!), block) : padRows(idx.map((i) => plain[i]!)));
    const lora = policyLora(model, cfg, say);
    if (!resume) say(`sft: ${train.length} conversations (${trainRows ? `${trainRows.length} packed rows of ${block}` : 'one per row'}), ${val.length} held out; ${pol.templateFrom === 'model' ? "the model's chat template" : "attn's plain chat template (the model has none)"}`);
    model.train();
    return {
      model,
      params: lora ? lora.trainableParameters() : undefined,
      nextBatch: () => batchOf(sampler.take(cfg.batch_size), trainRows, train),
      sizeOf: (b) => b.B * b.T,
      loss: (b) => ({ loss: sftLoss(model, b) }),
      evaluate() {
        const n = valRows ? valRows.length : val.length;
        let sum = 0;
        let count = 0;
        model.eval();
        try {
          for (let s = 0, k = 0; s < n && k < cfg.eval_iters; s += cfg.batch_size, k++) {
            const idx = Array.from({ length: Math.min(cfg.batch_size, n - s) }, (_, i) => s + i);
            const b = batchOf(idx, valRows, val);
            const scored = b.y.reduce((a, t) => a + (t !== -100 ? 1 : 0), 0);
            sum += noGrad(() => tidy(() => sftLoss(model, b).item())) * scored;
            count += scored;
          }
        } finally {
          model.train();
        }
        return { val_loss: sum / Math.max(count, 1) };
      },
      checkpoint: () => ({ config: policyConfig(model, pol.hfConfig), model: policyTensors(model, lora), tokenizerFiles: pol.tokenizerFiles }),
      state: () => ({ sampler: sampler.state() }),
      setState: (s) => sampler.setState(s['sampler']),
    };
  },
};

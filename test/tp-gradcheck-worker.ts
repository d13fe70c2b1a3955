// One rank of the float64 tensor-parallel check (test/distributed.test.ts runs it under mpirun):
// for tiny GPTs on the ref backend in float64, the tp loss must equal the whole model's, each
// shard's gradient the matching slice of the whole model's gradient (and each replicated
// parameter's gradient the whole one), and the gradients of the tp graph (its f / g all-reduce
// operators included) must match central finite differences of the tp loss, which every rank
// computes together. Also the binding's split() groups. Exits 1 with the first mismatch; rank 0
// prints a summary line.
import { backward, GPT, noGrad, RefBackend, tensor, tidy, type GPTConfig, type Tensor } from '../src/index.js';
import { mpiBinding } from '../src/train/parallel/mpi.js';
import { extractShard, TensorParallel, type TokenBatch } from '../src/train/parallel/tensor-parallel.js';

const b = mpiBinding();
if (!b.mpi) throw new Error(b.why);
const mpi = b.mpi;
const { rank, size } = mpi.init();
const be = new RefBackend();

const CONFIGS: [string, Partial<GPTConfig>][] = [
  ['GPT-2 layout (tied, learned positions, pre-norm, gelu)', {}],
  ['untied head, rope, post-norm, relu, grouped kv heads', { tie_embeddings: false, pos_encoding: 'rope', norm_placement: 'post', activation: 'relu', n_head: 4, n_kv_head: 2 }],
];

let worstLoss = 0;
let worstGrad = 0;
let worstFd = 0;
let checked = 0;
const fail = (msg: string): never => {
  process.stderr.write(`rank ${rank}: ${msg}\n`);
  mpi.abort(1);
  throw new Error(msg);
};

for (const [what, extra] of CONFIGS) {
  const cfg: Partial<GPTConfig> = { n_layer: 2, n_head: 2, n_embd: 8, block_size: 4, vocab_size: 7, dropout: 0, bias: true, ...extra };
  const model = new GPT(cfg, { backend: be, dtype: 'float64', seed: 11 });
  const params = model.parameters();
  const tp = new TensorParallel(mpi, rank, size);
  const batch: TokenBatch = { x: [0, 3, 6, 2, 5, 1, 4, 6], y: [3, 6, 2, -100, 1, 4, 6, 0], batchSize: 2, blockSize: 4 };
  const idx = tensor(batch.x, { shape: [2, 4], dtype: 'int32', backend: be });
  const y = tensor(batch.y, { shape: [2, 4], dtype: 'int32', backend: be });

  // The whole model on every rank: the reference loss and gradients.
  const whole = tidy(() => {
    const l = model.forward(idx, y).loss!;
    backward(l);
    return l.item();
  });
  const wholeGrads = new Map(params.map((p) => [p, Float64Array.from(p.grad!.data())]));
  for (const p of params) {
    p.grad!.dispose();
    p.grad = null;
  }
  const wholeWeights = new Map(params.map((p) => [p, Float64Array.from(p.data())]));
  tp.attach(model, params);
  // This rank holds only its shards: the split parameters' whole tensors hold no elements, the
  // task's forward is the sharded one, and a checkpoint gathers the whole weights to rank 0 only.
  const splitParams = params.filter((p) => p.storage.size === 0);
  if (splitParams.length === 0) fail(`${what}: no parameter was released`);
  const viaForward = noGrad(() => tidy(() => model.forward(idx, y).loss!.item()));
  if (Math.abs(viaForward - whole) > 1e-12 * Math.abs(whole)) fail(`${what}: the sharded model.forward gives ${viaForward}, the whole model ${whole}`);
  try {
    model.forward(idx);
    fail(`${what}: a forward without targets was not refused`);
  } catch (e) {
    if (!/holds its slice of the vocabulary's logits only/.test((e as Error).message)) throw e;
  }
  tp.beforeSave();
  for (const p of splitParams) {
    if (rank !== 0) {
      if (p.storage.size !== 0) fail(`${what}: rank ${rank} materialized ${p.name}`);
      continue;
    }
    const got = p.data();
    const want = wholeWeights.get(p)!;
    for (let i = 0; i < want.length; i++) if (got[i] !== want[i]) fail(`${what}: gathered ${p.name}[${i}] = ${got[i]}, was ${want[i]}`);
  }
  tp.afterSave();
  if (splitParams.some((p) => p.storage.size !== 0)) fail(`${what}: the whole weights were not released after the save`);
  const tpLoss = tidy(() => {
    const l = tp.lossOf(batch);
    backward(l);
    return l.item();
  });
  worstLoss = Math.max(worstLoss, Math.abs(tpLoss - whole));
  if (!(Math.abs(tpLoss - whole) <= 1e-12 * Math.abs(whole))) fail(`${what}: tp loss ${tpLoss} vs the whole model's ${whole}`);

  // Each trained tensor (shard or replicated parameter) against the whole gradient.
  const shards = (tp as unknown as { shards: Map<Tensor, { spec: { axis: 0 | 1; ranges: [number, number][] }; shard: Tensor }> }).shards;
  const trained: { name: string; t: Tensor; want: ArrayLike<number>; replicated: boolean }[] = params.map((p) => {
    const sh = shards.get(p);
    return sh
      ? { name: `${p.name} shard`, t: sh.shard, want: extractShard(wholeGrads.get(p)!, p.shape, sh.spec, 'float64'), replicated: false }
      : { name: p.name ?? '?', t: p, want: wholeGrads.get(p)!, replicated: true };
  });
  for (const { name, t, want } of trained) {
    if (!t.grad) fail(`${what}: ${name} got no gradient`);
    const got = t.grad!.data();
    for (let i = 0; i < got.length; i++) {
      const d = Math.abs(got[i]! - want[i]!);
      worstGrad = Math.max(worstGrad, d);
      if (!(d <= 1e-10 + 1e-8 * Math.abs(want[i]!))) fail(`${what}: d/d ${name}[${i}] = ${got[i]} on tp, ${want[i]} whole`);
    }
  }

  // Central differences of the tp loss: each rank in turn perturbs one element of each of its
  // shards (the others keep theirs) and all compute the loss; a replicated parameter (the first
  // layer norm's weight, whose gradient comes through every all-reduce of the backward pass) is
  // perturbed on every rank at once. The comparison above covers every element exactly.
  const lossNow = (): number => noGrad(() => tidy(() => tp.lossOf(batch).item()));
  const eps = 1e-6;
  for (const { name, t, replicated } of trained) {
    if ((replicated && !name.endsWith('h.0.ln_1.weight')) || name.includes('.h.1.')) continue; // layer 1 is layer 0's pattern again
    const owners = replicated ? [-1] : Array.from({ length: size }, (_, r) => r);
    for (const owner of owners) {
      const mine = owner === -1 || owner === rank;
      const i = (7 * checked + 3) % t.size; // the same on every rank, different per tensor
      const base = t.data()[i]!;
      const at = (v: number): number => {
        if (mine) t.backend.write(t.storage, [v], t.offset + i);
        return lossNow();
      };
      const numeric = (at(base + eps) - at(base - eps)) / (2 * eps);
      at(base);
      if (mine) {
        const analytic = t.grad!.data()[i]!;
        const d = Math.abs(analytic - numeric);
        worstFd = Math.max(worstFd, d);
        if (!(d <= 1e-7 + 1e-5 * Math.abs(numeric))) fail(`${what}: d/d ${name}[${i}]: autograd ${analytic}, finite differences ${numeric}`);
      }
    }
    checked++;
  }
  for (const { t } of trained) {
    t.grad?.dispose();
    t.grad = null;
  }
}

// The binding's groups: split by rank parity gives groups of one at 2 ranks, whose all-reduce
// leaves a value alone; the world's sums; an unknown communicator id is an error naming it.
const g = mpi.split!(rank % 2, rank);
if (g.size !== Math.ceil((size - (rank % 2)) / 2) || g.rank !== Math.floor(rank / 2)) fail(`split: rank ${g.rank} of ${g.size}`);
const one = new Float64Array([rank + 1]);
mpi.allreduce(one, 'sum', g.comm);
const all = new Float64Array([rank + 1]);
mpi.allreduce(all, 'sum');
if (size === 2 && (one[0] !== rank + 1 || all[0] !== 3)) fail(`group all-reduce ${one[0]}, world ${all[0]}`);
try {
  mpi.allreduce(one, 'sum', 99);
  fail('allreduce on communicator 99 did not throw');
} catch (e) {
  if (!/no communicator 99/.test((e as Error).message)) fail(`allreduce on communicator 99: ${(e as Error).message}`);
}

if (rank === 0) {
  process.stdout.write(`tp=${size} float64: loss differs from the whole model's by ${worstLoss.toExponential(2)}, gradients by ${worstGrad.toExponential(2)}, autograd from finite differences by ${worstFd.toExponential(2)} (${checked} tensors by finite differences)\n`);
}
mpi.finalize();

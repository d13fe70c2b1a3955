// Activation checkpointing (Chen et al. 2016, torch.utils.checkpoint): a segment's forward runs
// without recording its graph, so its activations are freed at once; the backward pass runs the
// segment again, with the graph, from its saved input and takes the gradients through it. Memory
// per segment drops to its input; the price is a second forward. Random draws (dropout) are
// replayed from the generators' saved states, so the gradients equal those of the plain graph.
import { backward } from './autograd.js';
import type { Generator } from './random.js';
import { isGradEnabled, noGrad, Tensor, tidy, withGrad } from './tensor.js';

/**
 * fn(x) whose activations are recomputed in the backward pass. `generators`: every Generator
 * fn draws from (restored before the recomputation). fn must have no other side effects that a
 * second run would repeat (counters, caches).
 */
export function checkpoint(fn: (x: Tensor) => Tensor, x: Tensor, generators: readonly Generator[] = []): Tensor {
  if (!isGradEnabled()) return fn(x);
  const states = generators.map((g) => g.getState());
  // Its own scope: the segment's intermediates are freed now, not when the caller's scope ends.
  const y = noGrad(() => tidy(() => fn(x)));
  const out = new Tensor(y.storage, y.shape, y.strides, y.offset, true);
  y.dispose();
  out.node = {
    op: 'checkpoint',
    inputs: x.requiresGrad ? [x] : [],
    backward: (g) => {
      const after = generators.map((gen) => gen.getState());
      generators.forEach((gen, i) => gen.setState(states[i]!));
      // The input as a fresh leaf, so the inner backward stops there and hands its gradient out;
      // the parameters inside fn are leaves too, and get theirs added to .grad directly.
      const xin = new Tensor(x.storage, x.shape, x.strides, x.offset, x.requiresGrad);
      try {
        withGrad(() => tidy(() => backward(fn(xin), g)));
      } finally {
        generators.forEach((gen, i) => gen.setState(after[i]!));
      }
      // Handed out unkept, so the outer pass frees it when done with it.
      const kept = xin.grad as Tensor | null;
      const gx = kept ? new Tensor(kept.storage, kept.shape, kept.strides, kept.offset) : null;
      kept?.dispose();
      xin.grad = null;
      xin.dispose();
      return [gx];
    },
  };
  return out;
}

// Reverse-mode automatic differentiation over the graph of GradNodes recorded by the ops.
import { fmt, sameShape } from './shape.js';
import { noGrad, Tensor } from './tensor.js';

export interface BackwardOptions {
  /** Keep the graph so backward can run through it again (torch's retain_graph). */
  retainGraph?: boolean;
}

/** Topological order (inputs before outputs) of the tensors that need a gradient. */
function topoOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const seen = new Set<Tensor>();
  // Iterative DFS: deep models would overflow the call stack with recursion.
  const stack: [Tensor, number][] = [[root, 0]];
  seen.add(root);
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    const [t, i] = top;
    const inputs = t.node?.inputs ?? [];
    if (i < inputs.length) {
      top[1]++;
      const child = inputs[i]!;
      if (child.requiresGrad && !seen.has(child)) {
        seen.add(child);
        stack.push([child, 0]);
      }
    } else {
      order.push(t);
      stack.pop();
    }
  }
  return order;
}

/** Called once per leaf per backward pass, right after its .grad holds the pass's whole gradient. */
export type LeafGradientHook = (leaf: Tensor) => void;
let leafGradientHook: LeafGradientHook | null = null;

/**
 * Sets the process-wide hook backward calls as each leaf's gradient becomes complete (leaves are
 * reached in reverse topological order, after every use of them), e.g. to start a data-parallel
 * all-reduce of a bucket of gradients while the rest of the backward pass runs. Returns the
 * previous hook.
 */
export function setLeafGradientHook(hook: LeafGradientHook | null): LeafGradientHook | null {
  const prev = leafGradientHook;
  leafGradientHook = hook;
  return prev;
}

/** In-place a += b for same-shaped tensors (gradient accumulation). */
function accumulate(a: Tensor, b: Tensor): void {
  a.backend.binary('add', a.storage, a.layout, b.storage, b.layout, a.storage);
}

/**
 * Computes gradients of `root` with respect to every leaf tensor that requires them and
 * adds them into each leaf's `.grad` (gradients accumulate across calls, as in PyTorch).
 */
export function backward(root: Tensor, grad?: Tensor, opts: BackwardOptions = {}): void {
  root.assertLive('backward');
  if (!root.requiresGrad) {
    throw new Error('backward: this tensor does not require grad (no input of its graph has requiresGrad, or it was made under noGrad)');
  }
  if (!grad && root.size !== 1) {
    throw new Error(`backward: called on a non-scalar tensor of shape ${fmt(root.shape)} without a gradient; pass one of the same shape`);
  }
  if (grad && !sameShape(grad.shape, root.shape)) {
    throw new Error(`backward: gradient shape ${fmt(grad.shape)} does not match tensor shape ${fmt(root.shape)}`);
  }
  const order = topoOrder(root);
  noGrad(() => {
    const grads = new Map<Tensor, Tensor>();
    const seed = grad ?? new Tensor(root.backend.upload([1], root.dtype), root.shape);
    grads.set(root, seed);
    // Disposes a gradient once nothing pending refers to it (the caller's own is never ours).
    const release = (x: Tensor): void => {
      if (x !== grad && !x.isDisposed && !x.isKept && !isReferenced(x, grads)) x.dispose();
    };
    for (let idx = order.length - 1; idx >= 0; idx--) {
      const t = order[idx]!;
      const g = grads.get(t);
      if (!g) continue;
      grads.delete(t);
      const node = t.node;
      if (!node) {
        // A leaf: accumulate into .grad, which outlives every tidy() scope.
        if (t.grad) {
          accumulate(t.grad, g);
          release(g);
        } else {
          const shared = g === grad || isReferenced(g, grads) || !g.isContiguous() || g.storage.refs > 1;
          const owned = shared ? copyOf(g) : g;
          if (owned !== g) release(g);
          t.grad = owned.keep();
        }
        leafGradientHook?.(t);
        continue;
      }
      if (!node.backward) {
        throw new Error(`backward: the graph through '${node.op}' was already freed by an earlier backward; pass { retainGraph: true } to the first call`);
      }
      const inputGrads = node.backward(g);
      // Released only after the loop: one tensor may be the gradient of several inputs.
      const done: Tensor[] = [g];
      for (let i = 0; i < node.inputs.length; i++) {
        const input = node.inputs[i]!;
        const gi = inputGrads[i];
        if (!gi || !input.requiresGrad) {
          if (gi) done.push(gi);
          continue;
        }
        if (!sameShape(gi.shape, input.shape)) {
          throw new Error(`backward: internal error in '${node.op}': gradient shape ${fmt(gi.shape)} for input of shape ${fmt(input.shape)}`);
        }
        const prev = grads.get(input);
        if (prev) {
          // prev may be a view of a tensor another input still needs: sum into a fresh buffer.
          const sum = copyOf(prev);
          accumulate(sum, gi);
          grads.set(input, sum);
          done.push(prev, gi);
        } else {
          grads.set(input, gi);
        }
      }
      for (const x of done) release(x);
      if (!opts.retainGraph) {
        node.backward = null;
        node.inputs = [];
      }
    }
  });
}

function isReferenced(g: Tensor, grads: Map<Tensor, Tensor>): boolean {
  for (const v of grads.values()) if (v === g) return true;
  return false;
}

function copyOf(t: Tensor): Tensor {
  const s = t.backend.alloc(t.dtype, t.size, true); // the copy writes every element
  t.backend.copy(t.storage, t.layout, s);
  return new Tensor(s, t.shape);
}

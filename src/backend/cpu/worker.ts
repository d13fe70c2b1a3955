// Worker entry of the cpu runtime: instantiates the kernel module on the shared memory, then
// serves dispatches from the control block (see CTRL in runtime.ts) until told to quit.
import { workerContext } from './platform.js';
import { CTRL, kernelNames, wasmImports, type KernelFn, type WorkerInit } from './runtime.js';

const SPIN = 20000; // polls before sleeping: back-to-back kernels arrive faster than a futex wake-up

// Not awaited at the top level: a browser worker may hold its messages until the module has
// finished evaluating, and the start data is such a message.
void workerContext().then(({ data, post }) => start(data as WorkerInit, post));

function start({ module, memory, tid, ctrl }: WorkerInit, post: (msg: unknown) => void): void {
  try {
    const instance = new WebAssembly.Instance(module, wasmImports(module, memory));
    const exp = instance.exports as unknown as Record<string, KernelFn>;
    const fns = kernelNames(module).map((n) => exp[n]);
    const c = new Int32Array(memory.buffer, ctrl, CTRL.ARGS_BYTE_OFFSET / 4);
    const argv = new Float64Array(memory.buffer, ctrl + CTRL.ARGS_BYTE_OFFSET, CTRL.MAX_ARGS);
    // Read our slot before announcing readiness: no dispatch can come before that, so none is missed.
    const seen = Atomics.load(c, CTRL.SLOT0 + tid);
    // Start serving after this turn so the ready message goes out first.
    setTimeout(() => serve(c, argv, fns, seen, tid, post), 0);
    post({ type: 'ready', tid });
  } catch (e) {
    post({ type: 'error', message: String((e as Error)?.stack ?? e) });
  }
}

function serve(c: Int32Array, argv: Float64Array, fns: KernelFn[], seen: number, tid: number, post: (msg: unknown) => void): void {
  const slot = CTRL.SLOT0 + tid;
  const call: number[] = [];
  for (;;) {
    let s = Atomics.load(c, slot);
    for (let spins = 0; s === seen; s = Atomics.load(c, slot)) {
      if (spins < SPIN) spins++;
      else Atomics.wait(c, slot, seen);
    }
    seen = s;
    if (Atomics.load(c, CTRL.QUIT)) return;
    const nargs = c[CTRL.NARGS];
    call.length = nargs + 2;
    call[0] = tid;
    call[1] = c[CTRL.NT];
    for (let i = 0; i < nargs; i++) call[i + 2] = argv[i];
    try {
      fns[c[CTRL.KERNEL]].apply(null, call);
    } catch (e) {
      Atomics.add(c, CTRL.ERRORS, 1);
      post({ type: 'kernel-error', tid, message: String((e as Error)?.message ?? e) });
    }
    if (Atomics.sub(c, CTRL.PENDING, 1) === 1) Atomics.notify(c, CTRL.PENDING);
  }
}

// The cpu runtime's platform layer: Node (worker_threads, os, v8) or a browser (Web Workers),
// picked at load time. The Node file is imported only under Node, so that its node: imports
// never reach a browser.
import type * as Platform from './platform-node.js';

export type { NativeInfo, NativeKernels, WorkerHandle } from './platform-node.js';

const isNode = typeof process !== 'undefined' && typeof process.versions?.node === 'string';
const impl: typeof Platform = isNode ? await import('./platform-node.js') : await import('./platform-browser.js');

export const { hardwareThreads, enableRelaxedSimd, mainThreadCanBlock, spawnWorker, workerContext, fromBase64, loadNative } = impl;

// WGSL kernels: indexing (to be written).
import type { KernelFn } from './common.js';

export const INDEXING_KERNELS: Record<string, KernelFn> = {};

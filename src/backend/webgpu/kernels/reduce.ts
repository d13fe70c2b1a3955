// WGSL kernels: reduce (to be written).
import type { KernelFn } from './common.js';

export const REDUCE_KERNELS: Record<string, KernelFn> = {};

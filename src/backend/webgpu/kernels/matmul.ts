// WGSL kernels: matmul (to be written).
import type { KernelFn } from './common.js';

export const MATMUL_KERNELS: Record<string, KernelFn> = {};

// WGSL kernels: attention (to be written).
import type { KernelFn } from './common.js';

export const ATTENTION_KERNELS: Record<string, KernelFn> = {};

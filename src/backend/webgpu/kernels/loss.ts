// WGSL kernels: loss (to be written).
import type { KernelFn } from './common.js';

export const LOSS_KERNELS: Record<string, KernelFn> = {};

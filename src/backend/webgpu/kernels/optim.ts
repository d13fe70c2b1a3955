// WGSL kernels: optim (to be written).
import type { KernelFn } from './common.js';

export const OPTIM_KERNELS: Record<string, KernelFn> = {};

// WGSL kernels: rows (to be written).
import type { KernelFn } from './common.js';

export const ROWS_KERNELS: Record<string, KernelFn> = {};

// The table of kernels by name (the Backend method names): each family file exports a record of KernelFn.
import type { KernelFn } from './common.js';
import { ELEMENTWISE_KERNELS } from './elementwise.js';
import { REDUCE_KERNELS } from './reduce.js';
import { MATMUL_KERNELS } from './matmul.js';
import { OPTIM_KERNELS } from './optim.js';
import { ROWS_KERNELS } from './rows.js';
import { LOSS_KERNELS } from './loss.js';
import { INDEXING_KERNELS } from './indexing.js';
import { ATTENTION_KERNELS } from './attention.js';
import { RANDOM_KERNELS } from './random.js';
import { QUANT_KERNELS } from './quant.js';

export const KERNELS: Record<string, KernelFn> = {
  ...ELEMENTWISE_KERNELS,
  ...REDUCE_KERNELS,
  ...MATMUL_KERNELS,
  ...OPTIM_KERNELS,
  ...ROWS_KERNELS,
  ...LOSS_KERNELS,
  ...INDEXING_KERNELS,
  ...ATTENTION_KERNELS,
  ...RANDOM_KERNELS,
  ...QUANT_KERNELS,
};

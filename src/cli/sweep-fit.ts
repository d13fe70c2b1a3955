// attn sweep fit (filled in below).
import { type Flags, UsageError } from './args.js';

export async function runSweepFit(f: Flags): Promise<void> {
  void f;
  throw new UsageError('sweep fit: not yet');
}

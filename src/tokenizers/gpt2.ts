// GPT-2's tokenizer (50,257 tokens: 256 bytes, 50,000 merges, '<|endoftext|>' = 50256). The
// vocabulary ships in the package at assets/gpt2/ (see its README for the source).
import { BpeTokenizer } from './bpe.js';

export const GPT2_EOT = 50256;

/** GPT-2's tokenizer from the contents of encoder.json and vocab.bpe (browser: fetch them). */
export function gpt2FromFiles(encoderJson: string, vocabBpe: string): BpeTokenizer {
  return BpeTokenizer.fromGpt2Files(encoderJson, vocabBpe);
}

let loaded: Promise<BpeTokenizer> | undefined;

/**
 * Loads GPT-2's tokenizer from the package's assets/gpt2 (Node). The folder is found by
 * walking up from this module, which works both from the sources (src/tokenizers) and from
 * the build (dist/src/tokenizers). The result is shared: tokenizers are immutable apart from
 * their piece cache.
 */
export function loadGpt2Tokenizer(): Promise<BpeTokenizer> {
  loaded ??= (async () => {
    const { readFile, access } = await import('node:fs/promises');
    const { fileURLToPath } = await import('node:url');
    const { dirname, join } = await import('node:path');
    let dir = dirname(fileURLToPath(import.meta.url));
    for (;;) {
      const assets = join(dir, 'assets', 'gpt2');
      try {
        await access(join(assets, 'vocab.bpe'));
        const [enc, bpe] = await Promise.all([
          readFile(join(assets, 'encoder.json'), 'utf8'),
          readFile(join(assets, 'vocab.bpe'), 'utf8'),
        ]);
        return gpt2FromFiles(enc, bpe);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
      const up = dirname(dir);
      if (up === dir) throw new Error('assets/gpt2/{encoder.json,vocab.bpe} not found above ' + fileURLToPath(import.meta.url));
      dir = up;
    }
  })();
  loaded.catch(() => (loaded = undefined)); // let a later call retry after a failure
  return loaded;
}

// Tokenizer benchmark: GPT-2 encoding speed of attn vs js-tiktoken on Tiny Shakespeare (same
// run, same text, ids checked equal), decoding speed, and BPE training time for 1k and 4k
// vocabularies. Usage: node dist/bench/tokenizer.js [--reps N]
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { getEncoding } from 'js-tiktoken';
import { gpt2FromFiles, trainBpe } from '../src/tokenizers/index.js';

const argReps = process.argv.indexOf('--reps');
const reps = argReps > 0 ? Number(process.argv[argReps + 1]) : 5;
const root = (rel: string) => fileURLToPath(new URL(`../../${rel}`, import.meta.url));
const text = readFileSync(root('data/tinyshakespeare/input.txt'), 'utf8');
const mb = new TextEncoder().encode(text).length / 1e6;
const encJson = readFileSync(root('assets/gpt2/encoder.json'), 'utf8');
const vocabBpe = readFileSync(root('assets/gpt2/vocab.bpe'), 'utf8');

const time = <T>(fn: () => T): [T, number] => {
  const t0 = performance.now();
  const r = fn();
  return [r, performance.now() - t0];
};
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const line = (name: string, ms: number) => console.log(`${name.padEnd(44)} ${ms.toFixed(1).padStart(8)} ms ${(mb / (ms / 1000)).toFixed(2).padStart(8)} MB/s`);

console.log(`Tiny Shakespeare: ${mb.toFixed(2)} MB, node ${process.version}, ${reps} repetitions (median)\n`);

const [, loadMs] = time(() => gpt2FromFiles(encJson, vocabBpe));
const [tk, tkLoadMs] = time(() => getEncoding('gpt2'));
console.log(`load: attn GPT-2 ${loadMs.toFixed(0)} ms, js-tiktoken gpt2 ${tkLoadMs.toFixed(0)} ms\n`);

// Cold: a fresh tokenizer, so every distinct piece goes through the merge loop once (what a
// one-pass tokenisation of a corpus costs). Warm: the piece cache already holds the text.
const cold: number[] = [];
let ids: number[] = [];
for (let r = 0; r < reps; r++) {
  const tok = gpt2FromFiles(encJson, vocabBpe);
  let ms: number;
  [ids, ms] = time(() => tok.encode(text));
  cold.push(ms);
}
const tok = gpt2FromFiles(encJson, vocabBpe);
tok.encode(text);
const warm: number[] = [];
for (let r = 0; r < reps; r++) warm.push(time(() => tok.encode(text))[1]);
const tkTimes: number[] = [];
let tkIds: number[] = [];
for (let r = 0; r < reps; r++) {
  let ms: number;
  [tkIds, ms] = time(() => tk.encode(text));
  tkTimes.push(ms);
}
const same = ids.length === tkIds.length && ids.every((x, i) => x === tkIds[i]);
line('encode attn (fresh tokenizer, cold cache)', median(cold));
line('encode attn (warm piece cache)', median(warm));
line('encode js-tiktoken', median(tkTimes));
console.log(`tokens: ${ids.length}; ids identical to js-tiktoken: ${same}`);
console.log(`attn / js-tiktoken speed: ${(median(tkTimes) / median(cold)).toFixed(1)}x cold, ${(median(tkTimes) / median(warm)).toFixed(1)}x warm\n`);

const dec: number[] = [];
const tkDec: number[] = [];
for (let r = 0; r < reps; r++) {
  dec.push(time(() => tok.decode(ids))[1]);
  tkDec.push(time(() => tk.decode(ids))[1]);
}
line('decode attn', median(dec));
line('decode js-tiktoken', median(tkDec));
console.log('');

for (const vocab of [1024, 4096]) {
  const [bpe, ms] = time(() => trainBpe(text, vocab, { specialTokens: ['<|endoftext|>'] }));
  const n = bpe.encode(text).length;
  console.log(`trainBpe vocab ${vocab}: ${(ms / 1000).toFixed(2)} s (${bpe.numMerges} merges); ${n} tokens, ${((mb * 1e6) / n).toFixed(2)} bytes/token`);
}

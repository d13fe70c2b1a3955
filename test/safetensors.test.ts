// safetensors: the byte layout checked against hand-built bytes and against files written by
// Python (tools/make_safetensors_fixture.py), exact half/bfloat16 conversions, round trips,
// and every kind of corruption refused with a message naming the file and the problem.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  floatBitsToBf16Bits, floatBitsToHalfBits, halfBitsToFloatBits, parseSafetensors, SafetensorsError, serializeSafetensors,
  type LoadedTensor, type TensorEntry,
} from '../src/io/safetensors.js';
import { readSafetensorsFile, writeFileAtomic, writeSafetensorsFile } from '../src/io/files.js';

// Compiled to dist/test/, so the fixtures are two levels up in the source tree.
const FIXTURES = fileURLToPath(new URL('../../test/fixtures/safetensors/', import.meta.url));

const enc = new TextEncoder();
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const bitsOf = (x: number): number => ((f32[0] = x), u32[0]!);
const floatOf = (b: number): number => ((u32[0] = b), f32[0]!);

/** u64 LE length + header text + data, built by hand. */
function fileBytes(header: string, data: number[] | Uint8Array = []): Uint8Array {
  const h = enc.encode(header);
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setUint32(0, h.length, true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

/** A header object (stringified as given) with `dataLen` zero bytes of data. */
function build(header: unknown, dataLen: number): Uint8Array {
  return fileBytes(typeof header === 'string' ? header : JSON.stringify(header), new Uint8Array(dataLen));
}

function le(kind: 'f32' | 'f64' | 'i32' | 'u16', values: number[]): number[] {
  const arr = kind === 'f32' ? new Float32Array(values) : kind === 'f64' ? new Float64Array(values) : kind === 'i32' ? new Int32Array(values) : new Uint16Array(values);
  return [...new Uint8Array(arr.buffer)]; // the test machines are little-endian, as the format is
}

function refused(bytes: Uint8Array, pattern: RegExp, name = 'bad.safetensors'): void {
  assert.throws(
    () => parseSafetensors(bytes, name),
    (e: unknown) => {
      assert.ok(e instanceof SafetensorsError, `expected a SafetensorsError, got ${String(e)}`);
      assert.ok(e.message.startsWith(`${name}: `), `message does not name the file: ${e.message}`);
      assert.match(e.message, pattern);
      return true;
    },
  );
}

/** Same value, telling -0 from 0 and matching NaN with NaN. */
function sameValues(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    if (!Object.is(actual[i], expected[i])) assert.fail(`${what}[${i}]: got ${Object.is(actual[i], -0) ? '-0' : actual[i]}, expected ${Object.is(expected[i], -0) ? '-0' : expected[i]}`);
  }
}

// ---------------------------------------------------------------- the byte layout

test('layout: the reference implementation\'s own examples, byte for byte', () => {
  // One F32 tensor whose header is exactly 64 bytes: no padding needed.
  const h1 = '{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}';
  assert.equal(h1.length, 64);
  const data = le('f32', [0, 1, 2, 3, 4, 5]);
  const out1 = serializeSafetensors({ 'attn.0': { dtype: 'F32', shape: [1, 2, 3], data: [0, 1, 2, 3, 4, 5] } });
  assert.deepEqual([...out1], [64, 0, 0, 0, 0, 0, 0, 0, ...enc.encode(h1), ...data]);

  // A 65-byte header gets 7 spaces, so the data starts at a multiple of 8.
  const h2 = '{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}';
  assert.equal(h2.length, 65);
  const out2 = serializeSafetensors(new Map([['attn0', { dtype: 'F32', shape: [1, 1, 2, 3], data: new Float32Array([0, 1, 2, 3, 4, 5]) } as TensorEntry]]));
  assert.deepEqual([...out2], [72, 0, 0, 0, 0, 0, 0, 0, ...enc.encode(h2), ...Array(7).fill(0x20), ...data]);

  // No tensors; then metadata only.
  assert.deepEqual([...serializeSafetensors({})], [8, 0, 0, 0, 0, 0, 0, 0, ...enc.encode('{}'), 32, 32, 32, 32, 32, 32]);
  const h3 = '{"__metadata__":{"framework":"pt"}}';
  assert.deepEqual([...serializeSafetensors({}, { framework: 'pt' })], [40, 0, 0, 0, 0, 0, 0, 0, ...enc.encode(h3), 32, 32, 32, 32, 32]);
  assert.equal(parseSafetensors(serializeSafetensors({}, { framework: 'pt' })).metadata.framework, 'pt');
});

test('layout: widest dtype first, then names by UTF-8 bytes; offsets packed; metadata first', () => {
  const out = serializeSafetensors(
    {
      b: { dtype: 'F16', shape: [1], data: [1] },
      é: { dtype: 'I32', shape: [2], data: [-1, 7] },
      a: { dtype: 'F16', shape: [2], data: [2, -0] },
      Z: { dtype: 'I32', shape: [], data: [3] },
      w: { dtype: 'F64', shape: [1, 1], data: [0.5] },
      f: { dtype: 'F32', shape: [0], data: [] },
    },
    { k: 'v', 'ü': 'ß' },
  );
  // F64 (8 bytes) at 0; F32 f (empty) at 8; I32: 'Z' (0x5a) before 'é' (0xc3 0xa9); F16: a then b.
  const header =
    '{"__metadata__":{"k":"v","ü":"ß"},' +
    '"w":{"dtype":"F64","shape":[1,1],"data_offsets":[0,8]},' +
    '"f":{"dtype":"F32","shape":[0],"data_offsets":[8,8]},' +
    '"Z":{"dtype":"I32","shape":[],"data_offsets":[8,12]},' +
    '"é":{"dtype":"I32","shape":[2],"data_offsets":[12,20]},' +
    '"a":{"dtype":"F16","shape":[2],"data_offsets":[20,24]},' +
    '"b":{"dtype":"F16","shape":[1],"data_offsets":[24,26]}}';
  const hb = enc.encode(header);
  const n = Math.ceil(hb.length / 8) * 8;
  const expected = [
    n & 0xff, n >> 8, 0, 0, 0, 0, 0, 0, ...hb, ...Array(n - hb.length).fill(0x20),
    ...le('f64', [0.5]), ...le('i32', [3]), ...le('i32', [-1, 7]), ...le('u16', [0x4000, 0x8000, 0x3c00]),
  ];
  assert.deepEqual([...out], expected);
  const back = parseSafetensors(out);
  assert.deepEqual([...back.tensors.keys()], ['w', 'f', 'Z', 'é', 'a', 'b']);
  assert.deepEqual(back.metadata, { k: 'v', 'ü': 'ß' });
});

// ---------------------------------------------------------------- files written by Python

type Expected = {
  metadata: Record<string, string>;
  order: string[];
  tensors: Record<string, { dtype: string; shape: number[]; values: (number | string)[]; source?: (number | string)[]; bits?: number[] }>;
};
const num = (v: number | string): number => (v === 'nan' ? NaN : v === 'inf' ? Infinity : v === '-inf' ? -Infinity : (v as number));

async function fixture(): Promise<{ small: Expected; unordered: Expected }> {
  return JSON.parse(await readFile(join(FIXTURES, 'expected.json'), 'utf8')) as { small: Expected; unordered: Expected };
}

function checkAgainst(got: { tensors: Map<string, LoadedTensor>; metadata: Record<string, string> }, exp: Expected, file: string): void {
  assert.deepEqual([...got.tensors.keys()], exp.order, `${file}: tensor order`);
  assert.deepEqual(got.metadata, exp.metadata, `${file}: metadata`);
  for (const [name, e] of Object.entries(exp.tensors)) {
    const t = got.tensors.get(name);
    assert.ok(t, `${file}: tensor '${name}' is missing`);
    assert.equal(t.dtype, e.dtype, `${name}: dtype`);
    assert.deepEqual(t.shape, e.shape, `${name}: shape`);
    const kind = ['F32', 'F16', 'BF16'].includes(e.dtype) ? Float32Array : e.dtype === 'F64' ? Float64Array : Int32Array;
    assert.ok(t.data instanceof kind, `${name}: ${e.dtype} should read as ${kind.name}`);
    sameValues(t.data, e.values.map(num), `${file} ${name}`);
  }
}

test('fixture: files written by Python read exactly (all dtypes, specials, odd layouts)', async () => {
  const exp = await fixture();
  for (const name of ['small', 'unordered'] as const) {
    const path = join(FIXTURES, `${name}.safetensors`);
    checkAgainst(await readSafetensorsFile(path), exp[name], path);
    checkAgainst(parseSafetensors(new Uint8Array(await readFile(path)), path), exp[name], path);
  }
});

test('fixture: writing what was read reproduces the Python file byte for byte', async () => {
  const bytes = new Uint8Array(await readFile(join(FIXTURES, 'small.safetensors')));
  const parsed = parseSafetensors(bytes);
  // Offer the tensors in a scrambled order: the layout must not depend on it.
  const scrambled = new Map([...parsed.tensors].reverse());
  assert.deepEqual([...serializeSafetensors(scrambled, parsed.metadata)], [...bytes]);
});

test('fixture: float32 → F16/BF16 rounding matches PyTorch bit for bit', async () => {
  const exp = await fixture();
  for (const name of ['half', 'brain']) {
    const e = exp.small.tensors[name]!;
    const source = e.source!.map(num);
    const conv = e.dtype === 'F16' ? floatBitsToHalfBits : floatBitsToBf16Bits;
    source.forEach((x, i) => {
      const got = conv(bitsOf(x));
      if (Number.isNaN(x)) assert.ok(e.dtype === 'F16' ? (got & 0x7c00) === 0x7c00 && (got & 0x3ff) !== 0 : (got & 0x7f80) === 0x7f80 && (got & 0x7f) !== 0, `${name}[${i}]: NaN must stay NaN`);
      else assert.equal(got, e.bits![i], `${name}[${i}] = ${x}: got 0x${got.toString(16)}, PyTorch 0x${e.bits![i]!.toString(16)}`);
    });
    // Through the serializer as well.
    const file = serializeSafetensors({ x: { dtype: e.dtype as 'F16' | 'BF16', shape: [source.length], data: source } });
    const back = parseSafetensors(file).tensors.get('x')!;
    sameValues(back.data, e.values.map(num), `${name} via serialize`);
  }
});

// ---------------------------------------------------------------- conversions

test('F16: every half converts to float exactly (normals, subnormals, zeros, inf, NaN)', () => {
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    const b = halfBitsToFloatBits(h);
    const v = floatOf(b);
    if (e === 31) {
      if (m === 0) assert.equal(v, sign * Infinity);
      else {
        assert.ok(Number.isNaN(v), `0x${h.toString(16)} must be NaN`);
        assert.equal((b >>> 13) & 0x3ff, m, 'NaN payload kept');
      }
    } else {
      const exact = e === 0 ? sign * m * 2 ** -24 : sign * (1 + m / 1024) * 2 ** (e - 15);
      assert.ok(Object.is(v, exact), `0x${h.toString(16)}: ${v} vs ${exact}`);
    }
    assert.equal(b >>> 31, h >>> 15, 'sign kept');
    // float → half of an exact half is the identity (NaNs come back quiet).
    const back = floatBitsToHalfBits(b);
    assert.equal(back, e === 31 && m !== 0 ? h | 0x200 : h, `round trip of 0x${h.toString(16)}`);
  }
});

test('BF16: every bfloat16 round-trips through float32 (NaNs come back quiet)', () => {
  for (let h = 0; h < 65536; h++) {
    const isNaN = (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0;
    assert.equal(floatBitsToBf16Bits(h << 16 >>> 0), isNaN ? h | 0x40 : h);
  }
});

test('float32 → F16 and BF16 round to nearest, ties to even (checked against neighbours)', () => {
  let seed = 12345;
  const rnd = (): number => ((seed = (seed * 1103515245 + 12345) >>> 0), seed / 2 ** 32);
  const samples: number[] = [65519, 65520, 65535, 3.3961775292304767e38, 3.3963e38, 2 ** -25, 2 ** -26, 1e-45];
  for (let i = 0; i < 20000; i++) samples.push(floatOf(Math.floor(rnd() * 2 ** 32) >>> 0));
  // Halfway points between neighbouring halves (exact in float32), and one float either side.
  for (let h = 0; h < 0x7bff; h += 7) {
    const mid = (floatOf(halfBitsToFloatBits(h)) + floatOf(halfBitsToFloatBits(h + 1))) / 2;
    const b = bitsOf(mid);
    samples.push(mid, floatOf(b + 1), floatOf(b - 1), -mid);
  }
  const kinds = [
    { name: 'F16', conv: floatBitsToHalfBits, value: (m: number) => floatOf(halfBitsToFloatBits(m)), inf: 0x7c00 },
    { name: 'BF16', conv: floatBitsToBf16Bits, value: (m: number) => floatOf((m << 16) >>> 0), inf: 0x7f80 },
  ];
  for (const k of kinds) {
    for (const x of samples) {
      if (!Number.isFinite(x)) continue;
      const h = k.conv(bitsOf(x));
      assert.equal(h >> 15, bitsOf(x) >>> 31, `${k.name} ${x}: sign`);
      const mag = h & 0x7fff;
      const ax = Math.abs(x);
      // Differences of these short-significand values are exact in float64.
      const d = Math.abs(ax - k.value(mag));
      const below = mag > 0 ? Math.abs(ax - k.value(mag - 1)) : Infinity;
      if (mag === k.inf) {
        // Overflow: x is at least half an ulp above the largest finite value.
        const maxv = k.value(k.inf - 1);
        const ulp = maxv - k.value(k.inf - 2);
        assert.ok(ax >= maxv + ulp / 2, `${k.name} ${x} went to inf`);
        continue;
      }
      const above = mag + 1 < k.inf ? Math.abs(ax - k.value(mag + 1)) : Math.abs(ax - (k.value(mag) + (k.value(mag) - k.value(mag - 1))));
      assert.ok(d <= below && d <= above, `${k.name} ${x} → 0x${h.toString(16)} is not the nearest`);
      if (d === below || d === above) assert.equal(mag & 1, 0, `${k.name} ${x}: a tie must go to even`);
    }
  }
});

test('round trip: F32, F64, I32, I64, F16, BF16 and the small integer types, with special values', () => {
  const specials = [0, -0, 1, -1.5, Infinity, -Infinity, NaN, 3.4028234663852886e38, 1.401298464324817e-45, 1.1754943508222875e-38];
  const halves = [0, -0, 1, -2, 0.5, 65504, -65504, 2 ** -24, -(2 ** -24), 2 ** -14, 1023 * 2 ** -24, Infinity, -Infinity, NaN, 0.333251953125];
  const bf16s = [0, -0, 1, -2, 0.5, 3.3895313892515355e38, 2 ** -133, Infinity, -Infinity, NaN, 0.33203125];
  const entries: Record<string, TensorEntry> = {
    f32: { dtype: 'F32', shape: [2, 5], data: new Float32Array(specials) },
    f64: { dtype: 'F64', shape: [4], data: [Math.PI, -0, 5e-324, -1.7976931348623157e308] },
    f64nan: { dtype: 'F64', shape: [3], data: new Float64Array([NaN, Infinity, -Infinity]) },
    i32: { dtype: 'I32', shape: [3], data: new Int32Array([-(2 ** 31), 2 ** 31 - 1, 0]) },
    i64: { dtype: 'I64', shape: [3], data: [-(2 ** 31), 2 ** 31 - 1, -5] },
    f16: { dtype: 'F16', shape: [halves.length], data: halves },
    bf16: { dtype: 'BF16', shape: [bf16s.length], data: new Float32Array(bf16s) },
    u8: { dtype: 'U8', shape: [2], data: [0, 255] },
    i8: { dtype: 'I8', shape: [2], data: [-128, 127] },
    i16: { dtype: 'I16', shape: [2], data: [-32768, 32767] },
    u16: { dtype: 'U16', shape: [1], data: [65535] },
    u32: { dtype: 'U32', shape: [1], data: [2 ** 31 - 1] },
    u64: { dtype: 'U64', shape: [1], data: [12345] },
    bool: { dtype: 'BOOL', shape: [2, 1], data: [1, 0] },
    empty: { dtype: 'F32', shape: [3, 0, 2], data: [] },
    scalar: { dtype: 'F64', shape: [], data: [42] },
  };
  const bytes = serializeSafetensors(entries, { step: '7' });
  const back = parseSafetensors(bytes);
  assert.deepEqual(back.metadata, { step: '7' });
  for (const [name, e] of Object.entries(entries)) {
    const t = back.tensors.get(name)!;
    assert.equal(t.dtype, e.dtype, name);
    assert.deepEqual(t.shape, [...e.shape], name);
    sameValues(t.data, e.dtype === 'F32' ? new Float32Array(e.data) : Array.from(e.data), name);
  }
  assert.ok(back.tensors.get('f32')!.data instanceof Float32Array);
  assert.ok(back.tensors.get('f16')!.data instanceof Float32Array);
  assert.ok(back.tensors.get('bf16')!.data instanceof Float32Array);
  assert.ok(back.tensors.get('f64')!.data instanceof Float64Array);
  assert.ok(back.tensors.get('i64')!.data instanceof Int32Array);
  // Writing what was read gives the same bytes again.
  assert.deepEqual([...serializeSafetensors(back.tensors, back.metadata)], [...bytes]);
});

test('reading copies: the result does not alias the input bytes, even at odd offsets', () => {
  const bytes = serializeSafetensors({ x: { dtype: 'F32', shape: [2], data: [1, 2] } });
  const shifted = new Uint8Array(bytes.length + 3);
  shifted.set(bytes, 3);
  const t = parseSafetensors(shifted.subarray(3)).tensors.get('x')!;
  sameValues(t.data, [1, 2], 'x');
  shifted.fill(0);
  sameValues(t.data, [1, 2], 'x after clearing the input');
});

test('wide integers: values beyond int32 are refused on read, accepted in I64 on write', () => {
  const big = serializeSafetensors({ n: { dtype: 'I64', shape: [2], data: [1, -(2 ** 40) - 3] } });
  refused(big, /tensor 'n': I64 element 1 = -1099511627779 does not fit in int32/);
  refused(serializeSafetensors({ n: { dtype: 'I64', shape: [1], data: [2 ** 31] } }), /I64 element 0 = 2147483648 does not fit in int32/);
  refused(serializeSafetensors({ n: { dtype: 'U32', shape: [1], data: [2 ** 32 - 1] } }), /U32 element 0 = 4294967295 does not fit in int32/);
  refused(serializeSafetensors({ n: { dtype: 'U64', shape: [1], data: [2 ** 31] } }), /U64 element 0 = 2147483648/);
});

// ---------------------------------------------------------------- corruption

test('corrupt: a real file truncated anywhere is refused as truncated', async () => {
  const bytes = new Uint8Array(await readFile(join(FIXTURES, 'small.safetensors')));
  const n = new DataView(bytes.buffer, bytes.byteOffset).getUint32(0, true);
  for (const cut of [0, 1, 7, 8, 9, 8 + (n >> 1), 8 + n - 1, 8 + n, 8 + n + 1, 8 + n + 37, bytes.length - 1]) {
    refused(bytes.subarray(0, cut), /truncated/, 'small.safetensors');
  }
  refused(bytes.subarray(0, 5), /file is 5 bytes, shorter than the 8-byte header length prefix/);
  refused(bytes.subarray(0, 8 + n - 1), new RegExp(`header length ${n} is larger than the ${n - 1} bytes that follow`));
  refused(bytes.subarray(0, bytes.length - 1), /data_offsets \[\d+, \d+\] run past the end of the \d+-byte data buffer/);
});

test('corrupt: a truncated file on disk is refused naming its path', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'attn-st-'));
  try {
    const bytes = await readFile(join(FIXTURES, 'small.safetensors'));
    for (const cut of [3, 100, bytes.length - 2]) {
      const path = join(dir, `cut${cut}.safetensors`);
      await writeFile(path, bytes.subarray(0, cut));
      await assert.rejects(readSafetensorsFile(path), (e: unknown) => e instanceof SafetensorsError && e.message.startsWith(`${path}: `) && /truncated/.test(e.message));
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('corrupt: flipped header bytes', async () => {
  const good = new Uint8Array(await readFile(join(FIXTURES, 'small.safetensors')));
  const flip = (at: number, byte: number): Uint8Array => {
    const b = good.slice();
    b[at] = byte;
    return b;
  };
  refused(flip(8, 0x5b), /header is not valid JSON/); // '{' → '['
  refused(flip(9, 0xff), /header is not valid UTF-8/);
  refused(flip(7, 1), /header length \d+ is larger than/); // top byte of the length
  refused(flip(0, good[0]! + 8), /header is not valid (JSON|UTF-8)/); // header swallows 8 data bytes
  // A digit in the first tensor's data_offsets: '[0,24]' → '[0,25]'-style damage.
  const text = new TextDecoder('latin1').decode(good.subarray(8)); // one char per byte
  const at = text.indexOf('"data_offsets":[0,') + '"data_offsets":[0,'.length;
  refused(flip(8 + at, good[8 + at]! + 1), /needs \d+ bytes, but data_offsets \[0, \d+\] span \d+/);
});

test('corrupt: every header problem gets its own message', () => {
  const t = (o: object): object => ({ dtype: 'F32', shape: [2], data_offsets: [0, 8], ...o });
  refused(build('[1, 2]', 0), /header must be a JSON object, got an array/);
  refused(build('null', 0), /header must be a JSON object, got null/);
  refused(build('7', 0), /header must be a JSON object, got number/);
  refused(build('{"a": ', 0), /header is not valid JSON \(/);
  refused(build('\ufeff{}', 0), /header is not valid JSON/);
  refused(build({ x: t({ dtype: 'F33' }) }, 8), /tensor 'x': unknown dtype "F33"/);
  refused(build({ x: t({ dtype: 'F8_E4M3', shape: [8] }) }, 8), /tensor 'x': dtype F8_E4M3 is not supported by attn/);
  refused(build({ x: t({ dtype: 7 }) }, 8), /tensor 'x': dtype is missing or not a string/);
  refused(build({ x: t({ dtype: 'toString' }) }, 8), /unknown dtype "toString"/);
  refused(build({ x: t({ shape: [-2] }) }, 8), /tensor 'x': shape must be a list of non-negative integers, got \[-2\]/);
  refused(build({ x: t({ shape: [1.5] }) }, 8), /shape must be a list of non-negative integers/);
  refused(build({ x: t({ shape: '2' }) }, 8), /shape must be a list of non-negative integers, got "2"/);
  refused(build({ x: { dtype: 'F32', shape: [2] } }, 8), /tensor 'x': data_offsets is missing/);
  refused(build({ x: t({ data_offsets: [0] }) }, 8), /data_offsets must be \[begin, end\]/);
  refused(build({ x: t({ data_offsets: [8, 0] }) }, 8), /data_offsets \[8, 0\] are reversed/);
  refused(build({ x: t({ data_offsets: [0, 12] }) }, 12), /F32 with shape \[2\] needs 8 bytes, but data_offsets \[0, 12\] span 12/);
  refused(build({ x: t({ data_offsets: [8, 16] }) }, 8), /data_offsets \[8, 16\] run past the end of the 8-byte data buffer/);
  refused(build({ x: t({}), y: t({ data_offsets: [4, 12] }) }, 12), /tensor 'y' \(bytes 4\.\.12\) overlaps tensor 'x' \(ends at 8\)/);
  refused(build({ x: t({}), y: t({ data_offsets: [12, 20] }) }, 20), /bytes 8\.\.12 of the data buffer belong to no tensor \(hole before 'y'\)/);
  refused(build({ x: t({ data_offsets: [4, 12] }) }, 12), /bytes 0\.\.4 of the data buffer belong to no tensor/);
  refused(build({ x: t({}) }, 11), /3 unused bytes after the last tensor/);
  refused(build({ __metadata__: { a: 1 } }, 0), /"__metadata__" value for "a" must be a string/);
  refused(build({ __metadata__: [] }, 0), /"__metadata__" must be an object of strings/);
  refused(build({ x: [1] }, 0), /tensor 'x': entry must be an object/);
  refused(build({ x: t({ shape: [2 ** 40, 2 ** 40] }) }, 8), /too large/);
  // A header length far beyond the file.
  const huge = new Uint8Array(16);
  new DataView(huge.buffer).setUint32(4, 0x10000000, true);
  refused(huge, /header length \d+ is larger than the 8 bytes that follow/);
});

test('valid oddities are accepted: zero-size tensors share offsets, unicode and __proto__ names', () => {
  // Written by hand: a __proto__ key in an object literal would set the prototype instead.
  const st = parseSafetensors(fileBytes('{"__metadata__":{"__proto__":"p"},"e1":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"__proto__":{"dtype":"I32","shape":[1],"data_offsets":[0,4]},"e2":{"dtype":"F64","shape":[2,0],"data_offsets":[4,4]},"ü":{"dtype":"BOOL","shape":[1],"data_offsets":[4,5]}}', [9, 0, 0, 0, 2]));
  assert.deepEqual([...st.tensors.keys()], ['e1', '__proto__', 'e2', 'ü']);
  sameValues(st.tensors.get('__proto__')!.data, [9], '__proto__');
  sameValues(st.tensors.get('ü')!.data, [1], 'bool');
  assert.equal(Object.getOwnPropertyDescriptor(st.metadata, '__proto__')?.value, 'p');
  assert.equal(Object.getPrototypeOf(st.metadata), Object.prototype);
});

test('serialize refuses bad entries with clear errors', () => {
  assert.throws(() => serializeSafetensors({ x: { dtype: 'F32', shape: [2, 2], data: [1, 2, 3] } }), /tensor 'x': 3 values do not fill shape \[2, 2\]/);
  assert.throws(() => serializeSafetensors({ x: { dtype: 'I32', shape: [1], data: [1.5] } }), /tensor 'x': element 0 = 1.5 is not a valid I32 value/);
  assert.throws(() => serializeSafetensors({ x: { dtype: 'I32', shape: [1], data: [2 ** 31] } }), /not a valid I32 value/);
  assert.throws(() => serializeSafetensors({ x: { dtype: 'U8', shape: [1], data: [256] } }), /not a valid U8 value/);
  assert.throws(() => serializeSafetensors({ x: { dtype: 'BOOL', shape: [1], data: [2] } }), /not a valid BOOL value/);
  assert.throws(() => serializeSafetensors({ x: { dtype: 'I64', shape: [1], data: [2 ** 60] } }), /not a valid I64 value/);
  assert.throws(() => serializeSafetensors({ x: { dtype: 'F8' as 'F32', shape: [1], data: [1] } }), /cannot write dtype "F8"/);
  assert.throws(() => serializeSafetensors({ x: { dtype: 'F32', shape: [-1], data: [] } }), /shape must be a list of non-negative integers/);
  assert.throws(() => serializeSafetensors(new Map([['__metadata__', { dtype: 'F32', shape: [], data: [1] } as TensorEntry]])), /'__metadata__' is reserved/);
  assert.throws(() => serializeSafetensors({}, { a: 1 as unknown as string }), /metadata value for 'a' must be a string/);
});

// ---------------------------------------------------------------- files

test('files: atomic writes replace the file and leave no temporaries', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'attn-st-'));
  try {
    const p = join(dir, 'a.txt');
    await writeFileAtomic(p, 'one');
    await writeFileAtomic(p, new Uint8Array([116, 119, 111]));
    assert.equal(await readFile(p, 'utf8'), 'two');
    const st = join(dir, 'w.safetensors');
    await writeSafetensorsFile(st, { w: { dtype: 'BF16', shape: [2], data: [1, -0.5] } }, { format: 'pt' });
    const back = await readSafetensorsFile(st);
    sameValues(back.tensors.get('w')!.data, [1, -0.5], 'w');
    assert.deepEqual(back.metadata, { format: 'pt' });
    // A failed serialization leaves the old file in place and no temporary behind.
    await assert.rejects(writeSafetensorsFile(st, { w: { dtype: 'I32', shape: [1], data: [0.5] } }), /not a valid I32 value/);
    assert.equal((await readSafetensorsFile(st)).tensors.size, 1);
    assert.deepEqual((await readdir(dir)).sort(), ['a.txt', 'w.safetensors']);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

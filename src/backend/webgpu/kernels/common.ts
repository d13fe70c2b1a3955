// What every WGSL kernel family shares: the context a kernel encodes into, the parameter
// block (one 1 KiB uniform slot per dispatch, written through ParamWriter), the WGSL prelude
// that reads it, and dispatch-size helpers.
//
// Conventions for kernel authors:
//  - binding 0 is the parameter block (declared by PRELUDE); storage buffers are bindings
//    1, 2, ... in the order of Dispatch.buffers. Declare inputs `var<storage, read>` (the same
//    buffer may be bound twice as an input) and outputs `var<storage, read_write>`.
//  - Every shader's entry point is `main`. Shaders are cached by their source text, so keep the
//    number of distinct sources small: branch on parameters rather than generating a shader
//    per case (pipeline creation costs seconds on software adapters).
//  - Element offsets and sizes are u32 (buffers are at most 4 GiB).
/// <reference types="@webgpu/types" />
import type { BufRef } from '../protocol.js';
import type { Layout } from '../../backend.js';

export const PARAM_SLOT_BYTES = 1024;
export const PARAM_WORDS = PARAM_SLOT_BYTES / 4;
/** Largest workgroup count along one dispatch dimension (WebGPU's default limit). */
export const MAX_GROUPS = 65535;
/** Highest tensor rank a strided kernel handles (layouts are collapsed first). */
export const MAX_RANK = 8;

export interface Params {
  u32(v: number): Params;
  i32(v: number): Params;
  f32(v: number): Params;
  /** Number of words written so far (the next word's index). */
  readonly length: number;
  bytes(): Uint8Array;
}

export class ParamWriter implements Params {
  private readonly buf = new ArrayBuffer(PARAM_SLOT_BYTES);
  private readonly u = new Uint32Array(this.buf);
  private readonly i = new Int32Array(this.buf);
  private readonly f = new Float32Array(this.buf);
  length = 0;
  private next(): number {
    if (this.length >= PARAM_WORDS) throw new Error(`webgpu: kernel parameters exceed ${PARAM_WORDS} words`);
    return this.length++;
  }
  u32(v: number): this { this.u[this.next()] = v >>> 0; return this; }
  i32(v: number): this { this.i[this.next()] = v | 0; return this; }
  f32(v: number): this { this.f[this.next()] = v; return this; }
  bytes(): Uint8Array { return new Uint8Array(this.buf); }
}

export interface Dispatch {
  /** WGSL source starting with PRELUDE; entry point `main`. */
  code: string;
  /** Storage buffers for bindings 1.. in order. */
  buffers: GPUBuffer[];
  params?: Params;
  /** Workgroup counts [x, y, z]; a zero count skips the dispatch. */
  groups: [number, number?, number?];
}

export interface KernelContext {
  readonly device: GPUDevice;
  /** The GPU buffer of a storage (its size may exceed the storage's: pool size classes). */
  buf(ref: BufRef): GPUBuffer;
  /** A zero-filled temporary buffer valid until the end of the current batch. */
  scratch(bytes: number): GPUBuffer;
  /** Four u32 words: error code, offending value, limit, op id (see errors.ts).
   *  A kernel that finds a bad index writes them (atomically or not: any report will do). */
  readonly errorBuffer: GPUBuffer;
  dispatch(d: Dispatch): void;
  params(): Params;
  copyBuffer(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void;
  clearBuffer(b: GPUBuffer, offset: number, bytes: number): void;
}

export type KernelFn = (ctx: KernelContext, args: Record<string, unknown>) => void;

/**
 * Every shader starts with this: the parameter block P and readers pu/pi/pf for word i, and
 * `linear_id` turning a 2-D grid of 1-D workgroups back into one index.
 */
export const PRELUDE = /* wgsl */ `
struct ParamBlock { w: array<vec4<u32>, ${PARAM_WORDS / 4}> }
@group(0) @binding(0) var<uniform> P: ParamBlock;
fn pu(i: u32) -> u32 { return P.w[i >> 2u][i & 3u]; }
fn pi(i: u32) -> i32 { return bitcast<i32>(pu(i)); }
fn pf(i: u32) -> f32 { return bitcast<f32>(pu(i)); }
fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, wgsize: u32) -> u32 {
  return (wid.x + wid.y * nwg.x) * wgsize + lid;
}
`;

/**
 * WGSL declarations of the storage bindings 1, 2, ... in order: `reads` (var<storage, read>),
 * then `writes` (read_write), each an array<type>; a name written `name:i32` overrides the type.
 */
export function storage(type: string, reads: readonly string[], writes: readonly string[] = []): string {
  const decl = (spec: string, i: number, access: string): string => {
    const [name, t = type] = spec.split(':');
    return `@group(0) @binding(${i + 1}) var<storage, ${access}> ${name}: array<${t}>;\n`;
  };
  return '\n' + reads.map((r, i) => decl(r, i, 'read')).join('') + writes.map((w, i) => decl(w, reads.length + i, 'read_write')).join('');
}

/** WGSL: the entry point's opening line for workgroups of `size` threads (the local index named `li`). */
export function entry(size: number, li = 'li'): string {
  return `@compute @workgroup_size(${size})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) ${li}: u32) {`;
}

/** WGSL: entry() for one thread per item: `id` = the thread's global index, returning at `count` or past. */
export function threadEntry(size: number, id: string, count: string): string {
  return entry(size) + `
  let ${id} = linear_id(wid, nwg, li, ${size}u);
  if (${id} >= ${count}) { return; }`;
}

/** Workgroup counts covering `count` workgroups (folded into 2-D past MAX_GROUPS). */
export function grid(count: number): [number, number] {
  if (count <= MAX_GROUPS) return [count, 1];
  const y = Math.ceil(count / MAX_GROUPS);
  return [Math.ceil(count / y), y];
}

/** Workgroup counts for n threads in workgroups of `size`. */
export function groupsFor(n: number, size = 64): [number, number] {
  return grid(Math.ceil(n / size));
}

/** Drops size-1 dims and merges dims every operand walks contiguously (fewer index divisions). */
export function collapse(shape: readonly number[], strides: readonly (readonly number[])[]): { shape: number[]; strides: number[][] } {
  const sh: number[] = [];
  const st: number[][] = strides.map(() => []);
  for (let d = 0; d < shape.length; d++) {
    const n = shape[d]!;
    if (n === 1) continue;
    const k = sh.length - 1;
    if (k >= 0 && strides.every((s, t) => st[t]![k] === s[d]! * n)) {
      sh[k]! *= n;
      for (let t = 0; t < strides.length; t++) st[t]![k] = strides[t]![d]!;
    } else {
      sh.push(n);
      for (let t = 0; t < strides.length; t++) st[t]!.push(strides[t]![d]!);
    }
  }
  return { shape: sh, strides: st };
}

/** The element type of a storage in WGSL terms. */
export function isInt(ref: BufRef): boolean {
  return ref.dtype === 'int32';
}

export type { BufRef, Layout };

#!/usr/bin/env python3
"""Writes the safetensors fixtures that test/safetensors.test.ts reads.

The files are built by hand from the format description with the standard library (struct +
json), independently of attn's TypeScript writer, so the tests check attn against the format
and not against itself. Half and bfloat16 bit patterns come from PyTorch when it can be
imported (Debian's /usr/bin/python3 has it) and from the standard library otherwise; the two
are cross-checked when both are available.

  /usr/bin/python3 tools/make_safetensors_fixture.py

Outputs, in test/fixtures/safetensors/:
  small.safetensors      laid out as the reference writer lays it out: compact JSON header
                         with __metadata__ first, tensors ordered by dtype (widest first) then
                         by name (UTF-8 bytes), header padded with spaces to a multiple of 8.
  unordered.safetensors  a valid file that a reader must also accept: header keys out of
                         offset order, indented JSON, no padding (so tensors are misaligned),
                         no metadata.
  expected.json          what a reader must return for each tensor; non-finite floats are
                         written as the strings "nan", "inf", "-inf".
"""
import json
import math
import os
import struct

try:
    import torch
except ImportError:  # the python3 first on PATH may lack torch
    torch = None

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'safetensors')

# The reference implementation's dtype enum order; its writer sorts by it, descending.
RANK = ['BOOL', 'U8', 'I8', 'F8_E5M2', 'F8_E4M3', 'I16', 'U16', 'F16', 'BF16', 'I32', 'U32', 'F32', 'F64', 'I64', 'U64']
PACK = {'BOOL': 'B', 'U8': 'B', 'I8': 'b', 'I16': 'h', 'U16': 'H', 'I32': 'i', 'U32': 'I', 'I64': 'q', 'U64': 'Q', 'F32': 'f', 'F64': 'd'}
SIZE = {'BOOL': 1, 'U8': 1, 'I8': 1, 'I16': 2, 'U16': 2, 'F16': 2, 'BF16': 2, 'I32': 4, 'U32': 4, 'F32': 4, 'F64': 8, 'I64': 8, 'U64': 8}
NAN = float('nan')
INF = float('inf')


def f32(x):
    """Rounds a Python float to float32 (struct packs with round-to-nearest)."""
    return struct.unpack('<f', struct.pack('<f', x))[0]


def f32_bits(x):
    return struct.unpack('<I', struct.pack('<f', x))[0]


def half_bits_stdlib(x):
    """float32 value -> binary16 bits with round-to-nearest-even (struct's 'e' rounds that way)."""
    if math.isnan(x):
        b = f32_bits(x)
        return ((b >> 16) & 0x8000) | 0x7e00 | ((b & 0x7fffff) >> 13)
    try:
        return struct.unpack('<H', struct.pack('<e', x))[0]
    except OverflowError:  # struct refuses to round to infinity; IEEE says inf
        return 0xfc00 if x < 0 else 0x7c00


def bf16_bits_stdlib(x):
    """float32 value -> bfloat16 bits with round-to-nearest-even on the raw bits."""
    b = f32_bits(x)
    if math.isnan(x):
        return ((b >> 16) | 0x40) & 0xffff
    return ((b + 0x7fff + ((b >> 16) & 1)) >> 16) & 0xffff


def half_value(h):
    return struct.unpack('<e', struct.pack('<H', h))[0]


def bf16_value(h):
    return struct.unpack('<f', struct.pack('<I', h << 16))[0]


def convert(values, dtype):
    """Bits of float32 `values` in F16/BF16, from torch when present (checked against stdlib)."""
    ours = [half_bits_stdlib(v) if dtype == 'F16' else bf16_bits_stdlib(v) for v in values]
    if torch is None:
        return ours, 'python struct'
    tdt = torch.float16 if dtype == 'F16' else torch.bfloat16
    theirs = [b & 0xffff for b in torch.tensor(values, dtype=torch.float32).to(tdt).view(torch.int16).tolist()]
    for v, a, b in zip(values, ours, theirs):
        # torch's NaN bits vary by code path (0x7fc0, 0xffff, ...); any NaN is a NaN.
        if math.isnan(v):
            continue
        assert a == b, f'{dtype} of {v!r}: stdlib gives {a:#06x}, torch {b:#06x}'
    # Keep NaNs in the quiet, sign-keeping form so the file does not depend on torch's path.
    return [a if math.isnan(v) else b for v, a, b in zip(values, ours, theirs)], f'torch {torch.__version__}'


def raw(dtype, values):
    if dtype in ('F16', 'BF16'):
        return struct.pack(f'<{len(values)}H', *values)
    return struct.pack(f'<{len(values)}{PACK[dtype]}', *values)


def enc(v):
    """A JSON-safe number: non-finite floats become strings."""
    if isinstance(v, float) and not math.isfinite(v):
        return 'nan' if math.isnan(v) else ('inf' if v > 0 else '-inf')
    return v


def header_bytes(header, indent=None, pad=True):
    text = json.dumps(header, ensure_ascii=False, indent=indent, separators=(',', ':') if indent is None else (',', ': '))
    b = text.encode('utf-8')
    if pad:
        b += b' ' * ((8 - len(b) % 8) % 8)
    return b


def main():
    os.makedirs(OUT, exist_ok=True)
    expected = {}

    # float32 sources for the half types: exact values, ties (which must go to even), the
    # subnormal range, overflow to infinity, and the special values.
    half_src = [f32(x) for x in [
        0.0, -0.0, 1.0, -2.5, 65504.0, 65519.0, 65520.0, -65520.0, 1e10,
        1.0 + 2 ** -10, 1.0 + 2 ** -11, 1.0 + 3 * 2 ** -11, 2 ** -24, 2 ** -25, 3 * 2 ** -26,
        1023 * 2 ** -24, 2 ** -14, 2 ** -14 - 2 ** -25, 1e-10, 0.1, -1 / 3, math.pi, INF, -INF, NAN, -NAN,
    ]]
    bf16_src = [f32(x) for x in [
        0.0, -0.0, 1.0, -2.5, 3.4028234663852886e38, 1e38, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8,
        1e-40, 0.1, math.pi, -1e-3, INF, -INF, NAN, -NAN,
    ]]
    half_bits, half_by = convert(half_src, 'F16')
    bf16_bits, bf16_by = convert(bf16_src, 'BF16')

    tensors = {
        'embed.weight': ('F32', [2, 4], [0.0, -0.0, 1.5, -2.25, INF, -INF, NAN, f32(1.401298464324817e-45)]),
        'lm_head.bias': ('F64', [3], [math.pi, -1e300, 5e-324]),
        'ids': ('I32', [2, 2], [-2 ** 31, 2 ** 31 - 1, 0, -1]),
        'positions': ('I64', [3], [-2 ** 31, 2 ** 31 - 1, 42]),
        'half': ('F16', [len(half_src)], half_bits),
        'brain': ('BF16', [2, len(bf16_src) // 2], bf16_bits),
        'bytes': ('U8', [4], [0, 1, 128, 255]),
        'mask': ('BOOL', [3], [1, 0, 1]),
        'small_ints': ('I8', [2], [-128, 127]),
        'shorts': ('I16', [3], [-32768, 32767, -1]),
        'ushorts': ('U16', [2], [0, 65535]),
        'empty': ('F32', [0, 3], []),
        'scalar': ('F32', [], [7.0]),
        'Z_upper': ('F32', [1], [2.0]),
        'ünïcode.ß': ('F32', [1], [-1.0]),
    }
    metadata = {'format': 'pt', 'note': 'written by tools/make_safetensors_fixture.py ✓'}

    order = sorted(tensors, key=lambda n: (-RANK.index(tensors[n][0]), n.encode('utf-8')))
    header = {'__metadata__': metadata}
    data = b''
    for name in order:
        dtype, shape, values = tensors[name]
        b = raw(dtype, values)
        assert len(b) == math.prod(shape) * SIZE[dtype]
        header[name] = {'dtype': dtype, 'shape': shape, 'data_offsets': [len(data), len(data) + len(b)]}
        data += b
    hb = header_bytes(header)
    with open(os.path.join(OUT, 'small.safetensors'), 'wb') as f:
        f.write(struct.pack('<Q', len(hb)) + hb + data)

    def decoded(dtype, values):
        if dtype == 'F16':
            return [half_value(h) for h in values]
        if dtype == 'BF16':
            return [bf16_value(h) for h in values]
        if dtype == 'F32':
            return [f32(v) for v in values]
        return list(values)

    small = {'metadata': metadata, 'order': order, 'tensors': {}}
    for name, (dtype, shape, values) in tensors.items():
        t = {'dtype': dtype, 'shape': shape, 'values': [enc(v) for v in decoded(dtype, values)]}
        if dtype == 'F16':
            t['source'] = [enc(v) for v in half_src]
            t['bits'] = half_bits
        if dtype == 'BF16':
            t['source'] = [enc(v) for v in bf16_src]
            t['bits'] = bf16_bits
        small['tensors'][name] = t
    expected['small'] = small
    expected['converted_by'] = {'F16': half_by, 'BF16': bf16_by}

    # A valid but unusual file: layout b, a, c (so 'a' and 'c' are misaligned), header keys
    # listed c, a, b, indented JSON, no padding, no metadata.
    u = {
        'b': ('F16', [3], [0x3c00, 0xc000, 0x0001]),  # 1, -2, smallest subnormal
        'a': ('F32', [2], [0.5, -0.25]),
        'c': ('I64', [1], [-7]),
    }
    offsets = {}
    data = b''
    for name in ['b', 'a', 'c']:
        dtype, shape, values = u[name]
        b = raw(dtype, values)
        offsets[name] = [len(data), len(data) + len(b)]
        data += b
    header = {name: {'dtype': u[name][0], 'shape': u[name][1], 'data_offsets': offsets[name]} for name in ['c', 'a', 'b']}
    hb = header_bytes(header, indent=1, pad=False)
    assert len(hb) % 8 != 0, 'the unordered fixture is meant to be misaligned'
    with open(os.path.join(OUT, 'unordered.safetensors'), 'wb') as f:
        f.write(struct.pack('<Q', len(hb)) + hb + data)
    expected['unordered'] = {
        'metadata': {},
        'order': ['b', 'a', 'c'],
        'tensors': {name: {'dtype': d, 'shape': s, 'values': [enc(v) for v in decoded(d, vals)]} for name, (d, s, vals) in u.items()},
    }

    with open(os.path.join(OUT, 'expected.json'), 'w', encoding='utf-8') as f:
        json.dump(expected, f, ensure_ascii=False, indent=1)
        f.write('\n')
    print(f'wrote {OUT} (half types converted by {half_by})')


if __name__ == '__main__':
    main()

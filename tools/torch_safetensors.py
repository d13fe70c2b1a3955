"""write_safetensors(path, tensors): torch tensors (float32, bfloat16, float16) as a safetensors
file, names sorted, `format: pt` metadata, the header padded to 8 bytes. Shared by the PyTorch
reference scripts under tools/ (there is no `safetensors` package on this machine)."""
import json
import struct

import torch

DT = {torch.float32: 'F32', torch.bfloat16: 'BF16', torch.float16: 'F16'}


def write_safetensors(path, tensors):
    header, blobs, off = {'__metadata__': {'format': 'pt'}}, [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        raw = t.view(torch.int16).numpy().tobytes() if t.dtype in (torch.bfloat16, torch.float16) else t.numpy().tobytes()
        header[name] = {'dtype': DT[t.dtype], 'shape': list(t.shape), 'data_offsets': [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)

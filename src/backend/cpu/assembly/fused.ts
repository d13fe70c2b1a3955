// Fused Transformer kernels: attention, norms, softmax, cross-entropy, GELU, AdamW.

// Matmul and element-wise kernels (owned by the runtime/matmul work).

// AssemblyScript entry: the kernels of the cpu backend. Every exported kernel takes
// (tid: i32, nt: i32, ...) first and does its own share of the work.
export * from "./matmul";
export * from "./fused";
export * from "./quant";

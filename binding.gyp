{
  "variables": { "attn_mpi": "<!(node scripts/mpi-flags.mjs have)" },
  "targets": [
    {
      "target_name": "attn_native",
      "sources": ["native/addon.cc", "native/attention.cc", "native/decode.cc", "native/fused.cc", "native/gemm.cc", "native/pool.cc", "native/quant.cc", "native/rows.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-O3", "-fno-math-errno", "-fno-trapping-math", "-Wno-maybe-uninitialized", "-fopenmp-simd"],
      "cflags_cc!": ["-fno-exceptions"],
      "conditions": [
        ["attn_mpi==1", {
          "sources": ["native/mpi.cc"],
          "defines": ["ATTN_HAVE_MPI"],
          "cflags_cc": ["<!@(node scripts/mpi-flags.mjs cflags)"],
          "libraries": ["<!@(node scripts/mpi-flags.mjs libs)"]
        }]
      ]
    }
  ]
}

#!/usr/bin/env bash
# The command run on the GPU machine (through the device tool) for bench/gpu.ts: unpacks the
# .gpu/ bundle that tools/gpu-bundle.sh made (node, the webgpu package, the Vulkan loader),
# points the Vulkan loader at NVIDIA's driver and runs the benchmark with the given arguments.
#   tools/gpu-run.sh [bench/gpu.ts arguments]      e.g. tools/gpu-run.sh --to-loss 1.47
#   tools/gpu-run.sh --tests [pattern]             the webgpu test files (ATTN_REQUIRE_WEBGPU=1)
#                                                  on that machine's adapter instead
#   tools/gpu-run.sh --script FILE [args]          bash FILE args, with ATTN_NODE set to the
#                                                  bundled node (e.g. tools/transfer-sweep.sh)
# Needs .gpu/ and dist/ (carried: [".gpu", "dist"]). With $OUT set (the device tool), the JSON
# results and the whole log go there as gpu.json and gpu.log (gpu-TAG.* with ATTN_GPU_TAG=TAG,
# for a second run in the same command). Also runs on an ordinary machine (software adapter).
set -euo pipefail
cd "$(dirname "$0")/.."
B=.gpu
R=${ATTN_GPU_DIR:-/tmp/attn-gpu}
[ -f "$B/node.xz" ] || { echo "gpu-run: no $B/node.xz: run tools/gpu-bundle.sh here and carry .gpu" >&2; exit 2; }
[ -f dist/bench/gpu.js ] || { echo "gpu-run: no dist/bench/gpu.js: run npx tsc -p tsconfig.json and carry dist" >&2; exit 2; }

unxz_to() { # file.xz destination; python's lzma where xz is missing
  if command -v xz >/dev/null; then xz -dc "$1" >"$2"; else python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"; fi
}

mkdir -p "$R"
if [ ! -x "$R/node" ]; then unxz_to "$B/node.xz" "$R/node.tmp" && chmod +x "$R/node.tmp" && mv "$R/node.tmp" "$R/node"; fi
# Node resolves 'webgpu' from dist/ up to ./node_modules: place the bundled package there
# unless an installed one exists (npm's, on a development machine).
if [ ! -f node_modules/webgpu/dist/linux-x64/dawn.node ]; then
  mkdir -p node_modules/webgpu/dist/linux-x64
  cp "$B/webgpu/index.js" "$B/webgpu/package.json" node_modules/webgpu/
  unxz_to "$B/webgpu/dawn.node.xz" node_modules/webgpu/dist/linux-x64/dawn.node
fi

if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  # The loader is missing there: unpack the carried debs into / (as the device README says;
  # only these libraries, other packages can break /), then point it at NVIDIA's driver files.
  if ! ldconfig -p | grep -q 'libvulkan\.so\.1'; then
    if [ "$(id -u)" = 0 ]; then
      for f in "$B"/debs/*.deb; do dpkg -x "$f" /; done
      ldconfig
    else
      echo "gpu-run: libvulkan.so.1 missing and not root: cannot unpack $B/debs" >&2
    fi
  fi
  nv=/usr/local/nvidia/share
  if [ -f "$nv/vulkan/icd.d/nvidia_icd.json" ]; then export VK_DRIVER_FILES=${VK_DRIVER_FILES:-$nv/vulkan/icd.d/nvidia_icd.json}; fi
  if [ -f "$nv/glvnd/egl_vendor.d/10_nvidia.json" ]; then export __EGL_VENDOR_LIBRARY_FILENAMES=${__EGL_VENDOR_LIBRARY_FILENAMES:-$nv/glvnd/egl_vendor.d/10_nvidia.json}; fi
  export ATTN_WEBGPU_BACKEND=${ATTN_WEBGPU_BACKEND:-vulkan}
fi
echo "gpu-run: node $("$R/node" --version), ATTN_WEBGPU_BACKEND=${ATTN_WEBGPU_BACKEND:-auto}, VK_DRIVER_FILES=${VK_DRIVER_FILES:-unset}" >&2

if [ "${1:-}" = --tests ]; then
  pat=${2:-webgpu-}
  files=(dist/test/*"$pat"*.test.js)
  set -o pipefail
  ATTN_REQUIRE_WEBGPU=1 "$R/node" --test --test-concurrency=1 "${files[@]}" 2>&1 | tee "${OUT:-/tmp}/gpu-tests.log"
  exit
fi

if [ "${1:-}" = --script ]; then
  ATTN_NODE="$R/node" exec bash "${@:2}"
fi

args=("$@")
if [ -n "${OUT:-}" ]; then
  case " $* " in *" --out "* | *" --out="*) ;; *) args+=(--out "$OUT/gpu${ATTN_GPU_TAG:+-$ATTN_GPU_TAG}.json") ;; esac
  set -o pipefail
  "$R/node" dist/bench/gpu.js "${args[@]}" 2>&1 | tee "$OUT/gpu${ATTN_GPU_TAG:+-$ATTN_GPU_TAG}.log"
else
  exec "$R/node" dist/bench/gpu.js "${args[@]}"
fi

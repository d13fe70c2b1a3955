#!/usr/bin/env bash
# Builds .gpu/ (gitignored): what the GPU machine lacks to run bench/gpu.ts there. That machine
# (x86-64, CUDA, PyTorch, NVIDIA's driver) has neither Node.js nor the Vulkan loader and reaches
# nothing outside, so the bundle holds:
#   node.xz                       this machine's node binary (self-contained but for libc/libstdc++)
#   webgpu/                       the `webgpu` package's index.js, package.json and its linux-x64
#                                 dawn.node.xz (the only file of node_modules the bench needs)
#   debs/*.deb                    the Vulkan loader and glvnd's EGL/GL libraries (apt-get download,
#                                 as /work/.library/device/README.md describes)
#   MANIFEST                      versions and sizes
# Compressed because the whole working tree that travels is limited to 64 MiB; tools/gpu-run.sh
# unpacks it on the machine. Carry: [".gpu", "dist"] (dist/ from `npx tsc -p tsconfig.json`).
#   tools/gpu-bundle.sh            # rebuilds .gpu/ from scratch
set -euo pipefail
cd "$(dirname "$0")/.."
B=.gpu

node_bin=$(command -v node) || { echo "gpu-bundle: no node on PATH" >&2; exit 1; }
node_bin=$(readlink -f "$node_bin")
[ "$(uname -m)" = x86_64 ] || { echo "gpu-bundle: the GPU machine is x86-64; this one is $(uname -m)" >&2; exit 1; }
# A node built against a shared libnode would need it too: refuse rather than ship half of it.
if ldd "$node_bin" | grep -Eq 'not found|libnode|libuv|libssl|libicu'; then
  echo "gpu-bundle: $node_bin links shared libraries the GPU machine may lack:" >&2
  ldd "$node_bin" >&2
  exit 1
fi
dawn=node_modules/webgpu/dist/linux-x64/dawn.node
[ -f "$dawn" ] || { echo "gpu-bundle: $dawn missing (npm install)" >&2; exit 1; }

rm -rf "$B"
mkdir -p "$B/webgpu" "$B/debs"
echo "node: $node_bin ($("$node_bin" --version))" >&2
xz -6 -T0 -c "$node_bin" >"$B/node.xz"
cp node_modules/webgpu/index.js node_modules/webgpu/package.json "$B/webgpu/"
xz -6 -T0 -c "$dawn" >"$B/webgpu/dawn.node.xz"

# The amd64 package lists go to their own folder, so this machine's apt state stays as it is.
lists=${TMPDIR:-/tmp}/attn-gpu-apt-lists
mkdir -p "$lists/partial"
o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists")
apt-get "${o[@]}" update >&2
(cd "$B/debs" && apt-get "${o[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 >&2)

{
  echo "built $(date -u +%FT%TZ) on $(uname -m), $(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "node $("$node_bin" --version) from $node_bin"
  echo "webgpu $(node -p "require('./node_modules/webgpu/package.json').version")"
  (cd "$B" && ls -l node.xz webgpu debs)
} >"$B/MANIFEST"
du -sh "$B" >&2

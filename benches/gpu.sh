#!/usr/bin/env bash
# GPU benchmark for an NVIDIA H200 (or any Linux machine with an NVIDIA GPU, Vulkan and PyTorch):
# Burn on wgpu (Vulkan) side by side with PyTorch CUDA, the same workloads as `cargo bench
# --bench train` (fine-tune step, frozen-backbone step, eval forward at 32x32/b128 and
# 224x224/b32) plus a 5-epoch memory check. Finishes in a few minutes.
#
#   benches/gpu.sh prepare   # HERE (x86-64 Linux with cargo): build the bench binary, fetch the
#                            # Vulkan loader package; puts both under .gpu/ (git-ignored, ~11 MB:
#                            # name .gpu in the device tool's `carry`)
#   benches/gpu.sh run       # THERE (on the GPU machine, from the repository root, with .gpu/):
#                            # unpacks the loader, runs Burn on wgpu and PyTorch on cuda, prints
#                            # the table; writes the JSON to $OUT (or .gpu/) as gpu-bench.json
#
# If cargo is available on the GPU machine, `benches/gpu.sh run` builds there instead.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"
dir=.gpu

prepare() {
  mkdir -p "$dir/deb"
  grep -qxF "/$dir/" .git/info/exclude 2>/dev/null || echo "/$dir/" >> .git/info/exclude
  cargo bench --bench train --features wgpu --no-run 2>&1 | tail -2
  bin=$(ls -t target/release/deps/train-* | grep -v '\.d$' | head -1)
  # Compressed: the device tool carries at most 64 MiB, the binary is about 65 MB.
  rm -f "$dir/train-bench"
  strip -o "$dir/train-bench.tmp" "$bin" 2>/dev/null || cp "$bin" "$dir/train-bench.tmp"
  xz -T2 -6 -c "$dir/train-bench.tmp" > "$dir/train-bench.xz" && rm -f "$dir/train-bench.tmp"
  (cd "$dir/deb" && apt-get download libvulkan1 >/dev/null)
  ls -la "$dir" "$dir/deb"
}

run() {
  if command -v cargo >/dev/null 2>&1 && [ ! -f "$dir/train-bench.xz" ]; then
    prepare
  fi
  if [ -f "$dir/train-bench.xz" ] && [ ! -x "$dir/train-bench" ]; then
    if command -v xz >/dev/null 2>&1; then
      xz -d -c "$dir/train-bench.xz" > "$dir/train-bench"
    else
      python3 -c "import lzma,sys; open(sys.argv[2],'wb').write(lzma.open(sys.argv[1]).read())" "$dir/train-bench.xz" "$dir/train-bench"
    fi
    chmod +x "$dir/train-bench"
  fi
  [ -x "$dir/train-bench" ] || { echo "no $dir/train-bench: run 'benches/gpu.sh prepare' on a build machine and carry $dir" >&2; exit 1; }
  if ! ldconfig -p | grep -q libvulkan.so.1; then
    for f in "$dir"/deb/*.deb; do dpkg -x "$f" /; done
    ldconfig
  fi
  icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  [ -f "$icd" ] && export VK_DRIVER_FILES="$icd"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  out="${OUT:-$dir}"
  mkdir -p "$out"
  # GPU memory over a multi-epoch run, sampled in the background.
  (for _ in $(seq 1 600); do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; sleep 1; done) > "$out/gpu-mem.txt" 2>/dev/null &
  sampler=$!
  # GPU_BENCH_ARGS overrides the workload (e.g. a quick smoke test of this script on a CPU).
  # shellcheck disable=SC2086
  timeout 480 "$dir/train-bench" ${GPU_BENCH_ARGS:---devices wgpu --pytorch-device cuda --leak-epochs 5} \
    --json "$out/gpu-bench.json" || echo "bench exited with $?"
  kill "$sampler" 2>/dev/null || true
  echo "GPU memory used (MiB), sampled each second: min $(sort -n "$out/gpu-mem.txt" | head -1), max $(sort -n "$out/gpu-mem.txt" | tail -1)"
}

case "$mode" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: $0 prepare|run" >&2; exit 2 ;;
esac

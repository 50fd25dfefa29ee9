#!/usr/bin/env bash
# GPU benchmark for an NVIDIA machine (an H200 here): Burn on CUDA and on wgpu (Vulkan), each in
# f32 and bf16, side by side with PyTorch on CUDA, eager f32 and bf16 autocast; the workloads of
# `cargo bench --bench train` (fine-tune step, frozen-backbone step, eval forward) for ResNet-18,
# ConvNeXt-T, EfficientNet-B0, MobileNetV3-L and ViT-B/16 at 224x224, batch 32. One table at the
# end. Every run has its own time limit, so the whole script ends within about 8 minutes, and
# what a run measured before its limit is still in the table.
#
#   benches/gpu.sh prepare   # HERE (x86-64 Linux with cargo): build the bench binary with the
#                            # cuda and wgpu features, fetch the Vulkan loader package; both go
#                            # under .gpu/ (git-ignored: name .gpu in the device tool's `carry`)
#   benches/gpu.sh run       # THERE (on the GPU machine, from the repository root, with .gpu/):
#                            # runs Burn (cuda, wgpu; f32, bf16) and PyTorch (cuda; eager, bf16
#                            # autocast), prints the table, writes the logs and gpu-table.json to
#                            # $OUT (or .gpu/)
#
# GPU_ARCHS, GPU_SIZES and GPU_DEVICES override the architectures (comma-separated), the image
# sizes and the Burn devices (default: cuda wgpu). If cargo is available on the GPU machine,
# `run` builds there instead. bf16 in Burn is pure bf16 (weights, activations and optimizer
# state; Burn 0.22 has no autocast and no f32 master weights); PyTorch's is autocast.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"
dir=.gpu
archs="${GPU_ARCHS:-resnet18,convnext_tiny,efficientnet_b0,mobilenet_v3_large,vit_b_16}"
sizes="${GPU_SIZES:-224}"
devices="${GPU_DEVICES:-cuda wgpu}"

prepare() {
  mkdir -p "$dir/deb"
  grep -qxF "/$dir/" .git/info/exclude 2>/dev/null || echo "/$dir/" >> .git/info/exclude
  # cubecl-cuda's build downloads an LLVM bundle (tracel-llvm-bundler): without the network
  # the cuda build fails, and the bench is built for wgpu alone (its cuda runs then say so).
  if ! cargo bench --bench train --features wgpu,cuda --no-run 2>&1 | tail -2; then
    echo "the cuda build failed (it downloads LLVM at build time): building wgpu alone"
    cargo bench --bench train --features wgpu --no-run 2>&1 | tail -2
  fi
  bin=$(ls -t target/release/deps/train-* | grep -v '\.d$' | head -1)
  # Compressed: the device tool carries at most 64 MiB.
  rm -f "$dir/train-bench"
  strip -o "$dir/train-bench.tmp" "$bin" 2>/dev/null || cp "$bin" "$dir/train-bench.tmp"
  xz -T2 -6 -c "$dir/train-bench.tmp" > "$dir/train-bench.xz" && rm -f "$dir/train-bench.tmp"
  (cd "$dir/deb" && apt-get download libvulkan1 >/dev/null)
  ls -la "$dir" "$dir/deb"
  # What `run` will do, checked here: the binary starts and knows every architecture.
  xz -d -c "$dir/train-bench.xz" > "$dir/train-bench" && chmod +x "$dir/train-bench"
  "$dir/train-bench" --archs "$archs" --devices flex --sizes 32 --workloads eval_forward \
    --quick --no-pytorch 2>&1 | tail -3
  rm -f "$dir/train-bench"  # only the compressed binary is carried
  echo "prepared: run 'benches/gpu.sh run' on the GPU machine with $dir carried"
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
  # Burn: one process per device and float type (Burn fixes a device's float type at its
  # first tensor). The bench prints each figure as it is measured; the table reads the logs,
  # so a run cut by its limit still shows what it measured.
  for device in $devices; do
    for dtype in f32 bf16; do
      echo "== Burn $device $dtype"
      timeout -k 10 90 "$dir/train-bench" --devices "$device" --dtype "$dtype" --archs "$archs" \
        --sizes "$sizes" --quick --no-pytorch 2> "$out/burn-$device-$dtype.log" >/dev/null \
        || echo "   (exited with $?)"
      tail -n 3 "$out/burn-$device-$dtype.log" | sed 's/^/   /'
    done
  done
  for amp in none bf16; do
    echo "== PyTorch cuda autocast=$amp"
    flag=()
    [ "$amp" != none ] && flag=(--autocast "$amp")
    timeout -k 10 60 python3 benches/pytorch_baseline.py --device cuda --quick --archs "$archs" \
      --sizes "$sizes" ${flag[@]+"${flag[@]}"} 2> "$out/torch-$amp.log" >/dev/null || echo "   (exited with $?)"
    tail -n 3 "$out/torch-$amp.log" | sed 's/^/   /'
  done
  python3 - "$out" "$sizes" <<'EOF'
import glob, json, os, re, sys
out = sys.argv[1]
table, columns = {}, []
line = re.compile(r"^(?:(\S+) )?(\S+) (\w+_\d+): ([0-9.]+|NaN|nan) img/s$")
def read(path, column):
    columns.append(column)
    for text in open(path, errors="replace"):
        m = line.match(text.strip())
        if m:
            table.setdefault((m.group(2), m.group(3)), {})[column] = float(m.group(4))
for path in sorted(glob.glob(os.path.join(out, "burn-*.log"))):
    device, dtype = os.path.basename(path)[5:-4].rsplit("-", 1)
    read(path, f"Burn {device} {dtype}")
for amp in ["none", "bf16"]:
    path = os.path.join(out, f"torch-{amp}.log")
    if os.path.exists(path):
        read(path, "PyTorch cuda " + ("f32" if amp == "none" else "bf16 autocast"))
print(f"\nimages/second at sizes {sys.argv[2]} (batch 128 up to 64 pixels, 32 above); ratio: Burn / PyTorch f32 eager")
head = f"{'architecture':<20} {'workload':<20}" + "".join(f"{c:>24}" for c in columns)
print(head)
print("-" * len(head))
for (arch, workload), row in sorted(table.items()):
    ref = row.get("PyTorch cuda f32")
    cells = []
    for c in columns:
        v = row.get(c)
        if v is None:
            cells.append(f"{'-':>24}")
        elif c.startswith("Burn") and ref:
            cells.append(f"{v:>14.1f} ({v / ref:4.2f}x)")
        else:
            cells.append(f"{v:>24.1f}")
    print(f"{arch:<20} {workload:<20}" + "".join(cells))
json.dump({f"{a}/{w}": r for (a, w), r in table.items()},
          open(os.path.join(out, "gpu-table.json"), "w"), indent=2)
EOF
}

case "$mode" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: $0 prepare|run" >&2; exit 2 ;;
esac

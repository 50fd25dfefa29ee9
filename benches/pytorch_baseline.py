"""PyTorch side of the side-by-side benchmark (benches/train.rs runs it and prints both).

Times, with the same shapes as the Burn benchmark, images/second (median of repeated timed runs,
warm-up excluded), for each torchvision architecture of --archs (10-class head):
  finetune_step  the full model forward + backward + SGD(momentum 0.9) step
  frozen_step    the tutorial's fixed feature extractor: backbone requires_grad=False, model.train(),
                 a new last Linear (fc, classifier[-1], heads.head)
  eval_forward   model.eval() forward under torch.no_grad()
at 32x32 (batch 128) and 224x224 (batch 32). Workloads are reported as "arch/name_size".

  python3 benches/pytorch_baseline.py [--device cpu|cuda] [--threads N] [--quick] [--json FILE]
      [--archs resnet18,convnext_tiny] [--sizes 32,224] [--autocast bf16|f16]

--autocast runs the forward passes (and the loss) under torch.autocast with that dtype: PyTorch's
automatic mixed precision, f32 weights and optimizer (bf16 needs no GradScaler).
"""
import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn as nn
import torchvision


def replace_head(model):
    """Puts a new 10-class last Linear in place (requires_grad=True), as the tutorial does."""
    if hasattr(model, "fc"):
        model.fc = nn.Linear(model.fc.in_features, 10)
    elif hasattr(model, "heads"):
        model.heads.head = nn.Linear(model.heads.head.in_features, 10)
    else:
        last = model.classifier[-1]
        model.classifier[-1] = nn.Linear(last.in_features, 10)


def make_model(arch, device, frozen):
    model = torchvision.models.get_model(arch, weights=None, num_classes=10)
    if frozen:
        for p in model.parameters():
            p.requires_grad = False
        replace_head(model)
    model = model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.001, momentum=0.9)
    return model, opt


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_runs(fn, device, warmup, runs, iters):
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        sync(device)
        times.append((time.perf_counter() - t0) / iters)
    return statistics.median(times)


def bench(arch, device, size, batch, warmup, runs, iters, autocast=None):
    import contextlib

    def amp():
        if autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=autocast)

    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    loss_fn = nn.CrossEntropyLoss()
    out = {}
    for name, frozen in [("finetune_step", False), ("frozen_step", True)]:
        model, opt = make_model(arch, device, frozen)
        model.train()

        def step():
            opt.zero_grad()
            with amp():
                loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            loss.item()  # the training loop reads the loss every batch, as ours does

        out[name] = batch / time_runs(step, device, warmup, runs, iters)
    model, _ = make_model(arch, device, False)
    model.eval()

    def forward():
        with torch.no_grad(), amp():
            model(x).cpu()

    out["eval_forward"] = batch / time_runs(forward, device, warmup, runs, iters)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--archs", default="resnet18")
    ap.add_argument("--sizes", default="32,224")
    ap.add_argument("--autocast", choices=["bf16", "f16"])
    args = ap.parse_args()
    autocast = {"bf16": torch.bfloat16, "f16": torch.float16, None: None}[args.autocast]
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    warmup, runs = (1, 3) if args.quick else (2, 5)
    results = {
        "framework": f"PyTorch {torch.__version__}",
        "device": args.device,
        "autocast": args.autocast,
        "threads": torch.get_num_threads(),
        "workloads": {},
    }
    sizes = [int(s) for s in args.sizes.split(",")]
    for arch in args.archs.split(","):
        for size in sizes:
            batch, iters = (128, 2) if size <= 64 else (32, 1)
            for name, ips in bench(arch, device, size, batch, warmup, runs, iters, autocast).items():
                results["workloads"][f"{arch}/{name}_{size}"] = ips
                print(f"{arch} {name}_{size}: {ips:.1f} img/s", file=sys.stderr)
    text = json.dumps(results, indent=2)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    else:
        print(text)


if __name__ == "__main__":
    main()

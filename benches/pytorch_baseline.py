"""PyTorch side of the side-by-side benchmark (benches/train.rs runs it and prints both).

Times, with the same shapes as the Burn benchmark, images/second (median of repeated timed runs,
warm-up excluded):
  finetune_step  full ResNet-18 (10-class head) forward + backward + SGD(momentum 0.9) step
  frozen_step    the tutorial's fixed feature extractor: backbone requires_grad=False, model.train()
  eval_forward   model.eval() forward under torch.no_grad()
at 32x32 (batch 128) and 224x224 (batch 32).

  python3 benches/pytorch_baseline.py [--device cpu|cuda] [--threads N] [--quick] [--json FILE]
"""
import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn as nn
import torchvision


def make_model(device, frozen):
    model = torchvision.models.resnet18(weights=None)
    model.fc = nn.Linear(model.fc.in_features, 10)
    if frozen:
        for p in model.parameters():
            p.requires_grad = False
        model.fc = nn.Linear(model.fc.in_features, 10)
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


def bench(device, size, batch, warmup, runs, iters):
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    loss_fn = nn.CrossEntropyLoss()
    out = {}
    for name, frozen in [("finetune_step", False), ("frozen_step", True)]:
        model, opt = make_model(device, frozen)
        model.train()

        def step():
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            loss.item()  # the training loop reads the loss every batch, as ours does

        out[name] = batch / time_runs(step, device, warmup, runs, iters)
    model, _ = make_model(device, False)
    model.eval()

    def forward():
        with torch.no_grad():
            model(x).cpu()

    out["eval_forward"] = batch / time_runs(forward, device, warmup, runs, iters)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    warmup, runs = (1, 3) if args.quick else (2, 5)
    results = {
        "framework": f"PyTorch {torch.__version__}",
        "device": args.device,
        "threads": torch.get_num_threads(),
        "workloads": {},
    }
    for size, batch, iters in [(32, 128, 2), (224, 32, 1)]:
        for name, ips in bench(device, size, batch, warmup, runs, iters).items():
            results["workloads"][f"{name}_{size}"] = ips
            print(f"{name}_{size}: {ips:.1f} img/s", file=sys.stderr)
    text = json.dumps(results, indent=2)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    else:
        print(text)


if __name__ == "__main__":
    main()

"""The tutorial recipe in PyTorch on the same images, for the side-by-side run in the notes.

Mirrors `cargo run --release --example finetune -- --image-folder DIR --image-size 32 ...` as
the crate ran it before image folders took the tutorial's RandomResizedCrop (the README's
side-by-side figures were measured then): an image folder (class sub-folders) with 10% held out
(half validation, half test), images decoded once into memory, train transform random
horizontal flip + normalise (ImageNet mean/std), eval transform normalise, a torchvision model (`--arch`, ResNet-18 by default) with a
new last Linear, cross-entropy, SGD
lr 0.001 momentum 0.9, StepLR(7, 0.1) per epoch, batch 128 (last partial batch dropped), best
validation weights kept, then test accuracy. `--weights none` (random init) or `imagenet`
(torchvision's download; needs the network or torch's cache).

  python3 benches/pytorch_tutorial.py --image-folder ../shared/data/cifar10-jpg/train \
      --epochs 1 [--mode finetune|feature_extractor] [--threads 2]
"""
import argparse
import copy
import statistics
import time

import numpy as np
import torch
import torch.nn as nn
import torchvision
from PIL import Image

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def load(root, size):
    ds = torchvision.datasets.ImageFolder(root)
    images = np.empty((len(ds), size, size, 3), dtype=np.uint8)
    for i, (path, _) in enumerate(ds.samples):
        img = Image.open(path).convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        images[i] = np.asarray(img)
    labels = torch.tensor([t for _, t in ds.samples])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels, ds.classes


def batches(x, y, batch, shuffle, drop_last, gen, flip):
    n = len(x)
    order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    stop = n - n % batch if drop_last else n
    for i in range(0, stop, batch):
        idx = order[i : i + batch]
        imgs = x[idx].float().div_(255)
        if flip:
            mask = torch.rand(len(idx), generator=gen) < 0.5
            imgs[mask] = imgs[mask].flip(3)
        yield (imgs - MEAN) / STD, y[idx]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--image-folder", required=True)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.001)
    ap.add_argument("--holdout", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--mode", default="finetune", choices=["finetune", "feature_extractor"])
    ap.add_argument("--weights", default="none", choices=["none", "imagenet"])
    ap.add_argument("--arch", default="resnet18", help="any torchvision classification model name")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    x, y, classes = load(args.image_folder, args.image_size)
    print(f"loaded {len(x)} images of {len(classes)} classes in {time.time() - t0:.1f} s")
    gen = torch.Generator().manual_seed(args.seed)
    perm = torch.randperm(len(x), generator=gen)
    held = round(len(x) * args.holdout)
    tr, va, te = perm[: len(x) - held], perm[len(x) - held : len(x) - held // 2], perm[len(x) - held // 2 :]
    weights = "DEFAULT" if args.weights == "imagenet" else None
    model = torchvision.models.get_model(args.arch, weights=weights)
    if args.mode == "feature_extractor":
        for p in model.parameters():
            p.requires_grad = False
    # A new last Linear: fc (ResNet), heads.head (ViT), classifier[-1] (the others).
    if hasattr(model, "fc"):
        model.fc = nn.Linear(model.fc.in_features, len(classes))
    elif hasattr(model, "heads"):
        model.heads.head = nn.Linear(model.heads.head.in_features, len(classes))
    else:
        model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, len(classes))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.1)
    loss_fn = nn.CrossEntropyLoss()

    def evaluate(idx):
        model.eval()
        loss_sum, correct = 0.0, 0
        with torch.no_grad():
            for xb, yb in batches(x[idx], y[idx], args.batch_size, False, False, gen, False):
                out = model(xb)
                loss_sum += loss_fn(out, yb).item() * len(yb)
                correct += (out.argmax(1) == yb).sum().item()
        return loss_sum / len(idx), correct / len(idx)

    best, best_acc, speeds = copy.deepcopy(model.state_dict()), -1.0, []
    for epoch in range(1, args.epochs + 1):
        model.train()
        start, seen, loss_sum, correct = time.time(), 0, 0.0, 0
        for xb, yb in batches(x[tr], y[tr], args.batch_size, True, True, gen, True):
            opt.zero_grad()
            out = model(xb)
            loss = loss_fn(out, yb)
            loss.backward()
            opt.step()
            seen += len(yb)
            loss_sum += loss.item() * len(yb)
            correct += (out.argmax(1) == yb).sum().item()
        train_s = time.time() - start
        sched.step()
        val_loss, val_acc = evaluate(va)
        speeds.append(seen / train_s)
        print(
            f"Epoch {epoch}/{args.epochs}  train loss {loss_sum / seen:.4f} acc {correct / seen:.4f} | "
            f"val loss {val_loss:.4f} acc {val_acc:.4f} | {time.time() - start:.1f} s, {seen / train_s:.1f} img/s"
        )
        if val_acc > best_acc:
            best_acc, best = val_acc, copy.deepcopy(model.state_dict())
    model.load_state_dict(best)
    test_loss, test_acc = evaluate(te)
    print(
        f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads: best val acc {best_acc:.4f}, "
        f"test acc {test_acc:.4f} (loss {test_loss:.4f}), median {statistics.median(speeds):.1f} train img/s, "
        f"total {time.time() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()

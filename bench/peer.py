#!/usr/bin/python3
"""The Python peer of `alexnet bench`: what a user would run instead of alexnet-cpp.

PyTorch with torch.nn.LocalResponseNorm, the same grouped (two-column) AlexNet with LRN per
column after conv1 and conv2, SGD with momentum; torchvision's ImageFolder + DataLoader with
the paper's training transforms. Prints one JSON object per run.

Usage (with the interpreter that has torch and torchvision, /usr/bin/python3 on Debian):
  peer.py train [--batch-size 64] [--image-size 224] [--repeats 3] [--warmup 1] [--threads N]
                [--device cpu|cuda] [--no-lrn] [--bf16 | --fp16]
  peer.py data --root DIR [--workers 2] [--batch-size 64] [--repeats 3]
"""
import argparse
import contextlib
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class AlexNet(nn.Module):
    """The paper's grouped net: 96-256-384-384-256 kernels, groups=2 where a column sees only
    its own maps, LRN (the paper's printed constants, i.e. alpha * n for PyTorch's convention)
    per column, overlapping max-pooling, dropout on fc6 and fc7."""

    def __init__(self, num_classes=1000, lrn=True):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 96, 11, stride=4, padding=2)
        self.conv2 = nn.Conv2d(96, 256, 5, padding=2, groups=2)
        self.conv3 = nn.Conv2d(256, 384, 3, padding=1)
        self.conv4 = nn.Conv2d(384, 384, 3, padding=1, groups=2)
        self.conv5 = nn.Conv2d(384, 256, 3, padding=1, groups=2)
        self.fc6 = nn.Linear(256 * 6 * 6, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, num_classes)
        self.lrn = nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0) if lrn else None

    def norm(self, x):
        if self.lrn is None:
            return x
        n, c, h, w = x.shape
        # Per column: the window never crosses from one column's maps into the other's.
        # LocalResponseNorm is computed in float, as in the C++ model.
        y = self.lrn(x.reshape(n * 2, c // 2, h, w).float())
        return y.to(x.dtype).reshape(n, c, h, w)

    def forward(self, x):
        x = F.max_pool2d(self.norm(F.relu(self.conv1(x), inplace=True)), 3, 2)
        x = F.max_pool2d(self.norm(F.relu(self.conv2(x), inplace=True)), 3, 2)
        x = F.relu(self.conv3(x), inplace=True)
        x = F.relu(self.conv4(x), inplace=True)
        x = F.max_pool2d(F.relu(self.conv5(x), inplace=True), 3, 2)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 6), 1)
        x = F.dropout(F.relu(self.fc6(x), inplace=True), 0.5, self.training)
        x = F.dropout(F.relu(self.fc7(x), inplace=True), 0.5, self.training)
        return self.fc8(x)


def peak_rss_mib():
    """VmHWM of this process in MiB, as `alexnet bench train` reports it."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return -1.0


def run_train(args):
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = AlexNet(lrn=not args.no_lrn).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    images = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    labels = torch.randint(1000, (args.batch,), device=device)

    if args.bf16 or args.fp16:
        dtype = torch.bfloat16 if args.bf16 else torch.float16
        def autocast():
            return torch.autocast(device_type=device.type, dtype=dtype)
    else:
        autocast = contextlib.nullcontext

    def step():
        optimizer.zero_grad()
        with autocast():
            logits = model(images)
        loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    seconds = []
    cpu_start = time.process_time()
    for _ in range(args.repeats):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    cpu_per_step = (time.process_time() - cpu_start) / args.repeats
    step_s = statistics.median(seconds)
    return {
        "bench": "train", "peer": "pytorch", "torch": torch.__version__,
        "batch": args.batch, "image_size": args.image_size, "device": args.device,
        "threads": torch.get_num_threads(), "lrn": not args.no_lrn, "bf16": args.bf16,
        "fp16": args.fp16, "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "step_s": step_s, "images_per_s": args.batch / step_s, "steps_s": seconds,
        "cpu_s_per_step": cpu_per_step, "images_per_cpu_s": args.batch / cpu_per_step,
        "peak_rss_mib": peak_rss_mib(),
    }


def run_data(args):
    import torchvision
    from torchvision import transforms as T

    # The paper's training augmentation (not RandomResizedCrop): shorter side to 256, the
    # central 256x256, a random 224x224 crop and its mirror; ImageNet's mean and std.
    transform = T.Compose([
        T.Resize(256), T.CenterCrop(256), T.RandomCrop(224), T.RandomHorizontalFlip(),
        T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    dataset = torchvision.datasets.ImageFolder(args.root, transform=transform)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch, shuffle=True, num_workers=args.workers,
        persistent_workers=args.workers > 0, drop_last=False)

    def one_epoch():
        images = 0
        for batch, _ in loader:
            images += batch.shape[0]
        return images

    one_epoch()  # warm-up: workers start, files enter the page cache
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        images = one_epoch()
        rates.append(images / (time.perf_counter() - start))
    return {
        "bench": "data", "peer": "torchvision", "torch": torch.__version__,
        "torchvision": torchvision.__version__, "root": args.root, "images": len(dataset),
        "workers": args.workers, "batch": args.batch,
        "images_per_s": statistics.median(rates), "repeats": rates,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="kind", required=True)
    train = sub.add_parser("train", help="images/s of training steps, peak memory")
    train.add_argument("--batch-size", dest="batch", type=int, default=64)
    train.add_argument("--image-size", type=int, default=224)
    train.add_argument("--repeats", type=int, default=3)
    train.add_argument("--warmup", type=int, default=1)
    train.add_argument("--threads", type=int, default=0, help="0: PyTorch's default")
    train.add_argument("--device", default="cpu")
    train.add_argument("--no-lrn", action="store_true")
    precision = train.add_mutually_exclusive_group()
    precision.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    precision.add_argument("--fp16", action="store_true",
                           help="float16 autocast, CUDA only (no loss scaling, as `alexnet "
                                "bench train --fp16`)")
    data = sub.add_parser("data", help="images/s of ImageFolder + DataLoader")
    data.add_argument("--root", required=True, help="ROOT/<class>/<image>.jpg")
    data.add_argument("--workers", type=int, default=2)
    data.add_argument("--batch-size", dest="batch", type=int, default=64)
    data.add_argument("--repeats", type=int, default=3, help="timed epochs")
    args = parser.parse_args()
    if args.kind == "train":
        if args.batch <= 0 or args.repeats <= 0 or args.warmup < 0:
            parser.error("--batch-size and --repeats must be positive, --warmup >= 0")
        if args.fp16 and not args.device.startswith("cuda"):
            parser.error(f"--fp16 needs a CUDA device, not {args.device}")
        result = run_train(args)
    else:
        if not os.path.isdir(args.root):
            parser.error(f"--root {args.root} is not a folder")
        result = run_data(args)
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()

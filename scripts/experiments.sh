#!/usr/bin/env bash
# Reproduces EXPERIMENTS.md on Fashion-MNIST: the conv1 kernels and fc7 retrieval of the demo
# model (scripts/demo.sh must have written runs/demo/model.pt), ReLU vs tanh, and the
# ablations, and fine-tuning against training from scratch. About an hour on a 2-core
# machine.
#
# Usage: scripts/experiments.sh [OUT]   (default runs/experiments; pictures go to OUT too)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/experiments}"
alexnet=build/app/alexnet
model=runs/demo/model.pt
[[ -x $alexnet ]] || { echo "no $alexnet: run scripts/demo.sh (or scripts/test.sh) first" >&2; exit 2; }
[[ -f $model ]] || { echo "no $model: run scripts/demo.sh first" >&2; exit 2; }
mkdir -p "$out"
t() { local s=$SECONDS; echo "\$ $*" >&2; "$@"; echo "  ($((SECONDS - s)) s)" >&2; }

echo "== Figure 3: conv1 kernels of the demo model"
t "$alexnet" kernels --checkpoint runs/demo/checkpoints/best.pt --out "$out/kernels.png"
# The inputs are grey images replicated to RGB: the net sees only each kernel's channel sum.
t "$alexnet" kernels --checkpoint runs/demo/checkpoints/best.pt --sum-channels --out "$out/kernels-grey.png"

echo "== Figure 4: fc7 retrieval on the 10,000 test images"
t "$alexnet" features --model "$model" --data fashion-mnist --split test --out "$out/test.index"
for k in 1 6; do
  t "$alexnet" neighbours --index "$out/test.index" --precision-at "$k" --pixels --json \
    > "$out/precision_at_$k.json"
  cat "$out/precision_at_$k.json"
done
# One query of each class (the first test image of each), six neighbours each.
queries=$(python3 - <<'PY'
import gzip, glob
path = glob.glob("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte*")[0]
raw = (gzip.open if path.endswith(".gz") else open)(path, "rb").read()[8:]
print(" ".join("#%d" % raw.index(bytes([c])) for c in range(10)))
PY
)
t "$alexnet" neighbours --index "$out/test.index" --k 6 --out "$out/neighbours.png" $queries \
  > "$out/neighbours.txt"

echo "== Figure 1: ReLU vs tanh (10,000 training images, 2 epochs, seed 0)"
t "$alexnet" experiment relu-vs-tanh --train-limit 10000 --epochs 2 --out "$out/relu-vs-tanh"

echo "== Ablations (10,000 training images, 1 epoch, seeds 0 and 1, validated on the test set)"
t "$alexnet" experiment ablation --train-limit 10000 --epochs 1 --seeds 2 \
  --set 'data.holdout=0' --out "$out/ablation"

echo "== Fine-tuning against training from scratch (classes 0-3 / 0-4 -> 5-9, 200 images per class)"
t scripts/fine_tune_experiment.sh "$out/fine-tune"

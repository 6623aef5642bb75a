#!/usr/bin/env bash
# Reproduces EXPERIMENTS.md on Fashion-MNIST: the conv1 kernels and fc7 retrieval of the demo
# model (scripts/demo.sh must have written runs/demo/model.pt), ReLU vs tanh, the ablations,
# binary codes and clustering of fc7 vectors, and fine-tuning against training from scratch.
# About an hour and a half on a 2-core machine.
#
# Usage: scripts/experiments.sh [OUT]   (default runs/experiments; pictures go to OUT too)
# Environment: MODEL (exported model, default runs/demo/model.pt; its run folder's
#   checkpoints/best.pt draws the kernels), SECTIONS (default: kernels retrieval relu ablation
#   codes finetune), CODE_EPOCHS and CODE_HIDDEN (the autoencoders' epochs and width, default 10 and 256),
#   CODE_BITS (default "64 256") and CODE_SEEDS (default "0 1 2").
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/experiments}"
alexnet=build/app/alexnet
model="${MODEL:-runs/demo/model.pt}"
best="$(dirname "$model")/checkpoints/best.pt"
sections=" ${SECTIONS:-kernels retrieval relu ablation codes finetune} "
want() { [[ $sections == *" $1 "* ]]; }
[[ -x $alexnet ]] || { echo "no $alexnet: run scripts/demo.sh (or scripts/test.sh) first" >&2; exit 2; }
[[ -f $model ]] || { echo "no $model: run scripts/demo.sh first" >&2; exit 2; }
mkdir -p "$out"
t() { local s=$SECONDS; echo "\$ $*" >&2; "$@"; echo "  ($((SECONDS - s)) s)" >&2; }

if want kernels; then
echo "== Figure 3: conv1 kernels of the demo model"
t "$alexnet" kernels --checkpoint "$best" --out "$out/kernels.png"
# The inputs are grey images replicated to RGB: the net sees only each kernel's channel sum.
t "$alexnet" kernels --checkpoint "$best" --sum-channels --out "$out/kernels-grey.png"
fi

if want retrieval || { want codes && [[ ! -s $out/test.index ]]; }; then
echo "== fc7 features of the 10,000 test images"
t "$alexnet" features --model "$model" --data fashion-mnist --split test --out "$out/test.index"
fi

if want retrieval; then
echo "== Figure 4: fc7 retrieval on the 10,000 test images"
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
fi

if want relu; then
echo "== Figure 1: ReLU vs tanh (10,000 training images, 2 epochs, seed 0)"
t "$alexnet" experiment relu-vs-tanh --train-limit 10000 --epochs 2 --out "$out/relu-vs-tanh"
fi

if want ablation; then
echo "== Ablations (10,000 training images, 1 epoch, seeds 0 and 1, validated on the test set)"
t "$alexnet" experiment ablation --train-limit 10000 --epochs 1 --seeds 2 \
  --set 'data.holdout=0' --out "$out/ablation"
fi

if want codes; then
echo "== Section 6.1: binary codes of fc7 vectors and of pixels, Hamming search, k-means"
# The autoencoders learn from 5,000 training images (no labels used) and encode the test set.
# Outputs already in OUT are kept (delete OUT/codes to start afresh).
bit_sizes=${CODE_BITS:-64 256}
[[ -s $out/train5k.index ]] ||
  t "$alexnet" features --model "$model" --data fashion-mnist --split train --limit 5000 \
    --out "$out/train5k.index"
mkdir -p "$out/codes"
for input in fc7 pixels; do
  for bits in $bit_sizes; do
    for seed in ${CODE_SEEDS:-0 1 2}; do
      name="$out/codes/$input-$bits-seed$seed"
      [[ -s $name.json ]] ||
        t "$alexnet" codes --index "$out/test.index" --train-index "$out/train5k.index" \
          --input "$input" --bits "$bits" --hidden "${CODE_HIDDEN:-256}" \
          --epochs "${CODE_EPOCHS:-10}" --seed "$seed" --out "$name.codes" --json > "$name.json"
      for k in 1 6; do
        "$alexnet" neighbours --codes "$name.codes" --precision-at "$k" --json \
          > "$name.precision_at_$k.json"
      done
    done
  done
done
for k in 1 6; do
  [[ -s $out/codes/float.precision_at_$k.json ]] ||
    "$alexnet" neighbours --index "$out/test.index" --precision-at "$k" --pixels --json \
      > "$out/codes/float.precision_at_$k.json"
done
# Search speed: every test image's 6 nearest others, by 4,096-d fc7 vectors and by codes.
for bits in $bit_sizes; do
  t "$alexnet" neighbours --index "$out/test.index" --codes "$out/codes/fc7-$bits-seed0.codes" \
    --precision-at 6 --speed --json > "$out/codes/speed-$bits.json"
done
# k-means with k = 10 (the classes), seeds 0-4; a picture of each clustering's first seed.
for input in fc7 pixels; do
  [[ -s $out/clusters-$input.json ]] ||
    t "$alexnet" cluster --index "$out/test.index" --input "$input" --seeds 5 \
      --out "$out/clusters-$input.png" --json > "$out/clusters-$input.json"
done
python3 - "$out" <<'PY'
import glob, json, statistics, sys
out = sys.argv[1]
def spread(values):
    return "%.1f%% +- %.1f" % (100 * statistics.mean(values),
                               100 * statistics.stdev(values) if len(values) > 1 else 0)
for k in (1, 6):
    floats = json.load(open("%s/codes/float.precision_at_%d.json" % (out, k)))
    print("precision@%d: fc7 %.1f%%, raw pixels %.1f%%" % (k, 100 * floats["fc7"], 100 * floats["pixels"]))
    for input in ("fc7", "pixels"):
        for bits in (64, 256):
            paths = sorted(glob.glob("%s/codes/%s-%d-seed*.precision_at_%d.json" % (out, input, bits, k)))
            if not paths:
                continue
            runs = [json.load(open(p))["codes"]["precision"] for p in paths]
            print("  %s %d-bit codes: %s (%d seeds)" % (input, bits, spread(runs), len(runs)))
for path in sorted(glob.glob("%s/codes/speed-*.json" % out)):
    s = json.load(open(path))["search_speed"]
    bits = s["bits"]
    print("search, %d items, %d threads: float %.0f queries/s, %d-bit codes %.0f queries/s (x%.0f)" % (
        s["items"], s["threads"], s["float_queries_per_second"], bits,
        s["hamming_queries_per_second"],
        s["hamming_queries_per_second"] / s["float_queries_per_second"]))
for input in ("fc7", "pixels"):
    c = json.load(open("%s/clusters-%s.json" % (out, input)))[input]
    print("k-means on %s: ARI %.3f +- %.3f, NMI %.3f +- %.3f (%d seeds)" % (
        input, c["ari_mean"], c["ari_std"], c["nmi_mean"], c["nmi_std"], len(c["runs"])))
PY
fi

if want finetune; then
echo "== Fine-tuning against training from scratch (classes 0-3 / 0-4 -> 5-9, 200 images per class)"
t scripts/fine_tune_experiment.sh "$out/fine-tune"
fi

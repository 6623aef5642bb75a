#!/usr/bin/env bash
# Fine-tuning against training from scratch (EXPERIMENTS.md, "Fine-tuning on a small new
# task"). The target task: Fashion-MNIST classes 5-9 (sandal, shirt, sneaker, bag, ankle
# boot) with only 200 training images per class. Two source models, trained on classes none
# of which is a target class: classes 0-3 (4 classes, so fc8 starts new on the target) and
# classes 0-4 (5 classes: fc8 is copied too, its rows meaning other classes). On the target,
# with the same step budget and settings: from scratch; fine-tuned from each source; and
# fine-tuned with conv1-conv5 frozen. Test accuracy on 2,000 of the target classes' 5,000
# test images (400 per class) after every epoch. Runs already finished (model.pt written)
# are kept, so an interrupted run of the script continues.
#
# Usage: scripts/fine_tune_experiment.sh [OUT]   (default runs/fine-tune)
# Environment: SEEDS (default "0 1 2"), WIDTH (model.width, default 0.5), EPOCHS (target
# epochs of 31 steps, default 5), SOURCE_EPOCHS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/fine-tune}"
alexnet=build/app/alexnet
seeds="${SEEDS:-0 1 2}"
width="${WIDTH:-0.5}"
epochs="${EPOCHS:-5}"
source_epochs="${SOURCE_EPOCHS:-2}"
[[ -x $alexnet ]] || { echo "no $alexnet: build it first (scripts/test.sh or ninja)" >&2; exit 2; }
mkdir -p "$out"
t() { local s=$SECONDS; echo "\$ $*" >&2; "$@"; echo "  ($((SECONDS - s)) s)" >&2; }

if [[ ! -d $out/data/target/val ]]; then
  t python3 scripts/fine_tune_data.py "$out/data"
  # The 4-class source: the same images without the coats.
  for split in train val; do
    mkdir -p "$out/data/source-4/$split"
    for class in t-shirt trouser pullover dress; do
      cp -r "$out/data/source/$split/$class" "$out/data/source-4/$split/"
    done
  done
fi

# The demo's settings (64x64 inputs, Kaiming init, lr 0.01, momentum 0.9, weight decay 5e-4)
# at width $width, constant lr; the PNGs are decoded straight to 64x64. Validation is on the
# task's test images (no holdout).
common="model.width=$width;data.holdout=0;data.decode_size=64;data.workers=1;log_interval=10"
common+=";checkpoint_interval=0;eval_batch_size=250;schedule.kind=constant"

train() {  # train RUN [alexnet train options...]: skipped when RUN has finished
  local run=$1
  shift
  if [[ -f $out/$run/model.pt ]]; then
    echo "$run: done before, kept" >&2
    return
  fi
  t "$alexnet" train --config configs/fashion-mnist.json --out "$out/$run" --overwrite "$@" \
    2> "$out/$run.log"
  grep -E "init_from|frozen|done:" "$out/$run.log" >&2 || true
}

echo "== Sources: classes 0-3 and 0-4, 2,000 training images per class, batch 64"
train source-4 --data "$out/data/source-4" --epochs "$source_epochs" --seed 0 --set "$common"
train source-5 --data "$out/data/source" --epochs "$source_epochs" --seed 0 --set "$common"

echo "== Target: classes 5-9, 1,000 training images, batch 32, $epochs epochs of 31 steps"
frozen='model.freeze=["conv1","conv2","conv3","conv4","conv5"]'
target=(--data "$out/data/target" --epochs "$epochs" --batch-size 32)
for seed in $seeds; do
  set_items="$common;data.val_limit=2000"
  train "scratch-$seed" "${target[@]}" --seed "$seed" --set "$set_items"
  for source in 4 5; do
    suffix=$([[ $source == 5 ]] && echo "-fc8" || true)
    from=(--init-from "$out/source-$source/model.pt")
    train "fine-tune$suffix-$seed" "${target[@]}" --seed "$seed" "${from[@]}" --set "$set_items"
    train "frozen$suffix-$seed" "${target[@]}" --seed "$seed" "${from[@]}" \
      --set "$set_items;$frozen"
  done
done

# Test accuracy after each epoch: mean over the seeds, then each seed's.
python3 - "$out" $seeds > "$out/summary.md" <<'PY'
import json, statistics, sys
out, seeds = sys.argv[1], sys.argv[2:]
variants = [("scratch", "from scratch"),
            ("fine-tune", "fine-tuned from 0-3, fc8 new"),
            ("frozen", "same, conv1-5 frozen"),
            ("fine-tune-fc8", "fine-tuned from 0-4, fc8 copied"),
            ("frozen-fc8", "same, conv1-5 frozen")]
curves, seconds = {}, {}
for variant, _ in variants:
    for seed in seeds:
        for line in open("%s/%s-%s/metrics.jsonl" % (out, variant, seed)):
            r = json.loads(line)
            if r.get("kind") == "epoch" and "val_top1_error" in r:
                curves.setdefault(variant, {}).setdefault(r["step"], []).append(
                    100 * (1 - r["val_top1_error"]))
                seconds.setdefault(variant, {})[seed] = r["elapsed_s"]
print("| steps | " + " | ".join(name for _, name in variants) + " |")
print("|---|" + "---|" * len(variants))
for step in sorted(curves["scratch"]):
    cells = []
    for variant, _ in variants:
        a = curves[variant][step]
        each = " (%s)" % " / ".join("%.1f" % x for x in a) if len(a) > 1 else ""
        cells.append("%.1f%%%s" % (statistics.mean(a), each))
    print("| %d | %s |" % (step, " | ".join(cells)))
print("| seconds | %s |" % " | ".join(
    "%.0f" % statistics.mean(seconds[v].values()) for v, _ in variants))
PY
cat "$out/summary.md"

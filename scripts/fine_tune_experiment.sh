#!/usr/bin/env bash
# Fine-tuning against training from scratch (EXPERIMENTS.md, "Fine-tuning on a small new
# task"): a source model trained on Fashion-MNIST classes 0-4, then a 5-class target task of
# classes 5-9 with 200 training images per class, trained with the same step budget three
# ways: from scratch, fine-tuned from the source's model.pt, and fine-tuned with conv1-conv5
# frozen. Test accuracy on 2,000 of the target classes' 5,000 test images (400 per class)
# after every epoch.
#
# Usage: scripts/fine_tune_experiment.sh [OUT]   (default runs/fine-tune)
# Environment: SEEDS (default "0 1 2"), WIDTH (model.width, default 0.5), EPOCHS (target
# epochs of 31 steps, default 5), SOURCE_EPOCHS (of 156 steps, default 2).
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

[[ -d $out/data/target/val ]] || t python3 scripts/fine_tune_data.py "$out/data"

# The demo's settings (64x64 inputs, Kaiming init, lr 0.01, batch 64) at width $width; the
# PNGs are decoded straight to 64x64. Validation is on the task's test images (no holdout).
common="model.width=$width;data.holdout=0;data.decode_size=64;data.workers=1;log_interval=10"
common+=";checkpoint_interval=0;eval_batch_size=250;schedule.kind=constant"

echo "== Source: classes 0-4, 10,000 training images, $source_epochs epochs of 156 steps"
t "$alexnet" train --config configs/fashion-mnist.json --data "$out/data/source" \
  --out "$out/source" --overwrite --epochs "$source_epochs" --seed 0 --set "$common" \
  2> "$out/source.log"
grep -E "epoch .* done|done:" "$out/source.log" >&2

echo "== Target: classes 5-9, 1,000 training images, batch 32, $epochs epochs of 31 steps"
frozen='model.freeze=["conv1","conv2","conv3","conv4","conv5"]'
for seed in $seeds; do
  for variant in scratch fine-tune frozen; do
    args=(--config configs/fashion-mnist.json --data "$out/data/target" --out "$out/$variant-$seed"
          --overwrite --epochs "$epochs" --batch-size 32 --seed "$seed")
    set_items="$common;data.val_limit=2000"
    case $variant in
      fine-tune) args+=(--init-from "$out/source/model.pt") ;;
      frozen) args+=(--init-from "$out/source/model.pt"); set_items+=";$frozen" ;;
    esac
    t "$alexnet" train "${args[@]}" --set "$set_items" 2> "$out/$variant-$seed.log"
    grep -E "init_from|frozen|done:" "$out/$variant-$seed.log" >&2 || true
  done
done

# Test accuracy after each epoch, mean and spread over the seeds.
python3 - "$out" $seeds > "$out/summary.md" <<'PY'
import json, statistics, sys
out, seeds = sys.argv[1], sys.argv[2:]
variants = [("scratch", "from scratch"), ("fine-tune", "fine-tuned, all layers"),
            ("frozen", "fine-tuned, conv1-conv5 frozen")]
curves = {}
for variant, _ in variants:
    for seed in seeds:
        for line in open("%s/%s-%s/metrics.jsonl" % (out, variant, seed)):
            r = json.loads(line)
            if r.get("kind") == "epoch" and "val_top1_error" in r:
                curves.setdefault(variant, {}).setdefault(r["step"], []).append(
                    100 * (1 - r["val_top1_error"]))
steps = sorted(curves["scratch"])
print("| steps | " + " | ".join(name for _, name in variants) + " |")
print("|---|" + "---|" * len(variants))
for step in steps:
    cells = []
    for variant, _ in variants:
        a = curves[variant][step]
        spread = " (%s)" % ", ".join("%.1f" % x for x in a) if len(a) > 1 else ""
        cells.append("%.1f%%%s" % (statistics.mean(a), spread))
    print("| %d | %s |" % (step, " | ".join(cells)))
PY
cat "$out/summary.md"

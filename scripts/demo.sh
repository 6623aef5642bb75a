#!/usr/bin/env bash
# The main job: on a fresh Debian 12 machine, install the dependencies, build, train AlexNet on
# Fashion-MNIST (configs/fashion-mnist.json), evaluate it on the 10,000 test images, export it
# to TorchScript, predict a few test images with the exported file alone, and print the test
# top-1 accuracy and the time taken.
#
# Usage: scripts/demo.sh [RUN_DIR [TRAIN OPTIONS...]]
#        (default runs/demo; an existing RUN_DIR is replaced; e.g. runs/demo-bf16 --precision bf16)
# Environment: JOBS (parallel compile jobs, default: all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
run_dir="${1:-runs/demo}"
jobs="${JOBS:-$(nproc)}"

echo "== dependencies"
third_party/install_deps.sh

echo "== build (./build)"
generator=()
[[ -f build/CMakeCache.txt ]] || generator=(-G Ninja)
cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target alexnet -j"$jobs"
alexnet=build/app/alexnet

rm -rf "$run_dir"
mkdir -p "$run_dir"
start=$(date +%s.%N)

echo "== train (configs/fashion-mnist.json) -> $run_dir"
"$alexnet" train --config configs/fashion-mnist.json --out "$run_dir" "${@:2}"
trained=$(date +%s.%N)

# The exported model when the export step produced it, else the best checkpoint.
if [ -f "$run_dir/model.pt" ]; then
  model_args=(--model "$run_dir/model.pt")
else
  echo "note: $run_dir/model.pt was not written; evaluating checkpoints/best.pt" >&2
  model_args=(--checkpoint "$run_dir/checkpoints/best.pt")
fi

echo "== evaluate on the Fashion-MNIST test set"
"$alexnet" eval "${model_args[@]}" --data fashion-mnist --split test --json \
  --save-images "$run_dir/samples" --save-count 6 >"$run_dir/test_eval.json"
evaluated=$(date +%s.%N)

if [ -f "$run_dir/model.pt" ] && "$alexnet" predict --help >/dev/null 2>&1; then
  echo "== predict test images with the exported model alone"
  "$alexnet" predict --model "$run_dir/model.pt" "$run_dir"/samples/*.png
fi

# The top-level fields: the per_class entries hold fields of the same names, indented deeper.
accuracy=$(sed -n 's/^  "top1_accuracy": *\([0-9.eE+-]*\).*/\1/p' "$run_dir/test_eval.json")
samples=$(sed -n 's/^  "samples": *\([0-9]*\).*/\1/p' "$run_dir/test_eval.json")
awk -v acc="$accuracy" -v n="$samples" -v s="$start" -v t="$trained" -v e="$evaluated" 'BEGIN {
  printf "\nFashion-MNIST test top-1 accuracy: %.2f%% (%d images)\n", 100 * acc, n
  printf "time: training %.0f s + evaluation %.0f s = %.0f s\n", t - s, e - t, e - s
}'
echo "run folder: $run_dir (config.json, metrics.jsonl, checkpoints/, curves.png, model.pt)"

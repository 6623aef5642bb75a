#!/usr/bin/env bash
# Side-by-side benchmark: alexnet-cpp against its Python peer (PyTorch with
# torch.nn.LocalResponseNorm; torchvision's ImageFolder + DataLoader) on this machine, one
# after the other in one invocation. Prints each measured ratio with its target and PASS/MISS.
#
# Usage: bench/compare_pytorch.sh [ALEXNET_BINARY]   (default: build/app/alexnet)
# Environment: PYTHON (default /usr/bin/python3, the interpreter with torch and torchvision),
#              BENCH_DIR (scratch folder for the generated JPEGs and packed file; default: a
#              temporary folder, removed at the end), REPEATS (timed training steps, default 3),
#              ROUNDS (turns each side takes in the training comparison, default 2),
#              LARGE (fraction of large photos in the input-pipeline folder, default 0).
# Takes a few minutes on a 2-core machine.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
alexnet=$(realpath "${1:-$repo/build/app/alexnet}")
python=${PYTHON:-/usr/bin/python3}
repeats=${REPEATS:-3}
rounds=${ROUNDS:-2}
[[ -x "$alexnet" ]] || { echo "no alexnet binary at $alexnet (build first, or pass its path)" >&2; exit 2; }
"$python" -c "import torch, torchvision" 2>/dev/null ||
  { echo "$python cannot import torch and torchvision (apt-get install python3-torchvision)" >&2; exit 2; }
if [[ -n "${BENCH_DIR:-}" ]]; then
  work=$BENCH_DIR
  mkdir -p "$work"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
results=()
misses=0

# json FILE KEY: one value of a JSON object.
json() { "$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
# ratio NAME VALUE OP TARGET: records "NAME VALUE (target OP TARGET) PASS|MISS".
ratio() {
  local verdict
  verdict=$("$python" -c 'import sys; v,op,t=float(sys.argv[1]),sys.argv[2],float(sys.argv[3]); print("PASS" if (v>=t if op==">=" else v<=t) else "MISS")' "$2" "$3" "$4")
  [[ $verdict == PASS ]] || misses=$((misses + 1))
  results+=("$(printf '%-46s %8.2f   target %s %-5s %s' "$1" "$2" "$3" "$4" "$verdict")")
  echo "  -> ${results[-1]}"
}
run() { echo "\$ $*" >&2; "$@"; }

echo "== machine"
echo "  $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $("$python" -c 'import torch; print("PyTorch", torch.__version__)')"
echo "  load average at the start: $(cut -d' ' -f1-3 /proc/loadavg) (wall-clock ratios need an idle machine)"

echo "== 1. LRN forward+backward, 64x96x55x55 float"
run "$alexnet" bench lrn --json > "$work/lrn.json"
cat "$work/lrn.json"
ratio "LRN: torch op time / ours" "$(json "$work/lrn.json" speedup_vs_torch)" ">=" 8
ratio "LRN: ours / clone()" "$(json "$work/lrn.json" ratio_to_clone)" "<=" 5

echo "== 2. training step, batch 64, 224x224, all cores ($rounds rounds, best of each)"
# The sides take turns, so that a slow spell of a shared machine hits all of them; each
# side's figure is its best round. The peer runs with all cores (torch.set_num_threads;
# PyTorch here defaults to one thread) and OpenBLAS as it comes; the two lines after the
# target show the peer as PyTorch starts by default (one thread) and with the OpenBLAS
# kernels that alexnet picks for itself (OPENBLAS_CORETYPE).
cores=$(nproc)
core_type=$("$alexnet" bench train --batch-size 1 --image-size 64 --warmup 0 --repeats 1 --json | json /dev/stdin openblas_core 2>/dev/null || true)
for round in $(seq "$rounds"); do
  run "$alexnet" bench train --batch-size 64 --repeats "$repeats" --json > "$work/train.$round.json"
  run "$alexnet" bench train --batch-size 64 --repeats "$repeats" --no-lrn --json > "$work/train_nolrn.$round.json"
  run "$python" "$repo/bench/peer.py" train --batch-size 64 --repeats "$repeats" --threads "$cores" > "$work/peer_train.$round.json"
done
run "$python" "$repo/bench/peer.py" train --batch-size 64 --repeats "$repeats" > "$work/peer_train_default.json"
if [[ -n "$core_type" && "$core_type" != "default" ]]; then
  OPENBLAS_CORETYPE=$core_type run "$python" "$repo/bench/peer.py" train --batch-size 64 --repeats "$repeats" --threads "$cores" > "$work/peer_train_blas.json"
fi
best() { "$python" -c 'import json,sys; print(max(json.load(open(f))["images_per_s"] for f in sys.argv[1:]))' "$@"; }
ours=$(best "$work"/train.*.json)
ours_nolrn=$(best "$work"/train_nolrn.*.json)
peer=$(best "$work"/peer_train.*.json)
echo "  images/s: ours $ours, ours without LRN $ours_nolrn, PyTorch peer with $cores threads $peer"
ratio "train: ours / PyTorch images/s" "$("$python" -c "print($ours / $peer)")" ">=" 2.5
ratio "train: with LRN / without LRN (ours)" "$("$python" -c "print($ours / $ours_nolrn)")" ">=" 0.9
peer_default=$(json "$work/peer_train_default.json" images_per_s)
echo "  for reference: ours / PyTorch with its default $(json "$work/peer_train_default.json" threads) thread(s): $("$python" -c "print(round($ours / $peer_default, 2))") ($peer_default images/s)"
if [[ -f "$work/peer_train_blas.json" ]]; then
  peer_blas=$(json "$work/peer_train_blas.json" images_per_s)
  echo "  for reference: ours / PyTorch with $cores threads and OPENBLAS_CORETYPE=$core_type: $("$python" -c "print(round($ours / $peer_blas, 2))") ($peer_blas images/s)"
fi

echo "== 3. inference: eager C++, exported TorchScript, and the ONNX file in OpenCV's DNN module"
if "$alexnet" bench infer --help > /dev/null 2>&1; then
  run "$alexnet" bench infer --batch-size 64 --json > "$work/infer.json"
  run "$alexnet" bench infer --batch-size 1 --warmup 5 --repeats 30 --json > "$work/infer1.json"
  cat "$work/infer.json" "$work/infer1.json"
  for f in infer1 infer; do
    "$python" -c 'import json,sys
d = json.load(open(sys.argv[1]))
onnx = d.get("onnx_opencv_images_per_s")
print("  batch %d, %d threads, images/s: eager %.1f, TorchScript %.1f, ONNX in OpenCV %s" % (
    d["batch"], d["threads"], d["eager_images_per_s"], d["torchscript_images_per_s"],
    "%.1f" % onnx if onnx is not None else "not built (no OpenCV DNN)"))' "$work/$f.json"
  done
  ratio "infer: TorchScript time / eager time" "$(json "$work/infer.json" torchscript_over_eager)" "<=" 1.3
else
  echo "  this build has no 'bench infer' (train/export.h missing)"
  misses=$((misses + 1))
fi

echo "== 4. input pipeline, 2 workers, batch 64 ($rounds rounds, best of each)"
# LARGE: the fraction of large photos (1,500-4,000 pixels on a side) in the JPEG folder.
run "$python" "$repo/bench/make_jpeg_folder.py" "$work/jpegs" --classes 10 --per-class 64 --large "${LARGE:-0}"
run "$alexnet" prepare --data "$work/jpegs" --out "$work/packed.bin" > /dev/null
run "$alexnet" prepare --data "$work/jpegs" --out "$work/shards" --format jpeg --shard-size 128 > /dev/null
images=$(find "$work/jpegs" -name '*.jpg' | wc -l)
per_image() { "$python" -c "print(round($1 / $images))"; }
echo "  bytes per image: JPEG folder $(per_image "$(du -sb "$work/jpegs" | cut -f1)"), raw pack $(per_image "$(stat -c %s "$work/packed.bin")"), JPEG shards $(per_image "$(du -sb "$work/shards" | cut -f1)")"
data_options=(--workers 2 --batch-size 64 --batches 10 --repeats 3 --json)
for round in $(seq "$rounds"); do
  run "$alexnet" bench data --data "$work/jpegs" "${data_options[@]}" > "$work/data_jpeg.$round.json"
  run "$alexnet" bench data --data "$work/packed.bin" "${data_options[@]}" > "$work/data_packed.$round.json"
  run "$alexnet" bench data --data "$work/shards" "${data_options[@]}" > "$work/data_shards.$round.json"
  run "$python" "$repo/bench/peer.py" data --root "$work/jpegs" --workers 2 --batch-size 64 --repeats 3 > "$work/peer_data.$round.json"
done
jpeg=$(best "$work"/data_jpeg.*.json)
packed=$(best "$work"/data_packed.*.json)
shards=$(best "$work"/data_shards.*.json)
tv=$(best "$work"/peer_data.*.json)
echo "  JPEG folder $jpeg images/s, packed file $packed, JPEG shards $shards, torchvision $tv"
ratio "data: packed / JPEG folder" "$("$python" -c "print($packed / $jpeg)")" ">=" 10
ratio "data: JPEG folder / torchvision" "$("$python" -c "print($jpeg / $tv)")" ">=" 1.5
echo "  for reference: JPEG shards / JPEG folder $("$python" -c "print(round($shards / $jpeg, 2))"), JPEG shards / torchvision $("$python" -c "print(round($shards / $tv, 2))")"

echo "== 5. peak resident memory, training step at batch 128"
run "$alexnet" bench train --batch-size 128 --warmup 1 --repeats 1 --json > "$work/mem.json"
run "$python" "$repo/bench/peer.py" train --batch-size 128 --warmup 1 --repeats 1 > "$work/peer_mem.json"
ours_mib=$(json "$work/mem.json" peak_rss_mib)
peer_mib=$(json "$work/peer_mem.json" peak_rss_mib)
echo "  ours $ours_mib MiB, PyTorch peer $peer_mib MiB"
ratio "memory: ours / PyTorch peak RSS" "$("$python" -c "print($ours_mib / $peer_mib)")" "<=" 1.0

echo
echo "== summary ($(date -u +%Y-%m-%dT%H:%MZ), load average now $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%s\n' "${results[@]}"
echo "$misses missed"

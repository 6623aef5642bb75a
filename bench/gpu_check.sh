#!/usr/bin/env bash
# GPU check: builds alexnet-cpp against the CUDA LibTorch of `python3`'s PyTorch and runs, each
# as an independent step (one that fails is logged and the next one runs), the most important
# first so that a spent time budget cuts the least important:
#   machine         nvidia-smi, PyTorch, nvcc, CMake, compiler, where nccl.h and Gloo are
#   configure       CMake with Ninja, OpenCV off, CUDA architecture 90 (H100/H200)
#   build           alexnet and test_model (ninja -k 0: a target that fails does not stop the
#                   other); the steps test_* below run test_model's files one at a time
#   test_lrn_cuda   CUDA LRN against the CPU kernel (forward, backward, half, bfloat16), the
#                   two-column model on cuda:0,cuda:0 and cuda:0,cpu against the single-device form
#   train_*         `alexnet bench train` at batch 128 next to the Python peer (bench/peer.py,
#                   torch.nn.LocalResponseNorm) on the same GPU: fp32, bf16 and fp16 autocast,
#                   each with LRN and without (the LRN ones first)
#   bench_lrn       `alexnet bench lrn` on cuda:0
#   export          `alexnet train` for a few steps on cuda:0 (tiny generated IDX data set),
#                   `alexnet export`, then torch.jit.load and a forward in Python, CPU and CUDA
#   test_lrn, test_alexnet   the CPU tests of the model against this LibTorch
#   dist_2ranks     two `alexnet train` ranks on the one GPU over NCCL (NCCL may refuse two
#                   ranks on one device; the log then says so)
# It ends with a table of PASS/FAIL/SKIP and the seconds of each step, and writes everything
# it measured to $OUT/gpu-check.log ($OUT is set by the device tool; ./gpu-check-out otherwise).
# Steps stop early, marked SKIP, when TIME_BUDGET seconds are spent.
#
# On the device tool (see DEVELOPERS.md, "GPU check"): first, on the Debian machine,
# `third_party/vendor_headers.sh` (nlohmann_json and Catch2 for a machine without Debian's
# -dev packages), then
#   run(command: "bench/gpu_check.sh", carry: ["third_party/vendored"], timeout_s: 540)
# and record the numbers in BENCHMARKS.md.
#
# --cpu: the rehearsal of bench/gpu_rehearsal.sh: the same steps on the CPU against the
# LibTorch CMake finds by itself (Debian's), /usr/bin/python3 for the peer, a small batch,
# no fp16 and Gloo instead of NCCL for the two ranks.
#
# Usage: bench/gpu_check.sh [--cpu]
# Environment (default; with --cpu): PYTHON (python3; /usr/bin/python3), BUILD_DIR (build-gpu;
# build-rehearsal), OUT, JOBS (nproc), CUDA_ARCH (90), BATCH (128; 8), IMAGE_SIZE (224; 112),
# WARMUP (3; 1), REPEATS (10; 2), TIME_BUDGET (seconds: 510; 0 = none), LIMIT_SCALE (factor
# on each step's time limit: 1; 10), CMAKE_EXTRA_ARGS (more configure arguments, split at
# spaces).
# shellcheck disable=SC2317  # the steps are called indirectly, as "step_$name"
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
self="$repo/bench/gpu_check.sh"

# ---------------------------------------------------------------------------------------
# Steps. Each runs in its own process under `timeout`, with `set -e`; exit code 77 means
# SKIP. A step may write a one-line note into "$GC_WORK/notes/<step>" for the summary.

note() { echo "$*" > "$GC_WORK/notes/$GC_STEP"; echo "note: $*"; }
skip() { note "$*"; exit 77; }
need() { [[ -x $1 ]] || { note "$(basename "$1") was not built"; exit 1; }; }
py() { "$GC_PYTHON" "$@"; }
gpu() { [[ $GC_MODE == gpu ]]; }

step_machine() {
  uname -a
  echo "cores: $(nproc)"
  if gpu; then nvidia-smi || true; fi
  py -c 'import sys, torch; print("python", sys.version.split()[0], sys.executable);
cuda = torch.cuda.is_available()
print("PyTorch", torch.__version__, "CUDA", torch.version.cuda, "available", cuda,
      torch.cuda.get_device_name(0) if cuda else "")'
  if gpu; then nvcc --version | tail -2 || echo "nvcc: not found"; fi
  cmake --version | head -1
  ninja --version
  c++ --version | head -1
  echo "nccl.h: ${GC_NCCL_HEADER:-not found}"
  echo "gloo headers: ${GC_GLOO:-not found}"
}

# Configures with the arguments of step_configure plus "$@"; the output goes to the log.
run_cmake() {
  echo "cmake ${config[*]} $*"
  local rc=0
  cmake -S "$repo" -B "$GC_BUILD" "${config[@]}" "$@" > "$GC_WORK/configure.log" 2>&1 || rc=$?
  cat "$GC_WORK/configure.log"
  return "$rc"
}

step_configure() {
  config=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DALEXNET_WITH_OPENCV=OFF)
  if gpu; then
    config+=(-DCMAKE_PREFIX_PATH="$GC_PREFIX" -DCMAKE_CUDA_ARCHITECTURES="$GC_CUDA_ARCH")
  fi
  [[ -n $GC_GLOO ]] || config+=(-DALEXNET_WITH_GLOO=OFF)
  # shellcheck disable=SC2206  # CMAKE_EXTRA_ARGS is split at spaces on purpose
  config+=(${CMAKE_EXTRA_ARGS:-})
  if run_cmake; then return 0; fi
  # Where that fails, afresh: NVTX 3 in place of the NVTX 2 library that PyTorch's CMake files
  # of some versions ask for, then also without the distributed backends.
  rm -rf "$GC_BUILD/CMakeCache.txt" "$GC_BUILD/CMakeFiles"
  local retry=()
  if grep -qi "nvToolsExt\|nvtx" "$GC_WORK/configure.log"; then
    retry+=(-DALEXNET_NVTX3_SHIM=ON)
    echo "configure failed over NVTX; once more with -DALEXNET_NVTX3_SHIM=ON"
    if run_cmake "${retry[@]}"; then
      note "configured with ${retry[*]} after a first failure (see log)"
      return 0
    fi
    rm -rf "$GC_BUILD/CMakeCache.txt" "$GC_BUILD/CMakeFiles"
  fi
  retry+=(-DALEXNET_WITH_NCCL=OFF -DALEXNET_WITH_GLOO=OFF)
  echo "configure failed; once more with ${retry[*]}"
  run_cmake "${retry[@]}"
  note "configured with ${retry[*]} after a first failure (see log)"
}

# Reports a failed build: ninja's FAILED lines and the first compiler errors.
show_build_errors() {
  grep -E "^FAILED:" "$1" | head -20
  grep -E -m 60 -B2 -A6 "error[: ]|Error [0-9]|undefined reference" "$1"
}

step_build() {
  [[ -f $GC_BUILD/build.ninja ]] || { note "not configured"; exit 1; }
  local targets=(alexnet test_model)
  local log="$GC_WORK/build.log"
  echo "building ${targets[*]} with $GC_JOBS jobs"
  if cmake --build "$GC_BUILD" --target "${targets[@]}" -j "$GC_JOBS" -- -k 0 > "$log" 2>&1; then
    tail -3 "$log"
    return 0
  fi
  show_build_errors "$log"
  # The distributed backends compile against c10d's headers, the part of LibTorch most
  # likely to differ; without them everything else still builds.
  if grep -q "^FAILED:.*distributed\.cpp" "$log"; then
    echo "train/distributed.cpp failed: building once more without NCCL and Gloo"
    note "built without NCCL and Gloo: train/distributed.cpp failed with them (see log)"
    cmake -S "$repo" -B "$GC_BUILD" -DALEXNET_WITH_NCCL=OFF -DALEXNET_WITH_GLOO=OFF \
      > "$GC_WORK/configure.log"
    if cmake --build "$GC_BUILD" --target "${targets[@]}" -j "$GC_JOBS" -- -k 0 > "$log" 2>&1
    then
      tail -3 "$log"
    else
      show_build_errors "$log"
    fi
  fi
  exit 1
}

step_test_lrn_cuda() {
  need "$GC_BUILD/tests/test_model"
  local out="$GC_WORK/test_lrn_cuda.out"
  "$GC_BUILD/tests/test_model" -# "[#test_lrn_cuda]" 2>&1 | tee "$out"
  if grep -q "skipped:" "$out"; then
    gpu && { note "skipped: LibTorch saw no CUDA device"; exit 1; }
    note "skipped itself without CUDA, as it should"
  fi
  if gpu && ! grep -q "CUDA kernels: ON" "$GC_WORK/configure.log"; then
    note "passed, but on the fallback: the CUDA kernel was not compiled"
    exit 1
  fi
}

step_test_lrn() {
  need "$GC_BUILD/tests/test_model"
  "$GC_BUILD/tests/test_model" -# "[#test_lrn]"
}

step_test_alexnet() {
  need "$GC_BUILD/tests/test_model"
  "$GC_BUILD/tests/test_model" -# "[#test_alexnet]"
}

step_bench_lrn() {
  need "$GC_ALEXNET"
  local repeats=20
  gpu || repeats=2
  "$GC_ALEXNET" bench lrn --device "$GC_DEVICE" --repeats "$repeats" --torch-repeats "$repeats"
}

# train_<precision>_<lrn|nolrn>: ours, then the Python peer, on the same device.
train_step() {
  local precision=$1 lrn=$2
  local flags=()
  [[ $precision == fp32 ]] || flags+=("--$precision")
  [[ $lrn == lrn ]] || flags+=(--no-lrn)
  if [[ $precision == fp16 ]] && ! gpu; then skip "fp16 autocast is CUDA only"; fi
  need "$GC_ALEXNET"
  local ours="$GC_WORK/ours_${precision}_$lrn.json" peer="$GC_WORK/peer_${precision}_$lrn.json"
  local common=(--batch-size "$GC_BATCH" --image-size "$GC_IMAGE_SIZE" --warmup "$GC_WARMUP"
    --repeats "$GC_REPEATS" "${flags[@]}")
  "$GC_ALEXNET" bench train --devices "$GC_DEVICE" "${common[@]}" --json > "$ours"
  cat "$ours"
  local peer_device=cpu
  gpu && peer_device=cuda
  py "$repo/bench/peer.py" train --device "$peer_device" "${common[@]}" > "$peer"
  cat "$peer"
  local line
  line=$(py - "$ours" "$peer" "$precision" "$lrn" <<'EOF'
import json, sys
ours, peer = (json.load(open(p)) for p in sys.argv[1:3])
ratio = ours["images_per_s"] / peer["images_per_s"]
print(f"{sys.argv[3]} {'with LRN' if sys.argv[4] == 'lrn' else 'no LRN  '}: "
      f"ours {ours['images_per_s']:8.1f} images/s, PyTorch {peer['torch']} "
      f"{peer['images_per_s']:8.1f} images/s, ratio {ratio:.2f}")
EOF
)
  echo "$line" | tee -a "$GC_WORK/results.txt"
  note "$line"
}
step_train_fp32_lrn() { train_step fp32 lrn; }
step_train_fp32_nolrn() { train_step fp32 nolrn; }
step_train_bf16_lrn() { train_step bf16 lrn; }
step_train_bf16_nolrn() { train_step bf16 nolrn; }
step_train_fp16_lrn() { train_step fp16 lrn; }
step_train_fp16_nolrn() { train_step fp16 nolrn; }

# A tiny IDX data set (64 random 28x28 grey images, 10 classes) for the training steps.
make_idx_data() {
  local dir="$GC_WORK/idx"
  [[ -f $dir/train-labels-idx1-ubyte ]] && return 0
  mkdir -p "$dir"
  py - "$dir" <<'EOF'
import os, random, struct, sys
random.seed(0)
n, rows, cols = 64, 28, 28
with open(os.path.join(sys.argv[1], "train-images-idx3-ubyte"), "wb") as f:
    f.write(struct.pack(">IIII", 0x803, n, rows, cols))
    f.write(bytes(random.randrange(256) for _ in range(n * rows * cols)))
with open(os.path.join(sys.argv[1], "train-labels-idx1-ubyte"), "wb") as f:
    f.write(struct.pack(">II", 0x801, n))
    f.write(bytes(i % 10 for i in range(n)))
EOF
}

# Sets tiny_args to the settings of the tiny runs: the demo configuration on the generated data.
set_tiny_args() {
  tiny_args=(--config "$repo/configs/fashion-mnist.json" --data "$GC_WORK/idx" --max-steps 4
    --batch-size 16 --threads 2
    --set "data.holdout=16;data.stats_images=48;data.workers=1;eval_batch_size=16;log_interval=1")
}

step_export() {
  need "$GC_ALEXNET"
  make_idx_data
  set_tiny_args
  local run="$GC_WORK/run-export"
  rm -rf "$run"
  "$GC_ALEXNET" train "${tiny_args[@]}" --devices "$GC_DEVICE" --out "$run"
  "$GC_ALEXNET" export --checkpoint "$run/checkpoints/last.pt" --out "$GC_WORK/model.pt" --json
  py - "$GC_WORK/model.pt" <<'EOF'
import sys, torch
model = torch.jit.load(sys.argv[1])
model.eval()
print("loaded by PyTorch", torch.__version__, "; attributes: image_size", model.image_size,
      "in_channels", model.in_channels, "classes", len(model.class_names))
x = torch.randn(2, model.in_channels, model.image_size, model.image_size) * 50
with torch.no_grad():
    y = model(x)
    features = model.features(x)
assert y.shape == (2, len(model.class_names)), y.shape
assert torch.isfinite(y).all()
print("forward on the CPU:", tuple(y.shape), "features", tuple(features.shape))
if torch.cuda.is_available():
    gpu_model = torch.jit.load(sys.argv[1], map_location="cuda")
    with torch.no_grad():
        y_gpu = gpu_model(x.cuda()).cpu()
    difference = (y_gpu - y).abs().max().item()
    scale = y.abs().max().item()
    print(f"forward on CUDA: max difference to the CPU {difference:.3g} (logits up to {scale:.3g})")
    assert difference <= 1e-3 * max(1.0, scale), difference
EOF
}

step_dist_2ranks() {
  need "$GC_ALEXNET"
  make_idx_data
  set_tiny_args
  local backend=gloo
  if gpu; then
    backend=nccl
    grep -q "Distributed backends:.*NCCL ON" "$GC_WORK/configure.log" ||
      skip "this build has no NCCL"
  fi
  local run="$GC_WORK/run-dist" port
  rm -rf "$run"
  port=$(py -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
  # Both ranks on the same device: LOCAL_RANK 0 for both keeps cuda:0 (alexnet train --nproc
  # would give rank 1 cuda:1).
  local pids=() rank
  for rank in 0 1; do
    RANK=$rank WORLD_SIZE=2 LOCAL_RANK=0 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 \
      MASTER_PORT=$port "$GC_ALEXNET" train "${tiny_args[@]}" --devices "$GC_DEVICE" \
      --dist-backend "$backend" --dist-timeout 60 --out "$run" > "$GC_WORK/rank$rank.out" 2>&1 &
    pids+=($!)
  done
  local codes=() pid code
  for pid in "${pids[@]}"; do
    code=0
    wait "$pid" || code=$?
    codes+=("$code")
  done
  for rank in 0 1; do
    echo "--- rank $rank (exit ${codes[$rank]})"
    cat "$GC_WORK/rank$rank.out"
  done
  if [[ ${codes[0]} == 0 && ${codes[1]} == 0 ]]; then
    note "2 ranks over $backend on $GC_DEVICE: training done"
    return 0
  fi
  if grep -qi "duplicate GPU" "$GC_WORK"/rank*.out; then
    note "NCCL refused two ranks on one GPU (\"Duplicate GPU detected\")"
  else
    note "2 ranks over $backend failed: exit codes ${codes[*]} (see log)"
  fi
  exit 1
}

# ---------------------------------------------------------------------------------------
# Running the steps: each under `timeout`, its output in the log, its result in names,
# results and times.

log_line() { echo "$*" | tee -a "$log"; }

run_step() {
  local name=$1 limit=$(($2 * scale))
  local elapsed=$((SECONDS - start)) status
  if ((budget > 0)); then
    local left=$((budget - elapsed))
    if ((left < 30)); then
      names+=("$name") results+=(SKIP) times+=(0)
      echo "time budget of $budget s spent" > "$GC_WORK/notes/$name"
      log_line "== [$elapsed s] $name: SKIP (time budget of $budget s spent)"
      return
    fi
    ((limit > left)) && limit=$left
  fi
  log_line ""
  log_line "== [$elapsed s] $name (limit $limit s)"
  local t0=$SECONDS
  timeout -k 10 "$limit" "$self" --run-step "$name" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  case $rc in
    0) status=PASS ;;
    77) status=SKIP ;;
    124 | 137) status=FAIL; echo "timed out after $limit s" > "$GC_WORK/notes/$name" ;;
    *) status=FAIL ;;
  esac
  names+=("$name") results+=("$status") times+=($((SECONDS - t0)))
  log_line "== $name: $status in $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------------------------------
# The driver, one function so that bash has read all of it before it starts.

main() {
  mode=gpu
  case ${1:-} in
    --cpu) mode=cpu ;;
    "") ;;
    *) echo "usage: bench/gpu_check.sh [--cpu]" >&2; exit 2 ;;
  esac

  export GC_MODE=$mode
  if [[ $mode == gpu ]]; then
    export GC_PYTHON=${PYTHON:-python3} GC_DEVICE=cuda:0
    export GC_BUILD=${BUILD_DIR:-$repo/build-gpu}
    export GC_BATCH=${BATCH:-128} GC_IMAGE_SIZE=${IMAGE_SIZE:-224}
    export GC_WARMUP=${WARMUP:-3} GC_REPEATS=${REPEATS:-10}
    budget=${TIME_BUDGET:-510}
    scale=${LIMIT_SCALE:-1}
  else
    export GC_PYTHON=${PYTHON:-/usr/bin/python3} GC_DEVICE=cpu
    export GC_BUILD=${BUILD_DIR:-$repo/build-rehearsal}
    export GC_BATCH=${BATCH:-8} GC_IMAGE_SIZE=${IMAGE_SIZE:-112}
    export GC_WARMUP=${WARMUP:-1} GC_REPEATS=${REPEATS:-2}
    budget=${TIME_BUDGET:-0}
    scale=${LIMIT_SCALE:-10}
  fi
  export GC_JOBS=${JOBS:-$(nproc)} GC_CUDA_ARCH=${CUDA_ARCH:-90}
  # CMake finds nvcc on the PATH.
  if [[ $mode == gpu ]] && ! command -v nvcc > /dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then
    export PATH=/usr/local/cuda/bin:$PATH
  fi
  export GC_ALEXNET=$GC_BUILD/app/alexnet
  export GC_WORK=$GC_BUILD/gpu-check-work
  out_dir=${OUT:-$repo/gpu-check-out}
  log=$out_dir/gpu-check.log
  mkdir -p "$out_dir" "$GC_BUILD"
  rm -rf "$GC_WORK"
  mkdir -p "$GC_WORK/notes"
  : > "$log"
  : > "$GC_WORK/results.txt"

  # Where LibTorch, nccl.h and Gloo's headers are, for the configure step.
  export GC_PREFIX="" GC_NCCL_HEADER="" GC_GLOO=""
  if [[ $mode == gpu ]]; then
    GC_PREFIX=$("$GC_PYTHON" -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)
    # PyTorch's CMake files take their architecture list from this (90 -> 9.0) instead of
    # detecting the GPU.
    if [[ $GC_CUDA_ARCH =~ ^[0-9]+$ ]]; then
      export TORCH_CUDA_ARCH_LIST="${GC_CUDA_ARCH%?}.${GC_CUDA_ARCH: -1}"
    fi
  fi
  torch_include=$("$GC_PYTHON" -c 'import os, torch
print(os.path.join(os.path.dirname(torch.__file__), "include"))' 2>/dev/null)
  for f in "$torch_include/gloo/algorithm.h" /usr/include/gloo/algorithm.h; do
    [[ -f $f ]] && { GC_GLOO=$(dirname "$(dirname "$f")"); break; }
  done
  GC_NCCL_HEADER=$("$GC_PYTHON" - 2>/dev/null <<'EOF'
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
candidates = [p for r in roots
              for p in glob.glob(os.path.join(r, "nvidia", "*", "include", "nccl.h"))]
candidates += [p for p in ("/usr/include/nccl.h", "/usr/local/cuda/include/nccl.h")
               if os.path.exists(p)]
print(candidates[0] if candidates else "")
EOF
  )

  start=$SECONDS
  names=() results=() times=()
  local commit
  commit=$(git -C "$repo" rev-parse --short HEAD 2> /dev/null || echo '?')
  log_line "alexnet-cpp GPU check ($mode mode), $(date -u '+%Y-%m-%d %H:%M:%S UTC'), commit $commit"
  log_line "log: $log; build: $GC_BUILD; jobs: $GC_JOBS; training steps: batch $GC_BATCH," \
    "${GC_IMAGE_SIZE}x$GC_IMAGE_SIZE, warmup $GC_WARMUP, repeats $GC_REPEATS"

  run_step machine 60
  run_step configure 240
  run_step build 480
  run_step test_lrn_cuda 120
  run_step train_fp32_lrn 120
  run_step train_bf16_lrn 120
  run_step bench_lrn 90
  run_step export 150
  run_step train_fp16_lrn 120
  run_step train_fp32_nolrn 120
  run_step train_bf16_nolrn 120
  run_step train_fp16_nolrn 120
  run_step test_lrn 120
  run_step test_alexnet 300
  run_step dist_2ranks 120

  failed=0
  log_line ""
  log_line "== results"
  if [[ -s $GC_WORK/results.txt ]]; then tee -a "$log" < "$GC_WORK/results.txt"; fi
  log_line ""
  log_line "== summary ($mode mode, $((SECONDS - start)) s in all)"
  log_line "$(printf '%-16s %-6s %7s  %s' step result seconds note)"
  for i in "${!names[@]}"; do
    note_text=""
    [[ -f $GC_WORK/notes/${names[$i]} ]] && note_text=$(head -1 "$GC_WORK/notes/${names[$i]}")
    log_line "$(printf '%-16s %-6s %7s  %s' "${names[$i]}" "${results[$i]}" "${times[$i]}" \
      "$note_text")"
    [[ ${results[$i]} == FAIL ]] && failed=$((failed + 1))
  done
  log_line "$failed step(s) failed; log: $log"
  ((failed == 0))
}

if [[ ${1:-} == --run-step ]]; then
  set -e
  GC_STEP=$2
  "step_$2"
  exit 0
fi
main "$@"; exit

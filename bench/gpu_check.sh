#!/usr/bin/env bash
# GPU check, for a machine with an NVIDIA GPU, the CUDA toolkit (nvcc) and a CUDA build of
# PyTorch for `python3`: builds alexnet-cpp against that PyTorch's LibTorch without OpenCV,
# runs the CUDA tests (CUDA LRN vs CPU; the two-column model on cuda:0,cuda:0 and cuda:0,cpu vs
# the single-device form), then `alexnet bench train` at batch 128 in fp32 and with bf16
# autocast and the Python peer (bench/peer.py) on the same GPU, and prints images/s and the
# ratios. Meant to finish in well under 10 minutes on a 16-core machine.
#
# Usage: bench/gpu_check.sh            Environment: PYTHON (default python3), BUILD_DIR
# (default build-gpu), JOBS (default nproc), CUDA_ARCH (default native), REPEATS (default 10).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
build=${BUILD_DIR:-$repo/build-gpu}
jobs=${JOBS:-$(nproc)}
repeats=${REPEATS:-10}
start=$SECONDS
stamp() { echo "[$((SECONDS - start)) s] $*"; }

stamp "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$python" -c 'import torch; print("PyTorch", torch.__version__, "CUDA", torch.version.cuda,
      "available", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
prefix=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
torch_include=$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "include"))')

# Optional pieces this machine may lack: Catch2 (tests) and Gloo's headers (CPU distributed).
config=(-DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" -DALEXNET_WITH_OPENCV=OFF
        -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-native}")
[[ -f "$torch_include/gloo/algorithm.h" || -f /usr/include/gloo/algorithm.h ]] ||
  config+=(-DALEXNET_WITH_GLOO=OFF)
targets=(alexnet test_lrn_cuda test_lrn)

stamp "configure"
if ! cmake -S "$repo" -B "$build" "${config[@]}" > "$build.configure.log" 2>&1; then
  if grep -q "Catch2" "$build.configure.log"; then
    echo "Catch2 not found: building without the tests"
    targets=(alexnet)
    cmake -S "$repo" -B "$build" "${config[@]}" -DALEXNET_BUILD_TESTS=OFF \
      > "$build.configure.log" 2>&1 || { tail -40 "$build.configure.log"; exit 1; }
  else
    tail -40 "$build.configure.log"
    exit 1
  fi
fi
grep -E "LibTorch|CUDA kernels|CUDA compiler" "$build.configure.log" || true
stamp "build ${targets[*]}"
cmake --build "$build" --target "${targets[@]}" -j "$jobs" > "$build.build.log" 2>&1 ||
  { grep -E "error|Error" "$build.build.log" | head -40; exit 1; }
alexnet=$build/app/alexnet

status=0
if [[ " ${targets[*]} " == *" test_lrn_cuda "* ]]; then
  stamp "CUDA tests"
  "$build/tests/test_lrn_cuda" || status=1
  "$build/tests/test_lrn" || status=1
fi

stamp "LRN forward+backward on the GPU"
"$alexnet" bench lrn --device cuda:0 --repeats 20 --torch-repeats 20 || status=1

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
json() { "$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
for precision in fp32 bf16; do
  flag=()
  [[ $precision == bf16 ]] && flag=(--bf16)
  stamp "training step, batch 128, $precision"
  "$alexnet" bench train --devices cuda:0 --batch 128 --warmup 3 --repeats "$repeats" "${flag[@]}" \
    --json > "$work/ours_$precision.json" || { status=1; continue; }
  "$python" "$repo/bench/peer.py" train --device cuda --batch 128 --warmup 3 \
    --repeats "$repeats" "${flag[@]}" > "$work/peer_$precision.json" || { status=1; continue; }
  ours=$(json "$work/ours_$precision.json" images_per_s)
  peer=$(json "$work/peer_$precision.json" images_per_s)
  printf '  %s: ours %.0f images/s, PyTorch peer %.0f images/s, ratio %.2f\n' \
    "$precision" "$ours" "$peer" "$("$python" -c "print($ours / $peer)")"
done
stamp "done (status $status)"
exit $status

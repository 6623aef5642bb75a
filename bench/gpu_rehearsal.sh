#!/usr/bin/env bash
# Rehearses bench/gpu_check.sh on this CPU machine, for everything but CUDA: runs it with
# --cpu (Debian's LibTorch, the CPU, /usr/bin/python3 for the peer) while hiding the
# installed nlohmann_json, Catch2 and zlib from CMake, as on the GPU machine that has none of
# Debian's -dev packages, so that the build must use third_party/vendored/ and go without
# zlib. Then checks from the log that the vendored copies were used, prints the seconds of
# each phase and removes the build folder. Not part of CI (it builds the whole executable).
#
# Usage (from a fresh clone):  third_party/vendor_headers.sh && bench/gpu_rehearsal.sh
# Environment: JOBS (default 2), BUILD_DIR (default build-rehearsal), OUT (log folder,
# default gpu-check-out), KEEP_BUILD=1 keeps the build folder.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
vendored=$repo/third_party/vendored
if [[ ! -f $vendored/include/nlohmann/json.hpp || ! -f $vendored/include/catch2/catch.hpp ]]; then
  echo "gpu_rehearsal: $vendored is missing or incomplete; run third_party/vendor_headers.sh" >&2
  exit 1
fi

export BUILD_DIR=${BUILD_DIR:-$repo/build-rehearsal}
export OUT=${OUT:-$repo/gpu-check-out}
export JOBS=${JOBS:-2}
export CMAKE_EXTRA_ARGS="-DCMAKE_DISABLE_FIND_PACKAGE_nlohmann_json=ON
  -DCMAKE_DISABLE_FIND_PACKAGE_Catch2=ON -DCMAKE_DISABLE_FIND_PACKAGE_ZLIB=ON"
log=$OUT/gpu-check.log

nice -n 10 "$repo/bench/gpu_check.sh" --cpu
status=$?

echo
echo "== rehearsal checks"
for expected in "nlohmann_json: vendored copy" "Catch2: vendored copy" \
  "zlib (gzip-compressed IDX files): OFF"; do
  if grep -q -- "$expected" "$log"; then
    echo "configure log has '$expected'"
  else
    echo "FAIL: configure log lacks '$expected'"
    status=1
  fi
done
echo
echo "== phases (seconds)"
sed -n '/^== summary/,$p' "$log" | awk 'NR > 2 && NF >= 3 && $3 ~ /^[0-9]+$/ {
  printf "  %-16s %-5s %5s\n", $1, $2, $3 }'

if [[ ${KEEP_BUILD:-0} != 1 ]]; then
  rm -rf "$BUILD_DIR"
  echo "removed $BUILD_DIR"
fi
echo "log: $log"
exit $status

#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, and runs every test, then
# prints how long each phase took and how large the build folder is.
# Usage: scripts/test.sh [BUILD_DIR]   (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build}

phase_start=$SECONDS
timings=()
finish_phase() {
  timings+=("$1 $((SECONDS - phase_start)) s")
  phase_start=$SECONDS
}

third_party/install_deps.sh
finish_phase install
# Ninja compiles a library's units while the libraries it links to are still being built;
# a folder configured earlier keeps its generator.
generator=()
[[ -f $build_dir/CMakeCache.txt ]] || generator=(-G Ninja)
cmake -S . -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build_dir" -j "$(nproc)"
finish_phase build
status=0
log="$build_dir/ctest-output.txt"
(cd "$build_dir" && ctest --output-on-failure --timeout 600 -j "$(nproc)") 2>&1 | tee "$log" ||
  status=$?
finish_phase tests

echo "test.sh: $(IFS=,; echo "${timings[*]}"); build folder $(du -sh "$build_dir" | cut -f1)"
# CTest's summary as a plain closing line: "tests failed out of N" gives the counts.
summary=$(grep -E "tests passed, [0-9]+ tests? failed out of [0-9]+" "$log" | tail -1 || true)
if [[ $summary =~ ([0-9]+)\ tests?\ failed\ out\ of\ ([0-9]+) ]]; then
  failed=${BASH_REMATCH[1]}
  total=${BASH_REMATCH[2]}
  echo "tests: $((total - failed)) passed, $failed failed"
fi
exit "$status"

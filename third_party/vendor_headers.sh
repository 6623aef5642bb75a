#!/usr/bin/env bash
# Copies the header-only dependencies from this Debian machine into third_party/vendored/
# (git-ignored), for a machine that has LibTorch and a compiler but none of Debian's -dev
# packages, such as the GPU machine of bench/gpu_check.sh:
#   include/nlohmann/       nlohmann_json 3   (nlohmann-json3-dev, /usr/include/nlohmann)
#   include/catch2/catch.hpp Catch2 v2         (catch2, /usr/include/catch2)
#   cmake/Catch.cmake, cmake/CatchAddTests.cmake   Catch2's catch_discover_tests()
# third_party/Dependencies.cmake uses these copies only where find_package() finds no
# installed package. Nothing here is committed; the folder travels to the GPU machine when
# named in the device tool's `carry` (see DEVELOPERS.md, "GPU check").
#
# Usage: third_party/vendor_headers.sh     Environment: VENDOR_DIR (default third_party/vendored)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dest=${VENDOR_DIR:-$repo/third_party/vendored}
json_src=/usr/include/nlohmann
catch_header=/usr/include/catch2/catch.hpp
catch_cmake=/usr/lib/cmake/Catch2

missing=()
[[ -f $json_src/json.hpp ]] || missing+=("$json_src/json.hpp (apt-get install nlohmann-json3-dev)")
[[ -f $catch_header ]] || missing+=("$catch_header (apt-get install catch2)")
for f in Catch.cmake CatchAddTests.cmake; do
  [[ -f $catch_cmake/$f ]] || missing+=("$catch_cmake/$f (apt-get install catch2)")
done
if ((${#missing[@]})); then
  printf 'vendor_headers: missing %s\n' "${missing[@]}" >&2
  exit 1
fi

rm -rf "$dest"
mkdir -p "$dest/include/catch2" "$dest/cmake"
cp -R "$json_src" "$dest/include/nlohmann"
cp "$catch_header" "$dest/include/catch2/"
cp "$catch_cmake/Catch.cmake" "$catch_cmake/CatchAddTests.cmake" "$dest/cmake/"
for package in nlohmann-json3-dev catch2; do
  copyright=/usr/share/doc/$package/copyright
  if [[ -f $copyright ]]; then cp "$copyright" "$dest/COPYRIGHT.$package"; fi
done

json_version=$(dpkg-query -W -f='${Version}' nlohmann-json3-dev 2>/dev/null || echo unknown)
catch_version=$(dpkg-query -W -f='${Version}' catch2 2>/dev/null || echo unknown)
cat > "$dest/VERSIONS" <<EOF
nlohmann_json $json_version (Debian nlohmann-json3-dev, MIT licence)
Catch2 $catch_version (Debian catch2, Boost Software Licence 1.0)
EOF
echo "vendor_headers: $(du -sh "$dest" | cut -f1) in $dest"
cat "$dest/VERSIONS"

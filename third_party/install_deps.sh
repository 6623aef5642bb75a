#!/usr/bin/env bash
# Installs the Debian packages this project needs, and only those that are missing.
# Usage: third_party/install_deps.sh [--runtime-only]
set -euo pipefail

packages=(
  build-essential cmake
  ninja-build           # builds the targets' compile units in parallel across targets
  libtorch-dev          # LibTorch 1.13 (CPU)
  libopenblas0-openmp   # fast BLAS for LibTorch (the reference BLAS is ~3x slower)
  libopencv-dev         # image decoding and drawing
  libjpeg62-turbo-dev   # JPEG decoding that reports corrupt data
  nlohmann-json3-dev    # configuration files
  zlib1g-dev            # gzip IDX files
  libgloo-dev           # headers of Gloo, the CPU backend of LibTorch's c10d
  catch2                # unit tests (v2)
  libonnx-dev           # the ONNX checker, which the tests run on exported ONNX files
  dataset-fashion-mnist # the embedded default data set
  python3-torch python3-torchvision  # the Python peer and TorchScript load-back tests
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all packages present"
  exit 0
fi

echo "install_deps: installing ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"

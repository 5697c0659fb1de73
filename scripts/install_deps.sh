#!/usr/bin/env bash
# Installs everything qdet needs on Debian 12 (bookworm): the C++ toolchain and
# libraries for the engine, and Debian's torch/torchvision for the exporter,
# the parity references and the benchmarks. Run as root, or with sudo available.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libdnnl-dev libopencv-dev libstb-dev doctest-dev nlohmann-json3-dev
  python3 python3-torchvision python3-opencv python3-onnx python3-numpy
  # Without OpenBLAS, Debian's torch uses the reference BLAS and every
  # timing of torchvision is meaningless.
  libopenblas0-openmp
)

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  sudo_cmd=(sudo)
fi

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#packages[@]} packages are already installed"
  exit 0
fi

echo "install_deps: installing ${missing[*]}"
"${sudo_cmd[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"

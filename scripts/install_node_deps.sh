#!/usr/bin/env bash
# Installs ONNX Runtime for Node.js (npm package onnxruntime-node, the version
# pinned in bench/peers/package-lock.json), used only by the comparison
# benchmark. Without Node.js the benchmark skips ONNX Runtime, so this step
# only warns.
set -euo pipefail
peers=$(cd "$(dirname "$0")/../bench/peers" && pwd)
if ! command -v npm > /dev/null; then
  echo "install_node_deps: npm not found; the benchmark will run without ONNX Runtime" >&2
  exit 0
fi
if [ -f "$peers/node_modules/onnxruntime-node/package.json" ]; then
  echo "install_node_deps: onnxruntime-node is already installed"
  exit 0
fi
# --ignore-scripts: the package carries the Linux x64 library; its install
# script would try to download more.
(cd "$peers" && npm ci --ignore-scripts --no-audit --no-fund)

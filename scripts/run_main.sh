#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install the dependencies, build,
# export the reference checkpoint, convert it with INT8 calibration on the
# road-cars calibration images, and evaluate FP32 and INT8 side by side on
# the road-cars eval set. Outputs go to build/main/.
# The data directory is $QDET_DATA_DIR, or ../shared beside the repository.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
data=${QDET_DATA_DIR:-$repo/../shared}
python=${QDET_PYTHON:-/usr/bin/python3}
threads=${QDET_THREADS:-2}
out=$repo/build/main

source "$repo/scripts/data_dir.sh"
check_data_dir run_main "$data"

"$repo/scripts/install_deps.sh"
"$repo/scripts/build.sh" "$repo/build"
mkdir -p "$out"

echo "== export the torchvision checkpoint"
"$python" "$repo/weights/export_torchvision.py" \
  --checkpoint "$data/models/roadcars_frcnn_mbv3.pth" \
  --config "$data/models/roadcars_frcnn_mbv3.json" \
  --out "$out/roadcars.safetensors"

echo "== convert and calibrate INT8"
"$repo/build/convert" --weights "$out/roadcars.safetensors" \
  --calib "$data/datasets/roadcars/calib/images" \
  --out "$out/roadcars.qdet" --report "$out/calibration_report.json" --threads "$threads"

echo "== evaluate FP32 and INT8 on the road-cars eval set"
"$repo/build/engine_eval" --weights "$out/roadcars.qdet" \
  --images "$data/datasets/roadcars/eval/images" \
  --gt "$data/datasets/roadcars/eval/annotations.json" \
  --precision fp32,int8 --threads "$threads" \
  --report "$out/eval_report.json" --dump "$out/detections"
echo "run_main: reports in $out"

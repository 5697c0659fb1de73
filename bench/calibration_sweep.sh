#!/usr/bin/env bash
# Measures INT8 car AP50 on the road-cars eval set for each calibration
# setting: convert --calib with the setting, then engine_eval --precision int8.
# usage: bench/calibration_sweep.sh [BUILD_DIR] [OUT_DIR]
# Prints one line per setting. Needs build/convert and a safetensors export
# (made here from the reference checkpoint when OUT_DIR has none).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$repo/build}
out=${2:-$repo/build/calibration_sweep}
data=${QDET_DATA_DIR:-$repo/../shared}
python=${QDET_PYTHON:-/usr/bin/python3}
threads=${QDET_THREADS:-2}
mkdir -p "$out"

if [ ! -f "$out/roadcars.safetensors" ]; then
  "$python" "$repo/weights/export_torchvision.py" --checkpoint "$data/models/roadcars_frcnn_mbv3.pth" \
    --config "$data/models/roadcars_frcnn_mbv3.json" --out "$out/roadcars.safetensors" > /dev/null
fi

run() {
  local name=$1
  shift
  "$build/convert" --weights "$out/roadcars.safetensors" --calib "$data/datasets/roadcars/calib/images" \
    --skip-sqnr --quiet --threads "$threads" --out "$out/$name.qdet" "$@" > "$out/$name.convert.log"
  "$build/engine_eval" --weights "$out/$name.qdet" --images "$data/datasets/roadcars/eval/images" \
    --gt "$data/datasets/roadcars/eval/annotations.json" --precision int8 --threads "$threads" --quiet \
    > "$out/$name.eval.log"
  local ap recall precision
  ap=$(awk '/car AP50/ {print $3}' "$out/$name.eval.log")
  recall=$(awk '/car recall/ {print $3}' "$out/$name.eval.log")
  precision=$(awk '/car precision/ {print $3}' "$out/$name.eval.log")
  printf '%-28s AP50 %s  recall %s  precision %s\n' "$name" "$ap" "$recall" "$precision"
}

run minmax_m0.5 --calib-method minmax --migration 0.5
run percentile99.99_m0.5 --calib-method percentile --percentile 99.99 --migration 0.5
run percentile99.999_m0.5 --calib-method percentile --percentile 99.999 --migration 0.5
run entropy_m0.5 --calib-method entropy --migration 0.5
run mse_m0.5 --calib-method mse --migration 0.5
run minmax_m0 --calib-method minmax --migration 0
run minmax_m0.25 --calib-method minmax --migration 0.25
run minmax_m0.75 --calib-method minmax --migration 0.75
run minmax_m1 --calib-method minmax --migration 1

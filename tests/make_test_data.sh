#!/usr/bin/env bash
# Builds the data the test suite compares against, into OUT_DIR:
#   export    the reference checkpoint as .safetensors (weights/export_torchvision.py)
#   convert   the FP32 qdet weight file
#   calibrate the INT8 qdet weight file, calibrated on a few calibration images
#   parity    torchvision's intermediate tensors and detections for parity images
#   parity320 the same for the 320_fpn variant, with its FP32 qdet weight file
# usage: make_test_data.sh STEP OUT_DIR BIN_DIR
# The data directory is $QDET_DATA_DIR, or ../shared beside the repository.
set -euo pipefail

step=$1
out=$2
bin=$3
repo=$(cd "$(dirname "$0")/.." && pwd)
data=${QDET_DATA_DIR:-$repo/../shared}
python=${QDET_PYTHON:-/usr/bin/python3}
source "$repo/scripts/data_dir.sh"
check_data_dir make_test_data.sh "$data"
mkdir -p "$out"

case "$step" in
  export)
    "$python" "$repo/weights/export_torchvision.py" \
      --checkpoint "$data/models/roadcars_frcnn_mbv3.pth" \
      --config "$data/models/roadcars_frcnn_mbv3.json" \
      --out "$out/roadcars.safetensors"
    ;;
  convert)
    "$bin/convert" --weights "$out/roadcars.safetensors" --out "$out/roadcars_fp32.qdet"
    ;;
  calibrate)
    # Eight calibration images keep the suite fast; the README's main command
    # calibrates on all of them.
    calib="$out/calib_images"
    rm -rf "$calib"
    mkdir -p "$calib"
    find "$data/datasets/roadcars/calib/images" -name '*.jpg' | sort | awk 'NR % 12 == 1' | head -n 8 |
      while read -r image; do ln -s "$image" "$calib/"; done
    "$bin/convert" --weights "$out/roadcars.safetensors" --calib "$calib" \
      --out "$out/roadcars_int8.qdet" --report "$out/calibration_report.json" --quiet
    ;;
  parity)
    # Three 640x640 highway photos (no resize) and three fog photos of other
    # sizes (bilinear up- and down-scaling, 1000 proposals).
    images=()
    for name in eval_0001 eval_0002 eval_0003 eval_0252 eval_0254 eval_0256; do
      images+=(--image "$data/datasets/roadcars/eval/images/$name.jpg")
    done
    "$python" "$repo/tests/parity/make_reference.py" \
      --checkpoint "$data/models/roadcars_frcnn_mbv3.pth" \
      --config "$data/models/roadcars_frcnn_mbv3.json" \
      "${images[@]}" --out "$out/parity"
    ;;
  parity320)
    "$python" "$repo/weights/export_torchvision.py" \
      --checkpoint "$data/models/roadcars_frcnn_mbv3.pth" \
      --config "$data/models/roadcars_frcnn_mbv3.json" \
      --variant 320_fpn --out "$out/roadcars_320_fpn.safetensors"
    "$bin/convert" --weights "$out/roadcars_320_fpn.safetensors" --out "$out/roadcars_320_fpn_fp32.qdet"
    images=()
    for name in eval_0002 eval_0254 eval_0300; do
      images+=(--image "$data/datasets/roadcars/eval/images/$name.jpg")
    done
    "$python" "$repo/tests/parity/make_reference.py" \
      --checkpoint "$data/models/roadcars_frcnn_mbv3.pth" \
      --config "$data/models/roadcars_frcnn_mbv3.json" \
      --variant 320_fpn "${images[@]}" --out "$out/parity_320_fpn"
    ;;
  *)
    echo "make_test_data.sh: unknown step '$step'" >&2
    exit 2
    ;;
esac

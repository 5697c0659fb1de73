# shellcheck shell=bash
# Sourced by the scripts that read the shared data directory: $QDET_DATA_DIR,
# or ../shared beside the repository.

# check_data_dir PROGRAM DATA_DIR
# Exits with status 3 (the input-error code of qdet's tools) and a message that
# names the first missing input, so that the caller stops before any work.
check_data_dir() {
  local program=$1 data=$2 path
  if [ ! -d "$data" ]; then
    echo "$program: data directory $data not found; set QDET_DATA_DIR to the folder that contains models/ and datasets/" >&2
    exit 3
  fi
  for path in models/roadcars_frcnn_mbv3.pth models/roadcars_frcnn_mbv3.json \
      datasets/roadcars/eval/annotations.json; do
    if [ ! -f "$data/$path" ]; then
      echo "$program: $data/$path not found; set QDET_DATA_DIR to the data directory" >&2
      exit 3
    fi
  done
  for path in datasets/roadcars/eval/images datasets/roadcars/calib/images; do
    if [ ! -d "$data/$path" ]; then
      echo "$program: folder $data/$path not found; set QDET_DATA_DIR to the data directory" >&2
      exit 3
    fi
  done
}

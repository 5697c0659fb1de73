#!/usr/bin/env bash
# Installs the dependencies, builds qdet and runs the test suite (ctest).
# The data directory is $QDET_DATA_DIR, or ../shared beside the repository.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
source "$repo/scripts/data_dir.sh"
# The data check comes first, so that a wrong data directory stops the run
# before the installation and the build.
check_data_dir run_tests "${QDET_DATA_DIR:-$repo/../shared}"

"$repo/scripts/install_deps.sh"
"$repo/scripts/install_node_deps.sh"
"$repo/scripts/build.sh" "$repo/build"
cd "$repo/build"
ctest --output-on-failure --timeout 1200

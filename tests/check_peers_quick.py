#!/usr/bin/python3
"""Check the report of run_peers.py --quick: every system was scored, and qdet FP32 scores the
same car AP50 as torchvision FP32 on the same images, since qdet FP32 gives torchvision's
detections.

usage: check_peers_quick.py OUT_DIR
"""

import json
import sys
from pathlib import Path

# qdet FP32's scores match torchvision's to within 2e-3 (the parity tests), which can swap the
# rank of two close detections and move AP50 slightly.
AP50_TOLERANCE = 0.01


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    path = Path(argv[1]) / "peers.json"
    report = json.loads(path.read_text(encoding="utf-8"))
    rows = {row["system"]: row for row in report["systems"]}
    failures = []
    for system, row in rows.items():
        if row["car_ap50"] is None:
            failures.append(f"{system}: no car AP50")
        if not row["median_ms"] > 0:
            failures.append(f"{system}: median time {row['median_ms']}")
    for needed in ("qdet_int8", "qdet_fp32", "torchvision_fp32"):
        if needed not in rows:
            failures.append(f"{needed}: missing from the report")
    if not failures:
        qdet, torch = rows["qdet_fp32"]["car_ap50"], rows["torchvision_fp32"]["car_ap50"]
        if abs(qdet - torch) > AP50_TOLERANCE:
            failures.append(f"qdet_fp32 car AP50 {qdet:.4f} differs from torchvision_fp32's {torch:.4f}")
    for failure in failures:
        print(f"check_peers_quick: {path}: {failure}", file=sys.stderr)
    if failures:
        return 1
    print(f"check_peers_quick: {len(rows)} systems scored; qdet FP32 and torchvision FP32 car AP50 "
          f"{rows['qdet_fp32']['car_ap50']:.4f} and {rows['torchvision_fp32']['car_ap50']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

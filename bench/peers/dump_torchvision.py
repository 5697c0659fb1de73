#!/usr/bin/python3
"""Run torchvision's FP32 detector over an image folder and save its detections.

Writes <out>/<stem>.json per image, in the same format as torch_worker.py's dump files,
and <out>/coco_results.json: a COCO results list of
{"image_id", "category_id", "bbox": [x, y, width, height], "score"}, with image ids
looked up by file name in the ground-truth annotations.
"""

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch_worker  # noqa: E402  (needs the sys.path entry above, and adds weights/ to sys.path)
import torchvision_model as tvm  # noqa: E402

PROGRESS_EVERY = 25

log = logging.getLogger("dump_torchvision")


def read_image_ids(annotations_path):
    """Return {file_name: image_id} from a COCO annotations file."""
    path = Path(annotations_path)
    if not path.is_file():
        raise tvm.InputError(f"{path}: annotations file not found")
    try:
        annotations = json.loads(path.read_text(encoding="utf-8"))
        return {image["file_name"]: image["id"] for image in annotations["images"]}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise tvm.InputError(f"{path}: cannot read annotations JSON: {error}") from None
    except (KeyError, TypeError) as error:
        raise tvm.InputError(f"{path}: not COCO annotations, no 'images' list with file_name and id ({error})") from None


def coco_results(image_id, detections):
    """Convert one image's detections to COCO result entries (bbox as x, y, width, height)."""
    results = []
    for detection in detections:
        x1, y1, x2, y2 = detection["box"]
        results.append({
            "image_id": image_id,
            "category_id": detection["label"],
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": detection["score"],
        })
    return results


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=(
            "Run torchvision's FP32 detector over an image folder and write per-image detection JSON "
            "files plus coco_results.json."
        )
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--images", type=Path, default=None, metavar="DIR",
                        help=f"image folder (default: {tvm.default_eval_images()})")
    parser.add_argument("--gt", type=Path, default=None, metavar="FILE.json",
                        help="COCO annotations used to look up image ids by file name "
                             "(default: annotations.json in the image folder's parent)")
    tvm.add_model_arguments(parser)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default: 2)")
    return parser.parse_args(argv)


def run(args):
    if args.threads < 1:
        raise tvm.InputError(f"--threads must be at least 1, found {args.threads}")
    torch.set_num_threads(args.threads)

    images_dir = args.images or tvm.default_eval_images()
    images = tvm.list_images(images_dir)
    image_ids = read_image_ids(args.gt or images_dir.parent / "annotations.json")
    unknown = [path.name for path in images if path.name not in image_ids]
    if unknown:
        raise tvm.InputError(f"{len(unknown)} images are not in the annotations, first {unknown[0]!r}")
    # Decode every image first, so a bad file fails before any output is written.
    for image_path in images:
        tvm.read_image_rgb(image_path)

    checkpoint = args.checkpoint or tvm.default_checkpoint()
    config_path = args.config or tvm.config_beside(checkpoint)
    config = tvm.read_config(config_path)
    model = tvm.build_model(config_path, checkpoint, tvm.resolve_variant(config, args.variant))

    tvm.create_output_folder(args.out)
    start = time.perf_counter()
    forward_ms = []
    results = []
    for number, image_path in enumerate(images, start=1):
        rgb = tvm.read_image_rgb(image_path)
        elapsed_ms, detections = torch_worker.detect(model, rgb)
        forward_ms.append(elapsed_ms)

        height, width = rgb.shape[:2]
        document = torch_worker.dump_document(image_path.name, width, height, detections)
        tvm.write_json_atomically(args.out / f"{image_path.stem}.json", document)
        results.extend(coco_results(image_ids[image_path.name], document["detections"]))

        if number % PROGRESS_EVERY == 0 or number == len(images):
            log.info(
                "%d/%d images, %.1f s elapsed, median forward %.0f ms",
                number, len(images), time.perf_counter() - start, statistics.median(forward_ms),
            )

    tvm.write_json_atomically(args.out / "coco_results.json", results)
    print(
        f"{len(images)} images, {len(results)} detections, median forward {statistics.median(forward_ms):.0f} ms, "
        f"{time.perf_counter() - start:.0f} s in total; wrote dumps and coco_results.json to {args.out}"
    )


def main(argv=None):
    return tvm.run_cli("dump_torchvision", run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

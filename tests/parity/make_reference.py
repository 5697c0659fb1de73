#!/usr/bin/python3
"""Record torchvision's intermediate tensors on a few images, for qdet's parity tests.

For each image, <out>/<stem>.safetensors contains the decoded pixels and the outputs of each
stage of torchvision's forward pass: transform, backbone body, FPN, RPN head, proposal
filtering, RoI Align, box head, box predictor and the final detections. The tensors are
captured with forward hooks and one wrapped method on the live model, so they are
exactly what torchvision computed. <out>/index.json lists the files.
"""

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

WEIGHTS_DIR = Path(__file__).resolve().parent.parent.parent / "weights"
sys.path.insert(0, str(WEIGHTS_DIR))
import torchvision_model as tvm  # noqa: E402  (needs the sys.path entry above)
from export_torchvision import write_safetensors  # noqa: E402

FORMAT = "qdet-torchvision-reference"
FORMAT_VERSION = 1

# RoI Align output is [P, 256, 7, 7] float32 (50 kB per proposal), so only the first
# proposals are stored to keep the files small.
MAX_STORED_ROI_FEATURES = 64

log = logging.getLogger("make_reference")


class StageRecorder:
    """Capture the intermediate tensors of one FasterRCNN forward pass.

    attach() registers forward hooks and replaces model.rpn.filter_proposals with a
    wrapper that records its result. detach() removes both. Single-image batches only.
    """

    def __init__(self, model):
        self.model = model
        self.tensors = {}
        self._handles = []

    def attach(self):
        model = self.model
        hooks = [
            (model.transform, self._record_transform),
            (model.backbone.body, self._record_named_outputs("body")),
            (model.backbone.fpn, self._record_named_outputs("fpn")),
            (model.rpn.head, self._record_rpn_head),
            (model.roi_heads.box_roi_pool, self._record_roi_features),
            (model.roi_heads.box_head, self._record_head_features),
            (model.roi_heads.box_predictor, self._record_box_predictor),
        ]
        for module, hook in hooks:
            self._handles.append(module.register_forward_hook(hook))

        # An instance attribute shadows the bound method, and RegionProposalNetwork.forward
        # calls self.filter_proposals, so the wrapper receives the real arguments and result.
        original = model.rpn.filter_proposals

        def recording_filter_proposals(*args, **kwargs):
            boxes, scores = original(*args, **kwargs)
            self.tensors["rpn.proposals"] = boxes[0].clone()
            self.tensors["rpn.proposal_scores"] = scores[0].clone()
            return boxes, scores

        model.rpn.filter_proposals = recording_filter_proposals

    def detach(self):
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.model.rpn.__dict__.pop("filter_proposals", None)

    def _record_transform(self, module, inputs, output):
        image_list, _targets = output
        self.tensors["transformed"] = image_list.tensors.clone()
        # image_sizes contains (height, width) after resizing, before padding to size_divisible.
        self.tensors["image_size"] = torch.tensor(image_list.image_sizes[0], dtype=torch.int64)

    def _record_named_outputs(self, prefix):
        def hook(module, inputs, output):
            for key, value in output.items():
                self.tensors[f"{prefix}.{key}"] = value.clone()

        return hook

    def _record_rpn_head(self, module, inputs, output):
        objectness, deltas = output
        for level, (logits, regression) in enumerate(zip(objectness, deltas)):
            self.tensors[f"rpn.objectness.{level}"] = logits.clone()
            self.tensors[f"rpn.deltas.{level}"] = regression.clone()

    def _record_roi_features(self, module, inputs, output):
        self.tensors["box.roi_features_head"] = output[:MAX_STORED_ROI_FEATURES].clone()

    def _record_head_features(self, module, inputs, output):
        self.tensors["box.head_features"] = output.clone()

    def _record_box_predictor(self, module, inputs, output):
        class_logits, box_regression = output
        self.tensors["box.class_logits"] = class_logits.clone()
        self.tensors["box.box_regression"] = box_regression.clone()


def check_consistency(tensors, image_path):
    """Raise RuntimeError if the captured stages disagree on the proposal count."""
    proposal_count = tensors["rpn.proposals"].shape[0]
    per_proposal = ["rpn.proposal_scores", "box.head_features", "box.class_logits", "box.box_regression"]
    for name in per_proposal:
        if tensors[name].shape[0] != proposal_count:
            raise RuntimeError(
                f"{image_path}: {name} has {tensors[name].shape[0]} rows but there are {proposal_count} proposals"
            )
    expected_roi_rows = min(proposal_count, MAX_STORED_ROI_FEATURES)
    if tensors["box.roi_features_head"].shape[0] != expected_roi_rows:
        raise RuntimeError(f"{image_path}: box.roi_features_head does not have {expected_roi_rows} rows")


def record_image(model, image_path):
    """Run the model on one image and return the captured tensors, in a stable order."""
    rgb = tvm.read_image_rgb(image_path)
    recorder = StageRecorder(model)
    recorder.attach()
    try:
        with torch.no_grad():
            detections = model([tvm.rgb_to_tensor(rgb)])[0]
    finally:
        recorder.detach()

    captured = recorder.tensors
    tensors = {"image_rgb_u8": torch.from_numpy(rgb)}
    for name in ["transformed", "image_size", "body.0", "body.1", "fpn.0", "fpn.1", "fpn.pool"]:
        tensors[name] = captured.pop(name)
    for level in range(3):
        tensors[f"rpn.objectness.{level}"] = captured.pop(f"rpn.objectness.{level}")
        tensors[f"rpn.deltas.{level}"] = captured.pop(f"rpn.deltas.{level}")
    for name in [
        "rpn.proposals", "rpn.proposal_scores", "box.roi_features_head", "box.head_features",
        "box.class_logits", "box.box_regression",
    ]:
        tensors[name] = captured.pop(name)
    if captured:
        raise RuntimeError(f"{image_path}: unexpected stage outputs {sorted(captured)}")

    tensors["detections.boxes"] = detections["boxes"]
    tensors["detections.scores"] = detections["scores"]
    tensors["detections.labels"] = detections["labels"].to(torch.int64)
    check_consistency(tensors, image_path)
    return tensors


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=(
            "Run torchvision's detector on a few images and save every intermediate stage "
            "as <out>/<stem>.safetensors, plus <out>/index.json, for qdet's parity tests."
        )
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument(
        "--checkpoint", type=Path, default=None, metavar="FILE.pth",
        help=f"torchvision state_dict (default: {tvm.default_checkpoint()})",
    )
    parser.add_argument(
        "--config", type=Path, default=None, metavar="FILE.json",
        help="settings JSON (default: the .json with the checkpoint's name beside it, if present)",
    )
    parser.add_argument("--variant", choices=tvm.VARIANTS, help="model variant (default: the config's, else fpn)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default: 2)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--images", type=Path, default=None, metavar="DIR",
        help=f"image folder, processed in name order (default: {tvm.default_eval_images()})",
    )
    source.add_argument(
        "--image", type=Path, action="append", default=None, metavar="FILE",
        help="an image file; repeat for several (replaces --images and --count)",
    )
    parser.add_argument("--count", type=int, default=5, help="number of images taken from --images (default: 5)")
    return parser.parse_args(argv)


def select_images(args):
    if args.image:
        stems = [path.stem for path in args.image]
        duplicates = sorted({stem for stem in stems if stems.count(stem) > 1})
        if duplicates:
            raise tvm.InputError(f"several --image files share the name {duplicates[0]!r}; output files would clash")
        return list(args.image)
    if args.count < 1:
        raise tvm.InputError(f"--count must be at least 1, found {args.count}")
    return tvm.list_images(args.images or tvm.default_eval_images())[: args.count]


def run(args):
    if args.threads < 1:
        raise tvm.InputError(f"--threads must be at least 1, found {args.threads}")
    torch.set_num_threads(args.threads)

    images = select_images(args)
    # Decode every image first, so a bad file fails before any output is written.
    for image_path in images:
        tvm.read_image_rgb(image_path)

    checkpoint = args.checkpoint or tvm.default_checkpoint()
    config_path = args.config or tvm.config_beside(checkpoint)
    config = tvm.read_config(config_path)
    variant = tvm.resolve_variant(config, args.variant)
    model = tvm.build_model(config_path, checkpoint, variant)

    common_metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "variant": variant,
        "model": checkpoint.name,
        **tvm.versions(),
        "threads": args.threads,
    }
    index = {**common_metadata, "files": []}

    tvm.create_output_folder(args.out)
    for image_path in images:
        start = time.perf_counter()
        tensors = record_image(model, image_path)
        height, width = tensors["image_rgb_u8"].shape[:2]
        metadata = {"image": image_path.name, "width": int(width), "height": int(height), **common_metadata}
        out_file = args.out / f"{image_path.stem}.safetensors"
        size = write_safetensors(out_file, tensors, metadata)

        proposals = tensors["rpn.proposals"].shape[0]
        detections = tensors["detections.scores"].shape[0]
        log.info(
            "%s: %dx%d, %d proposals, %d detections, %.1f MB, %.0f ms",
            image_path.name, width, height, proposals, detections, size / 1e6, (time.perf_counter() - start) * 1e3,
        )
        index["files"].append({
            "file": out_file.name,
            "image": image_path.name,
            "width": int(width),
            "height": int(height),
            "proposals": int(proposals),
            "detections": int(detections),
        })

    tvm.write_json_atomically(args.out / "index.json", index, indent=1)
    print(f"wrote {len(images)} reference files and index.json to {args.out}")


def main(argv=None):
    return tvm.run_cli("make_reference", run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

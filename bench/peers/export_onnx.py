#!/usr/bin/python3
"""Export torchvision's fasterrcnn_mobilenet_v3_large_fpn detector to ONNX for ONNX Runtime.

The graph takes one image, a float32 tensor "image" of shape [3, height, width] with values
in [0, 1] (what torchvision's detector takes), with height and width left dynamic. It
contains torchvision's whole pipeline: resizing and normalisation, backbone, FPN, RPN,
RoI heads and postprocessing. Its outputs are "boxes" (float32 [N, 4], x1 y1 x2 y2 in the
input image's pixel coordinates), "labels" (int64 [N]) and "scores" (float32 [N]).

Runs with Debian's /usr/bin/python3 (torch 1.13, torchvision 0.14, onnx 1.12).
"""

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import onnx
import torch

WEIGHTS_DIR = Path(__file__).resolve().parent.parent.parent / "weights"
sys.path.insert(0, str(WEIGHTS_DIR))
import torchvision_model as tvm  # noqa: E402  (needs the sys.path entry above)

# Opset 13 is the lowest opset with per-channel QuantizeLinear/DequantizeLinear, which the
# QDQ model built from this export needs. Opsets 16 and later must not be used with
# torchvision 0.14: it registers its RoiAlign conversion for opset 11 only and never sets
# coordinate_transformation_mode. From opset 16 on, that attribute defaults to
# "half_pixel", which is RoIAlign with aligned=True, while this detector uses aligned=False.
DEFAULT_OPSET = 13
MIN_OPSET = 11
MAX_OPSET = 15

INPUT_NAME = "image"
OUTPUT_NAMES = ("boxes", "labels", "scores")

log = logging.getLogger("export_onnx")


def decode_without_empty_branch(box_coder, rel_codes, boxes):
    """Decode like torchvision's BoxCoder.decode, with a shape that also holds for zero boxes.

    torchvision 0.14 reshapes to (box_sum, -1, 4) only when box_sum > 0. Tracing keeps that
    branch, and ONNX Runtime rejects a Reshape to (0, -1, 4) because -1 is ambiguous for an
    empty tensor, so an image without any RPN proposal would fail. (-1, classes, 4) gives
    the same result for every box count. rel_codes is [boxes, 4 * classes] here.
    """
    concat_boxes = torch.cat(boxes, dim=0)
    pred_boxes = box_coder.decode_single(rel_codes, concat_boxes)
    return pred_boxes.reshape(-1, rel_codes.shape[1] // 4, 4)


def build_traceable_model(checkpoint, config_path, variant):
    """Build the detector with its box-head decoder made traceable for images without proposals."""
    model = tvm.build_model(config_path, checkpoint, variant)
    box_coder = model.roi_heads.box_coder
    box_coder.decode = lambda rel_codes, boxes: decode_without_empty_branch(box_coder, rel_codes, boxes)
    return model


def default_example_image():
    """Return the first calibration image that is not square, else the first one.

    Tracing records only the branches that the example takes, so the example must be a real
    image: on noise the RPN keeps no proposal, and the trace then records the code path for
    zero boxes, which fails at run time on every image with a proposal. A non-square
    example keeps height and width apart in the traced shape arithmetic.
    """
    images = tvm.list_images(tvm.data_dir() / "datasets" / "roadcars" / "calib" / "images")
    for path in images:
        height, width = tvm.read_image_rgb(path).shape[:2]
        if height != width:
            return path
    return images[0]


def example_tensor(model, image_path):
    """Return the tracing example, after checking that the model detects something in it."""
    image = tvm.rgb_to_tensor(tvm.read_image_rgb(image_path))
    with torch.no_grad():
        detections = model([image])[0]
    if detections["scores"].numel() == 0:
        raise tvm.InputError(f"{image_path}: the model finds no object in this image, so it cannot serve "
                             "as the tracing example; pass another --example-image")
    return image


def export(model, example, out_path, opset):
    """Trace model on example and write it as ONNX to out_path through a temporary file and a rename."""
    dynamic_axes = {INPUT_NAME: {1: "height", 2: "width"}}
    for name in OUTPUT_NAMES:
        dynamic_axes[name] = {0: "detections"}

    out_path = Path(out_path)
    if out_path.parent.exists() and not out_path.parent.is_dir():
        raise tvm.OutputError(f"{out_path}: cannot create the output file because {out_path.parent} is not a folder")
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
        os.close(descriptor)
    except OSError as error:
        raise tvm.OutputError(f"{out_path}: cannot create the output file: {error.strerror}") from None

    try:
        with warnings.catch_warnings():
            # Tracing a detector prints dozens of TracerWarnings about Python values taken
            # from tensors. torchvision's detection code handles them for ONNX export, and
            # the parity check in the benchmark README compares the result with torchvision.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            with torch.no_grad():
                torch.onnx.export(
                    model,
                    ([example],),
                    temp_name,
                    input_names=[INPUT_NAME],
                    output_names=list(OUTPUT_NAMES),
                    dynamic_axes=dynamic_axes,
                    opset_version=opset,
                    do_constant_folding=True,
                )
        check_model(temp_name, opset)
        os.chmod(temp_name, 0o666 & ~current_umask())
        os.replace(temp_name, out_path)
    except BaseException:
        try:
            os.unlink(temp_name)
        except FileNotFoundError:
            pass
        raise


def check_model(path, opset):
    """Run the ONNX checker and confirm the interface and opset of the written model."""
    model = onnx.load(path)
    onnx.checker.check_model(model)
    inputs = [value.name for value in model.graph.input]
    outputs = [value.name for value in model.graph.output]
    if inputs != [INPUT_NAME] or outputs != list(OUTPUT_NAMES):
        raise tvm.ToolError(f"exported graph has inputs {inputs} and outputs {outputs}, "
                            f"expected [{INPUT_NAME!r}] and {list(OUTPUT_NAMES)}")
    default_domain = [entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")]
    if default_domain != [opset]:
        raise tvm.ToolError(f"exported graph imports opset {default_domain}, expected [{opset}]")


def current_umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Export torchvision's fasterrcnn_mobilenet_v3_large_fpn detector to ONNX "
                    "(input: float [3, H, W] in [0, 1] with dynamic H and W; outputs: boxes, labels, scores).",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.onnx", help="output ONNX file")
    tvm.add_model_arguments(parser)
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default: {DEFAULT_OPSET})")
    parser.add_argument("--example-image", type=Path, default=None, metavar="IMAGE",
                        help="real image with at least one detection to trace the model on "
                             "(default: the first non-square image in the shared calibration set)")
    return parser.parse_args(argv)


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    try:
        if not MIN_OPSET <= args.opset <= MAX_OPSET:
            raise tvm.InputError(
                f"--opset {args.opset} is not supported: use {MIN_OPSET} to {MAX_OPSET} (opset 13 or later "
                f"for the QDQ model; from opset 16 on, torchvision 0.14's RoiAlign conversion is wrong)"
            )
        checkpoint = args.checkpoint or tvm.default_checkpoint()
        config_path = args.config or tvm.config_beside(checkpoint)
        start = time.perf_counter()
        model = build_traceable_model(checkpoint, config_path, args.variant)
        example_image = args.example_image or default_example_image()
        log.info("tracing on %s", example_image)
        export(model, example_tensor(model, example_image), args.out, args.opset)
        seconds = time.perf_counter() - start
    except tvm.ToolError as error:
        log.error("%s", error)
        return 1
    size = args.out.stat().st_size
    print(f"wrote {args.out} (opset {args.opset}, {size / 1e6:.1f} MB, {size} bytes) in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Persistent torchvision benchmark worker, driven over stdin/stdout with one JSON object per line.

After loading the model it prints
  {"event": "ready", "system": "torchvision_fp32" | "torchvision_dynamic_int8", "load_ms": ...,
   "model_bytes": <checkpoint file size>, "details": {...}}
and then handles each request line:
  {"op": "run", "input": "/path/img.rgb", "width": W, "height": H, "image": "eval_0001.jpg", "dump": "/path/out.json"}
    reads H*W*3 bytes of RGB uint8 (HWC, row-major), times the tensor conversion plus the
    forward pass, writes the optional dump file and prints {"event": "result", "ms": ..., "detections": N}.
  {"op": "quit"} exits with status 0, and so does the end of stdin.
Any error prints {"event": "error", "message": "..."} and exits with status 1.
Only protocol lines go to stdout (file descriptor 1); everything else goes to stderr.
"""

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

WEIGHTS_DIR = Path(__file__).resolve().parent.parent.parent / "weights"
sys.path.insert(0, str(WEIGHTS_DIR))
import torchvision_model as tvm  # noqa: E402  (needs the sys.path entry above)

SYSTEM_NAMES = {"fp32": "torchvision_fp32", "dynamic_int8": "torchvision_dynamic_int8"}

log = logging.getLogger("torch_worker")


class RequestError(tvm.InputError):
    """An invalid request line or input file. The worker reports it and exits with status 1."""


# ---------------------------------------------------------------------------
# Model

def quantize_dynamic_int8(model):
    """Apply torch's dynamic INT8 quantization to Linear and Conv2d modules.

    torch 1.13's default dynamic mapping covers Linear, recurrent layers and embeddings but
    not Conv2d, so Conv2d modules stay float. Callers count what was actually converted.
    """
    return torch.quantization.quantize_dynamic(model, {nn.Linear, nn.Conv2d}, dtype=torch.qint8)


def count_quantized_modules(model):
    """Return {class name: count} for the dynamically quantized modules in model."""
    counts = {}
    for module in model.modules():
        module_path = type(module).__module__
        # torch 1.13 defines dynamic quantized modules in torch.ao.nn.quantized.dynamic, and
        # older releases in torch.nn.quantized.dynamic. Their packed-parameter children live
        # elsewhere and are not counted.
        if module_path.startswith(("torch.ao.nn.quantized.dynamic", "torch.nn.quantized.dynamic")):
            name = f"{module_path.rsplit('.modules', 1)[0]}.{type(module).__name__}"
            counts[name] = counts.get(name, 0) + 1
    return counts


def count_float_modules(model):
    return {
        "Conv2d": sum(1 for m in model.modules() if type(m) is nn.Conv2d),
        "Linear": sum(1 for m in model.modules() if type(m) is nn.Linear),
    }


def load_model(mode, checkpoint, config_path, variant):
    """Build the model for a mode and return it with a dict of details for the ready event."""
    config = tvm.read_config(config_path)
    variant = tvm.resolve_variant(config, variant)
    model = tvm.build_model(config_path, checkpoint, variant)
    details = {
        **tvm.versions(),
        "variant": variant,
        "checkpoint": Path(checkpoint).name,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
    }
    if mode == "dynamic_int8":
        model = quantize_dynamic_int8(model)
        quantized = count_quantized_modules(model)
        details["quantized_engine"] = torch.backends.quantized.engine
        details["modules_quantized"] = sum(quantized.values())
        details["quantized_module_types"] = quantized
        details["float_modules_left"] = count_float_modules(model)
    return model, details


# ---------------------------------------------------------------------------
# Inference

def read_rgb_file(path, width, height):
    """Read a raw RGB uint8 file (HWC, row-major) into an array of shape [height, width, 3]."""
    path = Path(path)
    expected = width * height * 3
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise RequestError(f"{path}: input file not found") from None
    if size != expected:
        raise RequestError(
            f"{path}: size is {size} bytes, expected {expected} ({width}x{height} RGB, 3 bytes per pixel)"
        )
    return np.fromfile(path, dtype=np.uint8).reshape(height, width, 3)


def detect(model, rgb):
    """Run the detector on an RGB uint8 [H, W, 3] image.

    Returns (milliseconds, detections) where the time covers the conversion to a float
    CHW tensor and the forward pass. detections contains boxes in original image coordinates.
    """
    start = time.perf_counter()
    with torch.inference_mode():
        image = tvm.rgb_to_tensor(rgb)
        detections = model([image])[0]
    elapsed_ms = (time.perf_counter() - start) * 1e3
    return elapsed_ms, detections


def detections_to_json(detections):
    """Return detections as [{"box": [x1, y1, x2, y2], "score": s, "label": l}, ...] in model order."""
    boxes = detections["boxes"].tolist()
    scores = detections["scores"].tolist()
    labels = detections["labels"].tolist()
    return [
        {"box": box, "score": score, "label": label}
        for box, score, label in zip(boxes, scores, labels)
    ]


def dump_document(image_name, width, height, detections):
    return {"image": image_name, "width": width, "height": height, "detections": detections_to_json(detections)}


# ---------------------------------------------------------------------------
# Protocol

def positive_int_field(request, key):
    value = request.get(key)
    if type(value) is not int or value <= 0:
        raise RequestError(f"request field {key!r} must be a positive integer, found {value!r}")
    return value


def string_field(request, key, required=True):
    value = request.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise RequestError(f"request field {key!r} must be a non-empty string, found {value!r}")
    return value


def handle_run(model, request):
    """Execute one "run" request and return the result event."""
    input_path = string_field(request, "input")
    width = positive_int_field(request, "width")
    height = positive_int_field(request, "height")
    image_name = string_field(request, "image", required=False) or Path(input_path).name
    dump_path = string_field(request, "dump", required=False)

    rgb = read_rgb_file(input_path, width, height)
    elapsed_ms, detections = detect(model, rgb)

    if dump_path is not None:
        tvm.write_json_atomically(dump_path, dump_document(image_name, width, height, detections))
    return {"event": "result", "ms": elapsed_ms, "detections": int(detections["scores"].shape[0])}


def serve(model, protocol_out):
    """Handle request lines from stdin until "quit" or the end of input."""
    for line_number, line in enumerate(sys.stdin, start=1):
        line = line.strip()
        if not line:
            continue
        try:
            request = json.loads(line)
        except json.JSONDecodeError as error:
            raise RequestError(f"request line {line_number} is not valid JSON: {error}") from None
        if not isinstance(request, dict):
            raise RequestError(f"request line {line_number} must be a JSON object")

        op = request.get("op")
        if op == "quit":
            log.info("quit requested after %d lines", line_number)
            return
        if op != "run":
            raise RequestError(f"request line {line_number}: unknown op {op!r}, expected 'run' or 'quit'")
        send(protocol_out, handle_run(model, request))
    log.info("end of input")


def send(protocol_out, event):
    protocol_out.write(json.dumps(event) + "\n")
    protocol_out.flush()


def take_stdout_for_protocol():
    """Return a text stream on the original stdout and point file descriptor 1 at stderr.

    Library output written with print() or directly to descriptor 1 (C++ code, for
    example) then lands on stderr and cannot corrupt the protocol.
    """
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "w", encoding="utf-8")


class ProtocolArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser that also reports a command-line error as an error event and exits with status 1."""

    def error(self, message):
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        print(json.dumps({"event": "error", "message": f"invalid command line: {message}"}), flush=True)
        sys.exit(1)


def parse_args(argv):
    parser = ProtocolArgumentParser(
        description="Benchmark worker: runs torchvision's detector on requests read from stdin (JSON lines).",
        epilog="The protocol is described at the top of this file.",
    )
    parser.add_argument("--mode", choices=sorted(SYSTEM_NAMES), default="fp32",
                        help="fp32, or dynamic_int8 (torch.quantization.quantize_dynamic, qint8) (default: fp32)")
    tvm.add_model_arguments(parser)
    parser.add_argument("--threads", type=int, required=True,
                        help="torch intra-op threads; inter-op threads are set to 1")
    return parser.parse_args(argv)


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    protocol_out = take_stdout_for_protocol()
    try:
        if args.threads < 1:
            raise RequestError(f"--threads must be at least 1, found {args.threads}")
        # set_num_interop_threads fails once inter-op work has started, so it goes first.
        torch.set_num_interop_threads(1)
        torch.set_num_threads(args.threads)

        checkpoint = args.checkpoint or tvm.default_checkpoint()
        config_path = args.config or tvm.config_beside(checkpoint)
        start = time.perf_counter()
        model, details = load_model(args.mode, checkpoint, config_path, args.variant)
        load_ms = (time.perf_counter() - start) * 1e3
        log.info("loaded %s (%s) in %.0f ms: %s", checkpoint, args.mode, load_ms, details)

        send(protocol_out, {
            "event": "ready",
            "system": SYSTEM_NAMES[args.mode],
            "load_ms": load_ms,
            "model_bytes": checkpoint.stat().st_size,
            "details": details,
        })
        serve(model, protocol_out)
    except Exception as error:  # every failure becomes one error event, as the protocol requires
        if not isinstance(error, (tvm.ToolError, OSError)):
            log.exception("unexpected failure")
        message = str(error) or type(error).__name__
        log.error("%s", message)
        send(protocol_out, {"event": "error", "message": message})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Quantize the ONNX detector from export_onnx.py into a static INT8 QDQ model for ONNX Runtime.

The onnxruntime.quantization Python package is not available here, so this script builds
the same kind of model with the onnx package and uses ONNX Runtime from Node.js
(ort_calibrate.js, needs `npm ci --ignore-scripts` in this folder) for two steps:

1. ONNX Runtime's basic graph optimizations fold torchvision's FrozenBatchNorm2d
   (a Mul and an Add after each convolution) into the convolution weights, as
   onnxruntime.quantization's pre-processing does.
2. Calibration: the optimized FP32 model, with every tensor to be quantized added as a
   graph output, runs over the calibration images. By default each tensor's range keeps the
   central 99.99 % of its values (a histogram over all images, cut equally at both tails);
   --calib-method minmax keeps the whole range instead, which lost more accuracy on this
   detector because a few outliers stretch the scales of the MobileNetV3 activations.

Then every Conv, Gemm and MatMul with a constant weight is quantized in the QDQ format:
- its activation input and its output (or, when its only consumer is a Relu, the Relu's
  output) get a QuantizeLinear/DequantizeLinear pair with a per-tensor scale and zero point
  from the calibrated range, widened to include 0;
- its weight becomes an int8 initializer, symmetric per output channel (range -127..127),
  read through a DequantizeLinear with an axis;
- its bias becomes int32 with scale input_scale * weight_scale[channel] and zero point 0.
ONNX Runtime fuses these patterns into QLinearConv, QGemm and friends when it loads the model
with graph optimizations enabled. Every other operator stays FP32.

Activations are uint8 by default ("U8S8": unsigned activations, signed weights), the
combination that ONNX Runtime's x86-64 integer kernels (MLAS) implement with AVX2 and
AVX-512 VNNI instructions; --activation-type int8 selects signed activations.
"""

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WEIGHTS_DIR = Path(__file__).resolve().parent.parent.parent / "weights"
sys.path.insert(0, str(WEIGHTS_DIR))
import torchvision_model as tvm  # noqa: E402  (needs the sys.path entry above)

PEERS_DIR = Path(__file__).resolve().parent
CALIBRATE_SCRIPT = PEERS_DIR / "ort_calibrate.js"

# Per-channel QuantizeLinear/DequantizeLinear (the axis attribute) arrived in opset 13.
MIN_OPSET = 13

ACTIVATION_TYPES = {
    "uint8": (TensorProto.UINT8, np.uint8, 0, 255),
    "int8": (TensorProto.INT8, np.int8, -128, 127),
}
WEIGHT_QMAX = 127
INT32_MIN = np.iinfo(np.int32).min
INT32_MAX = np.iinfo(np.int32).max

log = logging.getLogger("quantize_onnx_qdq")


class QuantizationTarget:
    """A Conv, Gemm or MatMul node whose weight input is a constant."""

    def __init__(self, node, weight_axis):
        self.node = node
        self.weight_axis = weight_axis  # the weight's output-channel axis

    @property
    def activation(self):
        return self.node.input[0]

    @property
    def weight(self):
        return self.node.input[1]

    @property
    def bias(self):
        return self.node.input[2] if len(self.node.input) > 2 and self.node.input[2] else None


# ---------------------------------------------------------------------------
# Graph analysis

def attribute_values(node):
    return {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}


def find_targets(graph):
    """Return the nodes to quantize, with the output-channel axis of each weight."""
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    targets = []
    for node in graph.node:
        if len(node.input) < 2 or node.input[1] not in initializers:
            continue
        weight_rank = len(initializers[node.input[1]].dims)
        attributes = attribute_values(node)
        if node.op_type == "Conv":
            targets.append(QuantizationTarget(node, 0))
        elif node.op_type == "Gemm":
            # QGemm has no alpha, beta or transA, so only plain Gemm nodes qualify.
            if attributes.get("alpha", 1.0) != 1.0 or attributes.get("beta", 1.0) != 1.0:
                continue
            if attributes.get("transA", 0) != 0 or weight_rank != 2:
                continue
            targets.append(QuantizationTarget(node, 0 if attributes.get("transB", 0) else 1))
        elif node.op_type == "MatMul" and weight_rank == 2:
            targets.append(QuantizationTarget(node, 1))
    return targets


def consumers_by_tensor(graph):
    consumers = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    return consumers


def output_tensor_to_quantize(target, consumers, graph_outputs):
    """Return the tensor whose QuantizeLinear follows target: its output, or that of a sole Relu consumer.

    ONNX Runtime fuses Conv -> Relu -> QuantizeLinear into one QLinearConv when the
    quantized range starts at 0, which the calibrated range of a Relu output does.
    """
    output = target.node.output[0]
    following = consumers.get(output, [])
    if len(following) == 1 and following[0].op_type == "Relu" and output not in graph_outputs:
        return following[0].output[0]
    return output


def tensors_to_calibrate(graph, targets):
    consumers = consumers_by_tensor(graph)
    graph_outputs = {value.name for value in graph.output}
    names = []
    for target in targets:
        for name in (target.activation, output_tensor_to_quantize(target, consumers, graph_outputs)):
            if name not in names:
                names.append(name)
    return names


def add_graph_outputs(model, names):
    """Return a copy of model with the given intermediate tensors added as float graph outputs."""
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    existing = {value.name for value in augmented.graph.output}
    for name in names:
        if name not in existing:
            augmented.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return augmented


# ---------------------------------------------------------------------------
# Quantization arithmetic

def activation_parameters(value_range, activation_type):
    """Return (scale, zero_point) for an asymmetric per-tensor range, widened to include 0."""
    _, _, qmin, qmax = ACTIVATION_TYPES[activation_type]
    rmin = min(0.0, float(value_range["min"]))
    rmax = max(0.0, float(value_range["max"]))
    if rmax == rmin:
        return 1.0, qmin if rmin == 0.0 else 0
    scale = (rmax - rmin) / (qmax - qmin)
    zero_point = int(np.clip(round(qmin - rmin / scale), qmin, qmax))
    return scale, zero_point


def quantize_weight(weight, axis):
    """Quantize a float weight symmetrically per output channel. Return (int8 weight, float32 scales)."""
    moved = np.moveaxis(weight, axis, 0)
    max_abs = np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1)
    # A channel of zeros gets scale 1 so that the bias scale below stays non-zero.
    scales = np.where(max_abs > 0, max_abs / WEIGHT_QMAX, 1.0).astype(np.float32)
    shape = [1] * weight.ndim
    shape[axis] = -1
    quantized = np.clip(np.round(weight / scales.reshape(shape)), -WEIGHT_QMAX, WEIGHT_QMAX).astype(np.int8)
    return quantized, scales


def quantize_bias(bias, input_scale, weight_scales):
    """Quantize a float bias to int32 with scale input_scale * weight_scales. Return (values, scales, clipped count)."""
    scales = (np.float64(input_scale) * weight_scales.astype(np.float64)).astype(np.float32)
    values = np.round(bias.astype(np.float64) / scales.astype(np.float64))
    clipped = int(np.count_nonzero((values < INT32_MIN) | (values > INT32_MAX)))
    return np.clip(values, INT32_MIN, INT32_MAX).astype(np.int32), scales, clipped


# ---------------------------------------------------------------------------
# QDQ graph construction

class QdqBuilder:
    """Graph edits that turn the optimized FP32 model into a QDQ model, applied by finish()."""

    def __init__(self, model, ranges, activation_type):
        self.model = model
        self.graph = model.graph
        self.ranges = ranges
        self.activation_type = activation_type
        self.initializers = {tensor.name: tensor for tensor in self.graph.initializer}
        self.produced = {output for node in self.graph.node for output in node.output}
        self.new_initializers = []
        self.activation_qdq = {}  # float tensor name -> (dequantized name, scale)
        self.nodes_after = defaultdict(list)  # producer output name -> Q and DQ nodes to insert after it
        self.leading_nodes = []  # Q and DQ nodes of tensors without a producer (graph inputs)
        self.counts = Counter()
        self.clipped_bias_values = 0

    def add_initializer(self, array, name):
        self.new_initializers.append(numpy_helper.from_array(array, name))
        return name

    def quantize_activation(self, name):
        """Insert a QuantizeLinear/DequantizeLinear pair on tensor name and return its scale, or None."""
        if name in self.activation_qdq:
            return self.activation_qdq[name][1]
        value_range = self.ranges.get(name)
        if value_range is None:
            return None
        scale, zero_point = activation_parameters(value_range, self.activation_type)
        _, numpy_type, _, _ = ACTIVATION_TYPES[self.activation_type]
        scale_name = self.add_initializer(np.array(scale, dtype=np.float32), f"{name}_scale")
        zero_point_name = self.add_initializer(np.array(zero_point, dtype=numpy_type), f"{name}_zero_point")
        quantized, dequantized = f"{name}_quantized", f"{name}_dequantized"
        nodes = [
            helper.make_node("QuantizeLinear", [name, scale_name, zero_point_name], [quantized],
                             name=f"{name}_QuantizeLinear"),
            helper.make_node("DequantizeLinear", [quantized, scale_name, zero_point_name], [dequantized],
                             name=f"{name}_DequantizeLinear"),
        ]
        if name in self.produced:
            self.nodes_after[name].extend(nodes)
        else:
            self.leading_nodes.extend(nodes)
        self.activation_qdq[name] = (dequantized, scale)
        self.counts["activation tensors"] += 1
        return scale

    def quantize_target(self, target, output_name):
        """Quantize one node's input, weight, bias and output. Return False if a range is missing."""
        input_scale = self.quantize_activation(target.activation)
        if input_scale is None or self.quantize_activation(output_name) is None:
            log.warning("%s: not quantized, because a tensor around it was empty on every calibration image",
                        target.node.name)
            return False

        weight = numpy_helper.to_array(self.initializers[target.weight]).astype(np.float32)
        weight_q, weight_scales = quantize_weight(weight, target.weight_axis)
        node_name = target.node.name or target.node.output[0]
        weight_q_name = self.add_initializer(weight_q, f"{node_name}_weight_quantized")
        weight_scale_name = self.add_initializer(weight_scales, f"{node_name}_weight_scale")
        weight_zero_name = self.add_initializer(np.zeros_like(weight_scales, dtype=np.int8),
                                                f"{node_name}_weight_zero_point")
        weight_dq_name = f"{node_name}_weight_dequantized"
        dequantize_nodes = [helper.make_node(
            "DequantizeLinear", [weight_q_name, weight_scale_name, weight_zero_name], [weight_dq_name],
            name=f"{node_name}_weight_DequantizeLinear", axis=target.weight_axis)]
        target.node.input[1] = weight_dq_name

        bias_name = target.bias
        if bias_name is not None and bias_name in self.initializers:
            bias = numpy_helper.to_array(self.initializers[bias_name]).astype(np.float32)
            if bias.ndim == 1 and bias.shape[0] == weight_scales.shape[0]:
                bias_q, bias_scales, clipped = quantize_bias(bias, input_scale, weight_scales)
                self.clipped_bias_values += clipped
                bias_q_name = self.add_initializer(bias_q, f"{node_name}_bias_quantized")
                bias_scale_name = self.add_initializer(bias_scales, f"{node_name}_bias_scale")
                bias_zero_name = self.add_initializer(np.zeros_like(bias_q), f"{node_name}_bias_zero_point")
                bias_dq_name = f"{node_name}_bias_dequantized"
                dequantize_nodes.append(helper.make_node(
                    "DequantizeLinear", [bias_q_name, bias_scale_name, bias_zero_name], [bias_dq_name],
                    name=f"{node_name}_bias_DequantizeLinear", axis=0))
                target.node.input[2] = bias_dq_name
        # Weight and bias DequantizeLinear nodes read only initializers, so they can lead the graph.
        self.leading_nodes.extend(dequantize_nodes)
        self.counts[target.node.op_type] += 1
        return True

    def finish(self):
        """Rewire consumers to the dequantized tensors, order the nodes and drop unused float weights."""
        # graph.node holds only the original nodes here, so the new QuantizeLinear nodes keep
        # reading the float tensors. Nodes inside subgraphs keep reading them too.
        for node in self.graph.node:
            for index, name in enumerate(node.input):
                if name in self.activation_qdq:
                    node.input[index] = self.activation_qdq[name][0]

        ordered = list(self.leading_nodes)
        for node in self.graph.node:
            ordered.append(node)
            for output in node.output:
                ordered.extend(self.nodes_after.get(output, []))
        del self.graph.node[:]
        self.graph.node.extend(ordered)
        self.graph.initializer.extend(self.new_initializers)

        used = {name for node in self.graph.node for name in node.input}
        used |= used_in_subgraphs(self.graph)
        used_initializers = [tensor for tensor in self.graph.initializer if tensor.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(used_initializers)


def used_in_subgraphs(graph):
    """Return the tensor names that nodes in subgraphs (If, Loop, Scan bodies) read."""
    names = set()
    for node in graph.node:
        for attribute in node.attribute:
            subgraphs = list(attribute.graphs)
            if attribute.HasField("g"):
                subgraphs.append(attribute.g)
            for subgraph in subgraphs:
                names |= {name for inner in subgraph.node for name in inner.input}
                names |= used_in_subgraphs(subgraph)
    return names


def build_qdq_model(model, targets, ranges, activation_type):
    """Quantize targets in model (modified in place) and return the builder with its statistics."""
    consumers = consumers_by_tensor(model.graph)
    graph_outputs = {value.name for value in model.graph.output}
    builder = QdqBuilder(model, ranges, activation_type)
    for target in targets:
        builder.quantize_target(target, output_tensor_to_quantize(target, consumers, graph_outputs))
    builder.finish()
    return builder


# ---------------------------------------------------------------------------
# ONNX Runtime steps (Node.js)

def find_node():
    node = shutil.which("node")
    if node is None:
        raise tvm.InputError("node (Node.js) not found on PATH; install Node.js 18.3 or later")
    if not (PEERS_DIR / "node_modules" / "onnxruntime-node").is_dir():
        raise tvm.InputError(f"onnxruntime-node is not installed: run `npm ci --ignore-scripts` in {PEERS_DIR}")
    return node


def run_calibrate_script(node, arguments):
    command = [node, str(CALIBRATE_SCRIPT), *arguments]
    log.info("running %s", " ".join(command))
    result = subprocess.run(command, stdout=subprocess.DEVNULL)
    if result.returncode != 0:
        raise tvm.ToolError(f"{CALIBRATE_SCRIPT.name} {arguments[0]} failed with exit status {result.returncode}")


def decode_calibration_images(folder, limit, work_dir):
    """Decode the calibration images into raw RGB files and return the list that ort_calibrate.js reads."""
    images = tvm.list_images(folder)
    if limit > 0:
        images = images[:limit]
    entries = []
    for index, path in enumerate(images):
        rgb = tvm.read_image_rgb(path)
        raw_path = work_dir / f"calib_{index:05d}.rgb"
        rgb.tofile(raw_path)
        entries.append({"path": str(raw_path), "width": int(rgb.shape[1]), "height": int(rgb.shape[0])})
    list_path = work_dir / "calibration_images.json"
    list_path.write_text(json.dumps(entries), encoding="utf-8")
    return list_path, len(entries)


def default_calibration_folder():
    return tvm.data_dir() / "datasets" / "roadcars" / "calib" / "images"


def check_opset(model, path):
    versions = [entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")]
    if not versions or versions[0] < MIN_OPSET:
        raise tvm.InputError(f"{path}: opset {versions[0] if versions else 'unknown'} is too old for per-channel "
                             f"QDQ, export with --opset {MIN_OPSET} or later")


def save_model_atomically(model, out_path):
    tvm.write_file_atomically(Path(out_path), [model.SerializeToString()])


def calibration_summary(args):
    return f"central {args.percentile:g} %" if args.calib_method == "percentile" else "min/max"


def quantize(args):
    node = find_node()
    if not args.model.is_file():
        raise tvm.InputError(f"{args.model}: ONNX model not found (write it with export_onnx.py)")
    calib_folder = args.calib or default_calibration_folder()
    tvm.list_images(calib_folder)  # fails early on a missing or empty folder
    check_opset(onnx.load(str(args.model), load_external_data=False), args.model)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".qdq_work_", dir=args.out.parent) as work:
        work_dir = Path(work)
        optimized_path = work_dir / "optimized.onnx"
        run_calibrate_script(node, ["optimize", "--model", str(args.model), "--out", str(optimized_path)])
        model = onnx.load(str(optimized_path))

        targets = find_targets(model.graph)
        if not targets:
            raise tvm.InputError(f"{args.model}: no Conv, Gemm or MatMul node with a constant weight to quantize")
        names = tensors_to_calibrate(model.graph, targets)
        augmented_path = work_dir / "augmented.onnx"
        onnx.save(add_graph_outputs(model, names), str(augmented_path))

        list_path, image_count = decode_calibration_images(calib_folder, args.calib_limit, work_dir)
        log.info("calibrating %d tensors of %d nodes on %d images from %s",
                 len(names), len(targets), image_count, calib_folder)
        stats_path = work_dir / "ranges.json"
        run_calibrate_script(node, ["calibrate", "--model", str(augmented_path), "--images", str(list_path),
                                    "--out", str(stats_path), "--threads", str(args.threads),
                                    "--method", args.calib_method, "--percentile", repr(args.percentile)])
        ranges = json.loads(stats_path.read_text(encoding="utf-8"))["tensors"]

        builder = build_qdq_model(model, targets, ranges, args.activation_type)
        model.producer_name = "qdet quantize_onnx_qdq.py"
        helper.set_model_props(model, {
            "quantization": f"static QDQ, {args.activation_type} activations ({calibration_summary(args)} over "
                            f"{image_count} calibration images), int8 per-channel weights",
        })
        onnx.checker.check_model(model)
        save_model_atomically(model, args.out)
    if builder.clipped_bias_values:
        log.warning("%d bias values exceeded the int32 range and were clipped", builder.clipped_bias_values)
    return builder.counts, image_count


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Build a static INT8 QDQ model (per-channel int8 weights, calibrated activation scales) "
                    "from the FP32 ONNX detector written by export_onnx.py.",
    )
    parser.add_argument("--model", type=Path, required=True, metavar="FILE.onnx", help="FP32 ONNX model")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.onnx", help="output QDQ model")
    parser.add_argument("--calib", type=Path, default=None, metavar="DIR",
                        help=f"calibration image folder (default: {default_calibration_folder()})")
    parser.add_argument("--calib-limit", type=int, default=0, metavar="N",
                        help="use at most the first N calibration images, sorted by name (0: all) (default: 0)")
    parser.add_argument("--calib-method", choices=("percentile", "minmax"), default="percentile",
                        help="activation range: the central --percentile of the values, or min to max "
                             "(default: percentile)")
    parser.add_argument("--percentile", type=float, default=99.99, metavar="P",
                        help="percent of each tensor's values inside its range with --calib-method percentile "
                             "(default: 99.99)")
    parser.add_argument("--activation-type", choices=sorted(ACTIVATION_TYPES), default="uint8",
                        help="quantized activation type (default: uint8)")
    parser.add_argument("--threads", type=int, default=2,
                        help="ONNX Runtime intra-op threads for calibration (default: 2)")
    return parser.parse_args(argv)


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    try:
        if args.calib_limit < 0:
            raise tvm.InputError(f"--calib-limit must be 0 or more, found {args.calib_limit}")
        if args.threads < 1:
            raise tvm.InputError(f"--threads must be at least 1, found {args.threads}")
        if not 50 < args.percentile <= 100:
            raise tvm.InputError(f"--percentile must be above 50 and at most 100, found {args.percentile}")
        start = time.perf_counter()
        counts, image_count = quantize(args)
        seconds = time.perf_counter() - start
    except tvm.ToolError as error:
        log.error("%s", error)
        return 1
    size = args.out.stat().st_size
    summary = ", ".join(f"{count} {kind}" for kind, count in sorted(counts.items()))
    print(f"wrote {args.out} ({summary}; {calibration_summary(args)} of {image_count} calibration images; "
          f"{size / 1e6:.1f} MB, {size} bytes) in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Export a torchvision fasterrcnn_mobilenet_v3_large_fpn detector to a safetensors file for qdet.

The file follows the safetensors layout, written here by hand:
- 8 bytes: the header length N, an unsigned 64-bit little-endian integer.
- N bytes: a UTF-8 JSON object mapping each tensor name to {"dtype", "shape", "data_offsets"}
  (begin and end byte offsets relative to the data section) plus "__metadata__", padded
  with spaces so that the data section starts at a multiple of 8 bytes.
- The data section: raw little-endian tensor bytes, contiguous and without gaps.

Tensors are the floating-point entries of model.state_dict() under their torchvision
names, as float32. "__metadata__" maps str to str, and every value is JSON text
(json.dumps of the value), so strings appear quoted: "variant" is "\\"fpn\\"",
"min_size" is "640".
"""

import argparse
import json
import logging
import struct
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torchvision_model as tvm  # noqa: E402  (needs the sys.path entry above)

FORMAT = "qdet-torchvision-export"
FORMAT_VERSION = 1

# numpy dtype -> safetensors dtype name.
SAFETENSORS_DTYPES = {
    np.dtype(np.float64): "F64",
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(np.int64): "I64",
    np.dtype(np.int32): "I32",
    np.dtype(np.int16): "I16",
    np.dtype(np.int8): "I8",
    np.dtype(np.uint8): "U8",
    np.dtype(np.bool_): "BOOL",
}

log = logging.getLogger("export_torchvision")


def to_little_endian_array(value):
    """Return a C-contiguous little-endian numpy copy-or-view of a tensor or array."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().contiguous().numpy()
    array = np.ascontiguousarray(value)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return array


def encode_safetensors(tensors, metadata):
    """Return the byte chunks of a safetensors file: header length, header, then tensor data.

    tensors maps names to torch tensors or numpy arrays. metadata maps str keys to any
    JSON-serialisable value, stored as its JSON text.
    """
    arrays = {}
    for name, value in tensors.items():
        if name == "__metadata__":
            raise ValueError("'__metadata__' is reserved and cannot name a tensor")
        array = to_little_endian_array(value)
        if array.dtype.newbyteorder("=") not in SAFETENSORS_DTYPES:
            raise ValueError(f"tensor {name!r}: dtype {array.dtype} has no safetensors equivalent")
        arrays[name] = array

    # Wider dtypes come first, in insertion order within a width. The data section starts
    # 8-byte aligned and has no gaps, so this keeps every tensor aligned to its element size.
    order = sorted(arrays, key=lambda name: -arrays[name].dtype.itemsize)

    header = {"__metadata__": {str(key): json.dumps(value) for key, value in metadata.items()}}
    offset = 0
    for name in order:
        array = arrays[name]
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[array.dtype.newbyteorder("=")],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes

    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)
    chunks = [struct.pack("<Q", len(header_bytes)), header_bytes]
    # A flat uint8 view also covers empty tensors, which memoryview.cast() rejects.
    chunks.extend(memoryview(arrays[name].reshape(-1).view(np.uint8)) for name in order)
    return chunks


def write_safetensors(path, tensors, metadata):
    """Write tensors and metadata to path as a safetensors file, atomically. Return its size in bytes."""
    chunks = encode_safetensors(tensors, metadata)
    tvm.write_file_atomically(path, chunks)
    return sum(len(chunk) for chunk in chunks)


def export_tensors(model):
    """Return the floating-point state_dict entries as contiguous float32 tensors, in state_dict order."""
    tensors = {}
    skipped = []
    for name, value in model.state_dict().items():
        if value.is_floating_point():
            tensors[name] = value.detach().to(torch.float32).contiguous()
        else:
            skipped.append(name)
    if skipped:
        log.info("skipped %d integer buffers such as %s", len(skipped), skipped[0])
    return tensors


def export_categories(config, settings, pretrained):
    """Return {id: name} from the config, or torchvision's COCO names for COCO weights."""
    if "categories" in config:
        categories = config["categories"]
        if not isinstance(categories, dict):
            raise tvm.InputError("config 'categories' must be a JSON object mapping class ids to names")
        return {str(key): str(name) for key, name in categories.items()}
    if pretrained or settings["num_classes"] == 91:
        if not pretrained:
            log.warning("no config with categories: using torchvision's COCO category names for 91 classes")
        return tvm.coco_categories()
    raise tvm.InputError(
        f"the model has {settings['num_classes']} classes but no config with 'categories' was given; pass --config"
    )


def build_metadata(model, variant, config, source, pretrained):
    settings = tvm.model_settings(model, variant)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": tvm.ARCHITECTURE,
    }
    metadata.update(settings)
    metadata["categories"] = export_categories(config, settings, pretrained)
    metadata.update(tvm.versions())
    metadata["source"] = source
    return metadata


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=(
            "Export torchvision's fasterrcnn_mobilenet_v3_large_fpn weights and inference settings "
            "to a safetensors file that the qdet converter reads."
        ),
        epilog=(
            "examples:\n"
            "  export_torchvision.py --checkpoint model.pth --out /tmp/model.safetensors\n"
            "  export_torchvision.py --pretrained --variant 320_fpn --out /tmp/coco_320.safetensors"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--checkpoint", type=Path, metavar="FILE.pth",
        help="torchvision state_dict of the detector (91 COCO classes unless the config sets num_classes)",
    )
    source.add_argument(
        "--pretrained", action="store_true",
        help="use torchvision's COCO weights instead (needs internet access or the torch hub cache)",
    )
    parser.add_argument(
        "--config", type=Path, metavar="FILE.json",
        help="settings JSON (variant, num_classes, categories, norm_layer, torchvision_kwargs); "
             "default: the .json with the checkpoint's name beside it, if present",
    )
    parser.add_argument(
        "--variant", choices=tvm.VARIANTS,
        help="fpn: torchvision defaults plus the config's torchvision_kwargs; 320_fpn: min_size 320, "
             "max_size 640, 150 RPN proposals before and after NMS (default: the config's variant, else fpn)",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.safetensors",
                        help="output file, in a folder that exists")
    return parser.parse_args(argv)


def run(args):
    if args.out.is_dir():
        raise tvm.InputError(f"{args.out}: output path is a folder, expected a file name")
    # Checked before the model loads, so that a mistyped --out fails in a second.
    tvm.check_output_folder(args.out)
    config_path = args.config
    if config_path is None and args.checkpoint is not None:
        config_path = tvm.config_beside(args.checkpoint)
        if config_path is not None:
            log.info("using config %s", config_path)

    config = tvm.read_config(config_path)
    variant = tvm.resolve_variant(config, args.variant)
    model = tvm.build_model(config_path, args.checkpoint, variant, pretrained=args.pretrained)

    if args.pretrained:
        source = tvm.pretrained_weights_enum(variant).url.rsplit("/", 1)[-1]
    else:
        source = args.checkpoint.name
    tensors = export_tensors(model)
    metadata = build_metadata(model, variant, config, source, args.pretrained)

    size = write_safetensors(args.out, tensors, metadata)
    print(f"wrote {len(tensors)} tensors ({size / 1e6:.1f} MB) to {args.out}")


def main(argv=None):
    return tvm.run_cli("export_torchvision", run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

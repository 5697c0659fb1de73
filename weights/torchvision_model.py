#!/usr/bin/python3
"""Build torchvision's fasterrcnn_mobilenet_v3_large_fpn detector the way qdet expects it.

Shared by the exporter, the parity reference generator and the benchmark peers:
- build_model() constructs the eval-mode FasterRCNN from a checkpoint (or torchvision's
  COCO weights) and the settings JSON that goes with it.
- model_settings() reads every inference setting back from the instantiated modules,
  so exported metadata describes the model that actually ran.
- read_image_rgb() and rgb_to_tensor() decode and convert images exactly as qdet does.
- write_file_atomically() writes outputs through a temporary file and a rename, into a
  folder that must already exist. create_output_folder() creates one.

Runs with Debian's /usr/bin/python3 (torch 1.13, torchvision 0.14).
"""

import inspect
import json
import logging
import os
import pickle
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models import mobilenet_v3_large
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _mobilenet_extractor
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FrozenBatchNorm2d

ARCHITECTURE = "fasterrcnn_mobilenet_v3_large_fpn"
VARIANTS = ("fpn", "320_fpn")
DEFAULT_VARIANT = "fpn"

# Keyword arguments that torchvision 0.14's fasterrcnn_mobilenet_v3_large_fpn() and
# fasterrcnn_mobilenet_v3_large_320_fpn() pass to FasterRCNN on top of its own defaults.
VARIANT_DEFAULT_KWARGS = {
    "fpn": {"rpn_score_thresh": 0.05},
    "320_fpn": {
        "min_size": 320,
        "max_size": 640,
        "rpn_pre_nms_top_n_test": 150,
        "rpn_post_nms_top_n_test": 150,
        "rpn_score_thresh": 0.05,
    },
}

# Three FPN levels (body outputs "0", "1" and the max-pooled "pool"), each with all five
# sizes and three aspect ratios, so the RPN head predicts 15 anchors per location.
ANCHOR_SIZES = ((32, 64, 128, 256, 512),) * 3
ANCHOR_ASPECT_RATIOS = ((0.5, 1.0, 2.0),) * 3

# Layers that _mobilenet_extractor leaves trainable. torchvision uses 6 (all) when it
# builds this detector around a pretrained backbone. It only sets requires_grad, so it
# has no effect on inference.
TRAINABLE_BACKBONE_LAYERS = 6

NORM_LAYERS = {"FrozenBatchNorm2d": FrozenBatchNorm2d, "BatchNorm2d": nn.BatchNorm2d}

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class ToolError(Exception):
    """An expected failure. Command-line tools print its message as one line and exit with status 1."""


class InputError(ToolError):
    """A missing or invalid input: file, checkpoint, image or setting."""


class OutputError(ToolError):
    """An output file that cannot be written."""


# ---------------------------------------------------------------------------
# Locations

# Exit codes shared with qdet's C++ tools (see the README).
EXIT_INPUT_ERROR = 3


def run_cli(program, run, args):
    """Run a command-line tool's body and return its exit code.

    Expected failures (ToolError, OSError) print one line naming the program and exit with the
    input-error code, without a traceback.
    """
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    try:
        run(args)
    except (ToolError, OSError) as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    return 0


def add_model_arguments(parser):
    """Add the --checkpoint, --config and --variant options that choose the torchvision model."""
    parser.add_argument("--checkpoint", type=Path, default=None, metavar="FILE.pth",
                        help=f"torchvision state_dict (default: {default_checkpoint()})")
    parser.add_argument("--config", type=Path, default=None, metavar="FILE.json",
                        help="settings JSON (default: the .json with the checkpoint's name beside it, if present)")
    parser.add_argument("--variant", choices=VARIANTS, help="model variant (default: the config's, else fpn)")


def repo_dir():
    """Return the repository root (the parent of weights/)."""
    return Path(__file__).resolve().parent.parent


def data_dir():
    """Return the shared data directory: $QDET_DATA_DIR if set, else <repo>/../shared."""
    override = os.environ.get("QDET_DATA_DIR")
    if override:
        return Path(override)
    return repo_dir().parent / "shared"


def default_checkpoint():
    return data_dir() / "models" / "roadcars_frcnn_mbv3.pth"


def default_eval_images():
    return data_dir() / "datasets" / "roadcars" / "eval" / "images"


def config_beside(checkpoint_path):
    """Return the settings JSON with the checkpoint's stem in its folder, or None if absent."""
    candidate = Path(checkpoint_path).with_suffix(".json")
    return candidate if candidate.is_file() else None


def list_images(folder):
    """Return the image files of a folder sorted by name. Raise InputError if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: image folder not found")
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise InputError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return images


# ---------------------------------------------------------------------------
# Model construction

def read_config(config_path):
    """Read and validate the settings JSON that accompanies a checkpoint. Return {} for None."""
    if config_path is None:
        return {}
    path = Path(config_path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a config file (.json)")
    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: cannot read config JSON: {error}") from None
    if not isinstance(config, dict):
        raise InputError(f"{path}: config must be a JSON object, found {type(config).__name__}")

    architecture = config.get("architecture", ARCHITECTURE)
    if architecture != ARCHITECTURE:
        raise InputError(f"{path}: architecture is {architecture!r}, expected {ARCHITECTURE!r}")
    if "variant" in config and config["variant"] not in VARIANTS:
        raise InputError(f"{path}: unknown variant {config['variant']!r}, expected one of {', '.join(VARIANTS)}")
    kwargs = config.get("torchvision_kwargs", {})
    if not isinstance(kwargs, dict):
        raise InputError(f"{path}: torchvision_kwargs must be a JSON object")
    # FasterRCNN forwards unknown keyword arguments to GeneralizedRCNNTransform, which
    # ignores them, so a misspelled setting would otherwise be dropped silently.
    unknown = sorted(set(kwargs) - accepted_fasterrcnn_kwargs())
    if unknown:
        raise InputError(f"{path}: torchvision_kwargs has unknown settings {unknown}, check the spelling")
    for name, value in kwargs.items():
        if not _is_number_or_number_list(value):
            raise InputError(f"{path}: torchvision_kwargs {name!r} must be a number or a list of numbers, found {value!r}")
    return config


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_number_or_number_list(value):
    if isinstance(value, list):
        return bool(value) and all(_is_number(item) for item in value)
    return _is_number(value)


def accepted_fasterrcnn_kwargs():
    """Return the keyword arguments that FasterRCNN or its GeneralizedRCNNTransform actually use."""
    names = set()
    for function in (FasterRCNN.__init__, GeneralizedRCNNTransform.__init__):
        for name, parameter in inspect.signature(function).parameters.items():
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                names.add(name)
    # self and backbone are not settings, and build_architecture() sets the other two itself.
    return names - {"self", "backbone", "num_classes", "rpn_anchor_generator"}


def resolve_variant(config, variant=None):
    """Return the requested variant, else the config's, else "fpn". Raise InputError if it is unknown."""
    chosen = variant or config.get("variant") or DEFAULT_VARIANT
    if chosen not in VARIANTS:
        raise InputError(f"unknown variant {chosen!r}, expected one of {', '.join(VARIANTS)}")
    return chosen


def fasterrcnn_kwargs(config, variant):
    """Return the FasterRCNN keyword arguments for a variant.

    The variant's torchvision defaults come first. The config's torchvision_kwargs override
    them only when the config was written for that same variant (a config without "variant"
    counts as fpn), because the settings of one variant, such as min_size 640, would silently
    change the other.
    """
    kwargs = dict(VARIANT_DEFAULT_KWARGS[variant])
    if config.get("variant", DEFAULT_VARIANT) == variant:
        kwargs.update(config.get("torchvision_kwargs", {}))
    return kwargs


def load_state_dict_file(checkpoint_path):
    """Load a state_dict (a mapping of names to tensors) from a .pth file."""
    path = Path(checkpoint_path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a checkpoint file (.pth)")
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        # weights_only restricts unpickling to tensors and plain containers.
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch 1.13's message suggests retrying with weights_only=False. Only the unpickler's reason is kept.
        reason = str(error).rsplit("WeightsUnpickler error:", 1)[-1].strip()
        raise InputError(
            f"{path}: not a PyTorch checkpoint of tensors and plain containers (unpickling failed: {reason})"
        ) from None
    except Exception as error:  # torch.load also raises RuntimeError, KeyError, EOFError...
        raise InputError(f"{path}: not a readable PyTorch checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(state_dict, dict) or not state_dict:
        raise InputError(f"{path}: expected a state_dict (a dict of tensors), found {type(state_dict).__name__}")
    not_tensors = [key for key, value in state_dict.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise InputError(
            f"{path}: expected a state_dict (a dict of tensors), but {len(not_tensors)} entries are not tensors, "
            f"first {not_tensors[0]!r}; save model.state_dict() instead"
        )
    return state_dict


def _describe_keys(keys, limit=3):
    shown = ", ".join(repr(key) for key in keys[:limit])
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"{shown}{more}"


def load_weights_strictly(model, state_dict, source):
    """Load state_dict into model, raising InputError on any missing, unexpected or misshaped key."""
    expected = model.state_dict()
    mismatched = [
        f"{key} {list(value.shape)} (model expects {list(expected[key].shape)})"
        for key, value in state_dict.items()
        if key in expected and value.shape != expected[key].shape
    ]
    if mismatched:
        raise InputError(f"{source}: {len(mismatched)} tensors have the wrong shape: {_describe_keys(mismatched)}")

    # strict=False returns the key lists instead of raising a long multi-line error.
    # FrozenBatchNorm2d drops num_batches_tracked entries itself before this comparison.
    result = model.load_state_dict(state_dict, strict=False)
    if result.missing_keys:
        raise InputError(
            f"{source}: {len(result.missing_keys)} model keys are missing from the checkpoint: "
            f"{_describe_keys(result.missing_keys)}"
        )
    if result.unexpected_keys:
        raise InputError(
            f"{source}: {len(result.unexpected_keys)} checkpoint keys are not in the model: "
            f"{_describe_keys(result.unexpected_keys)}"
        )


def build_architecture(num_classes, norm_layer, kwargs):
    """Construct the untrained detector exactly as torchvision's builder does."""
    backbone = mobilenet_v3_large(norm_layer=norm_layer)
    backbone = _mobilenet_extractor(backbone, True, TRAINABLE_BACKBONE_LAYERS)
    anchor_generator = AnchorGenerator(ANCHOR_SIZES, ANCHOR_ASPECT_RATIOS)
    return FasterRCNN(backbone, num_classes, rpn_anchor_generator=anchor_generator, **kwargs)


def pretrained_weights_enum(variant):
    if variant == "320_fpn":
        return torchvision.models.detection.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1
    return torchvision.models.detection.FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1


def build_model(config_path=None, checkpoint_path=None, variant=None, pretrained=False):
    """Build the detector, load its weights strictly and return it in eval mode.

    Either checkpoint_path (a torchvision state_dict) or pretrained=True (torchvision's
    COCO weights, downloaded or taken from the torch hub cache) selects the weights.
    variant defaults to the config's "variant", else "fpn". Raises InputError for bad input.
    """
    if pretrained == (checkpoint_path is not None):
        raise InputError("pass exactly one of a checkpoint path or pretrained=True")

    config = read_config(config_path)
    variant = resolve_variant(config, variant)
    kwargs = fasterrcnn_kwargs(config, variant)

    norm_name = config.get("norm_layer", "FrozenBatchNorm2d")
    if norm_name not in NORM_LAYERS:
        raise InputError(f"{config_path}: norm_layer {norm_name!r} is not one of {', '.join(NORM_LAYERS)}")
    num_classes = config.get("num_classes", 91)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise InputError(f"{config_path}: num_classes must be an integer >= 2, found {num_classes!r}")

    if pretrained:
        # torchvision's COCO weights use FrozenBatchNorm2d and 91 classes.
        if norm_name != "FrozenBatchNorm2d" or num_classes != 91:
            raise InputError("torchvision's COCO weights need norm_layer FrozenBatchNorm2d and num_classes 91")
        weights = pretrained_weights_enum(variant)
        try:
            state_dict = weights.get_state_dict(progress=False)
        except Exception as error:  # urllib raises URLError, socket errors, HTTPError...
            raise InputError(
                f"cannot download torchvision's COCO weights from {weights.url} "
                f"({type(error).__name__}: {error}); this needs internet access or a copy in the torch hub "
                f"cache ({torch.hub.get_dir()}/checkpoints), otherwise pass a checkpoint file"
            ) from None
        source = weights.url.rsplit("/", 1)[-1]
    else:
        state_dict = load_state_dict_file(checkpoint_path)
        source = str(checkpoint_path)

    try:
        model = build_architecture(num_classes, NORM_LAYERS[norm_name], kwargs)
    except (TypeError, ValueError) as error:  # torchvision rejects some values only when it builds the modules.
        raise InputError(f"{config_path}: invalid torchvision_kwargs {kwargs}: {error}") from None
    load_weights_strictly(model, state_dict, source)
    model.eval()
    return model


# ---------------------------------------------------------------------------
# Settings read back from the modules

def _single_value(values, what):
    distinct = sorted(set(values), key=repr)
    if len(distinct) != 1:
        raise InputError(f"model has {len(distinct)} different {what}: {distinct}")
    return distinct[0]


def model_settings(model, variant):
    """Return the inference settings of an instantiated detector as JSON-ready values.

    Every value is read from the module objects, not from constants, so it reflects
    the keyword arguments and defaults that were actually applied.
    """
    transform = model.transform
    rpn = model.rpn
    roi_heads = model.roi_heads
    roi_pool = roi_heads.box_roi_pool

    # In eval mode GeneralizedRCNNTransform resizes to min_size[-1].
    min_size = int(transform.min_size[-1])

    output_size = roi_pool.output_size
    if isinstance(output_size, (tuple, list)):
        output_size = _single_value(output_size, "RoIAlign output sizes (height and width)")

    bbox_xform_clip = _single_value(
        [rpn.box_coder.bbox_xform_clip, roi_heads.box_coder.bbox_xform_clip], "bbox_xform_clip values"
    )

    norm_modules = [m for m in model.modules() if isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d))]
    if not norm_modules:
        raise InputError("model has no FrozenBatchNorm2d or BatchNorm2d layers")
    norm_layer = _single_value([type(m).__name__ for m in norm_modules], "normalization layer types")
    bn_eps = _single_value([float(m.eps) for m in norm_modules], "batch-norm eps values")

    return {
        "variant": variant,
        "min_size": min_size,
        "max_size": int(transform.max_size),
        "image_mean": [float(v) for v in transform.image_mean],
        "image_std": [float(v) for v in transform.image_std],
        "size_divisible": int(transform.size_divisible),
        "num_classes": int(roi_heads.box_predictor.cls_score.out_features),
        "anchor_sizes": [[int(s) for s in level] for level in rpn.anchor_generator.sizes],
        "anchor_aspect_ratios": [[float(r) for r in level] for level in rpn.anchor_generator.aspect_ratios],
        "rpn_pre_nms_top_n_test": int(rpn._pre_nms_top_n["testing"]),
        "rpn_post_nms_top_n_test": int(rpn._post_nms_top_n["testing"]),
        "rpn_nms_thresh": float(rpn.nms_thresh),
        "rpn_score_thresh": float(rpn.score_thresh),
        "rpn_min_size": float(rpn.min_size),
        "rpn_box_coder_weights": [float(w) for w in rpn.box_coder.weights],
        "box_coder_weights": [float(w) for w in roi_heads.box_coder.weights],
        "bbox_xform_clip": float(bbox_xform_clip),
        "box_score_thresh": float(roi_heads.score_thresh),
        "box_nms_thresh": float(roi_heads.nms_thresh),
        "box_detections_per_img": int(roi_heads.detections_per_img),
        "roi_output_size": int(output_size),
        "roi_sampling_ratio": int(roi_pool.sampling_ratio),
        "bn_eps": bn_eps,
        "norm_layer": norm_layer,
    }


def coco_categories():
    """Return torchvision's COCO category names as {id: name}, without the background and N/A slots."""
    names = torchvision.models.detection.FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1.meta["categories"]
    return {str(index): name for index, name in enumerate(names) if index > 0 and name != "N/A"}


def versions():
    return {"torch_version": torch.__version__, "torchvision_version": torchvision.__version__}


# ---------------------------------------------------------------------------
# Images

def read_image_rgb(path):
    """Decode an image file into an RGB uint8 array of shape [H, W, 3], as qdet does.

    cv2.imread with IMREAD_COLOR returns 8-bit BGR and applies the EXIF orientation tag.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: image not found")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"{path}: OpenCV cannot decode this file as an image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def rgb_to_tensor(rgb):
    """Convert an RGB uint8 [H, W, 3] array into the float [0, 1] CHW tensor torchvision expects."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(f"expected an RGB uint8 array of shape [H, W, 3], found {rgb.dtype} {list(rgb.shape)}")
    # contiguous(), as torchvision's to_tensor returns it: torch interpolates
    # channels-last tensors with another kernel that rounds differently.
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous().float() / 255


# ---------------------------------------------------------------------------
# Output files

def check_output_folder(path):
    """Raise OutputError unless the folder that is to contain the output file path exists."""
    folder = Path(path).parent
    if not folder.exists():
        raise OutputError(f"{path}: cannot write the output file: folder {folder} does not exist; "
                          "create it first or fix the path")
    if not folder.is_dir():
        raise OutputError(f"{path}: cannot write the output file: {folder} is not a folder")


def create_output_folder(folder):
    """Create an output folder and its missing parents. Raise OutputError if that fails."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: cannot create the output folder because a file with this name exists")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{folder}: cannot create the output folder: {error.strerror or error}") from None


def write_file_atomically(path, chunks):
    """Write byte chunks to path through a temporary file in the same folder and a rename.

    A failure at any point removes the temporary file, so path either keeps its old content
    or receives the complete new content. The folder must exist: a missing one raises
    OutputError, so that a mistyped path does not create folders.
    """
    path = Path(path)
    check_output_folder(path)
    try:
        descriptor, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise OutputError(f"{path}: cannot create the output file: {error.strerror}") from None
    try:
        with os.fdopen(descriptor, "wb") as file:
            for chunk in chunks:
                file.write(chunk)
            file.flush()
            os.fsync(file.fileno())
        # mkstemp creates the file with mode 0600, so apply the usual umask-based mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp_name, 0o666 & ~umask)
        os.replace(temp_name, path)
    except BaseException as error:
        try:
            os.unlink(temp_name)
        except FileNotFoundError:
            pass
        if isinstance(error, OSError):
            raise OutputError(f"{path}: cannot write the output file: {error.strerror or error}") from None
        raise


def write_json_atomically(path, value, indent=None):
    write_file_atomically(path, [json.dumps(value, indent=indent).encode("utf-8") + b"\n"])


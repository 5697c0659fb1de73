#!/usr/bin/python3
"""Compare qdet with torchvision and ONNX Runtime on the same images, machine and thread count.

Prepares each system's model file and times these one-off costs. Decodes N images spread
evenly over the road-cars eval set (with --quick, over its images that contain a car) once
and starts one persistent worker per system. After a warm-up, every image runs through every
system in turn, and the starting system rotates per image.
Writes <out>/peers.md and <out>/peers.json and prints the table. See README.md in this folder.

Runs with Debian's /usr/bin/python3 (torch 1.13, torchvision 0.14, cv2).
"""

import argparse
import json
import logging
import os
import platform
import queue
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

PEERS_DIR = Path(__file__).resolve().parent
REPO_DIR = PEERS_DIR.parent.parent
sys.path.insert(0, str(REPO_DIR / "weights"))
import torchvision_model as tvm  # noqa: E402  (needs the sys.path entry above)

import chart  # noqa: E402  (this folder, on sys.path as the script's own)

PYTHON = "/usr/bin/python3"  # Debian's interpreter, the one with torch and torchvision

# Every system the harness can run, in table order. "needs" lists the artifacts each one runs on.
SYSTEMS = {
    "qdet_int8": {"kind": "qdet", "precision": "int8", "needs": ["qdet"]},
    "qdet_fp32": {"kind": "qdet", "precision": "fp32", "needs": ["qdet"]},
    "torchvision_fp32": {"kind": "torch", "mode": "fp32", "needs": []},
    "torchvision_dynamic_int8": {"kind": "torch", "mode": "dynamic_int8", "needs": []},
    "onnxruntime_fp32": {"kind": "ort", "needs": ["onnx"]},
    "onnxruntime_qdq_int8": {"kind": "ort", "needs": ["onnx_qdq"]},
}
DEFAULT_REFERENCE = "qdet_int8"

# The class whose AP50 the table shows. score() reads it as engine_eval's first scored class.
SCORED_CLASS = "car"

QUICK_IMAGES = 3
QUICK_WARMUP = 1
QUICK_CALIB_LIMIT = 8

# Generous limits that only catch a hung worker, because loading takes seconds and one image
# well under a second on a desktop CPU. qdet's warm_up op prepares every RoI batch size.
READY_TIMEOUT_S = 600
REQUEST_TIMEOUT_S = 600

log = logging.getLogger("run_peers")


class HarnessError(tvm.ToolError):
    """A failure of the benchmark harness or of one of its workers."""


# ---------------------------------------------------------------------------
# Locations and checks

class Paths:
    """Inputs the run reads and outputs it writes."""

    def __init__(self, args):
        self.data = tvm.data_dir()
        self.checkpoint = self.data / "models" / "roadcars_frcnn_mbv3.pth"
        self.config = self.data / "models" / "roadcars_frcnn_mbv3.json"
        self.annotations = self.data / "datasets" / "roadcars" / "eval" / "annotations.json"
        self.eval_images = self.data / "datasets" / "roadcars" / "eval" / "images"
        self.calib_images = self.data / "datasets" / "roadcars" / "calib" / "images"
        self.build = args.build.resolve()
        self.out = args.out.resolve()
        self.artifacts = self.out / "artifacts"
        self.rgb = self.out / "images"
        self.detections = self.out / "detections"
        self.eval_reports = self.out / "eval"
        self.logs = self.out / "logs"

    def tool(self, name):
        return self.build / name


def check_data(paths):
    if not paths.data.is_dir():
        raise tvm.InputError(f"data directory {paths.data} not found; set QDET_DATA_DIR to the folder that "
                             "contains models/ and datasets/")
    for path, what in ((paths.checkpoint, "checkpoint"), (paths.config, "model config"),
                       (paths.annotations, "eval annotations")):
        if not path.is_file():
            raise tvm.InputError(f"{path}: {what} not found in the data directory {paths.data}")
    for path, what in ((paths.eval_images, "eval image folder"), (paths.calib_images, "calibration image folder")):
        if not path.is_dir():
            raise tvm.InputError(f"{path}: {what} not found in the data directory {paths.data}")


def check_build(paths, systems):
    needed = ["engine_eval"]
    if any(SYSTEMS[name]["kind"] == "qdet" for name in systems):
        needed += ["qdet", "convert"]
    if not paths.build.is_dir():
        raise tvm.InputError(f"qdet build directory {paths.build} not found; build it with "
                             f"`cmake -S {REPO_DIR} -B {paths.build} -DCMAKE_BUILD_TYPE=Release && "
                             f"cmake --build {paths.build} -j2` or pass --build DIR")
    for name in needed:
        tool = paths.tool(name)
        if not (tool.is_file() and os.access(tool, os.X_OK)):
            raise tvm.InputError(f"{tool}: executable not found; build qdet (cmake --build {paths.build}) "
                                 "or pass another --build DIR")


def onnxruntime_problem():
    """Return why the ONNX Runtime systems cannot run here, or None if they can."""
    if shutil.which("node") is None:
        return "node (Node.js) not found on PATH"
    if not (PEERS_DIR / "node_modules" / "onnxruntime-node").is_dir():
        return f"onnxruntime-node is not installed; run `npm ci --ignore-scripts` in {PEERS_DIR}"
    return None


def select_systems(requested):
    """Return the systems to run: the requested ones, or every system that can run here."""
    problem = onnxruntime_problem()
    if requested is None:
        systems = list(SYSTEMS)
        if problem:
            log.warning("skipping the ONNX Runtime systems: %s", problem)
            systems = [name for name in systems if SYSTEMS[name]["kind"] != "ort"]
        return systems
    if problem and any(SYSTEMS[name]["kind"] == "ort" for name in requested):
        raise tvm.InputError(f"cannot run the ONNX Runtime systems: {problem}")
    return [name for name in SYSTEMS if name in requested]


def select_reference(requested, systems):
    """Return the system whose median the ratio column divides by.

    parse_args() has already rejected an unknown system and, when --systems was given, one
    outside that list. The default list leaves out ONNX Runtime where it cannot run, so this
    check remains for that case.
    """
    if requested is None:
        return DEFAULT_REFERENCE if DEFAULT_REFERENCE in systems else systems[0]
    if requested not in systems:
        raise tvm.InputError(f"--reference {requested} is not one of the systems that can run here: "
                             f"{', '.join(systems)}")
    return requested


# ---------------------------------------------------------------------------
# One-off artifacts

class Artifacts:
    """Model files in <out>/artifacts and the time each took to make.

    artifacts.json records every file with its build time, size and settings. Files are reused
    only with --reuse, and only when their recorded size and settings match.
    """

    def __init__(self, paths, reuse, calib_limit, threads):
        self.paths = paths
        self.reuse = reuse
        self.calib_limit = calib_limit
        self.threads = threads
        self.manifest_path = paths.artifacts / "artifacts.json"
        self.manifest = {}
        if reuse and self.manifest_path.is_file():
            self.manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        self.files = {
            "safetensors": paths.artifacts / "model.safetensors",
            "qdet": paths.artifacts / "model.qdet",
            "onnx": paths.artifacts / "model.onnx",
            "onnx_qdq": paths.artifacts / "model_qdq.onnx",
        }
        self.used = {}

    def settings(self, name):
        """Return the settings that decide whether an existing artifact can be reused."""
        calibrated = name in ("qdet", "onnx_qdq")
        return {"calib_limit": self.calib_limit if calibrated else None}

    def make(self, name, command):
        path = self.files[name]
        recorded = self.manifest.get(name)
        if (self.reuse and path.is_file() and recorded and recorded.get("settings") == self.settings(name)
                and recorded.get("bytes") == path.stat().st_size):
            log.info("reusing %s (built in %.1f s)", path, recorded["seconds"])
            self.used[name] = {**recorded, "reused": True}
            return path
        log.info("building %s: %s", path.name, shlex.join(command))
        log_path = self.paths.logs / f"build_{name}.log"
        start = time.perf_counter()
        with open(log_path, "w", encoding="utf-8") as log_file:
            result = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - start
        if result.returncode != 0:
            raise HarnessError(f"building {path.name} failed with exit status {result.returncode}:\n"
                               f"{tail(log_path)}\n(full output in {log_path})")
        if not path.is_file():
            raise HarnessError(f"building {path.name} exited with status 0 but wrote no {path}")
        log.info("built %s in %.1f s", path.name, seconds)
        self.used[name] = {"path": str(path), "seconds": seconds, "bytes": path.stat().st_size,
                           "command": shlex.join(command), "settings": self.settings(name), "reused": False}
        self.manifest[name] = {key: value for key, value in self.used[name].items() if key != "reused"}
        tvm.write_json_atomically(self.manifest_path, self.manifest, indent=1)
        return path

    def prepare(self, systems):
        needed = {artifact for name in systems for artifact in SYSTEMS[name]["needs"]}
        paths = self.paths
        calib_limit = ["--calib-limit", str(self.calib_limit)] if self.calib_limit else []
        if "qdet" in needed:
            self.make("safetensors", [PYTHON, str(REPO_DIR / "weights" / "export_torchvision.py"),
                                      "--checkpoint", str(paths.checkpoint), "--config", str(paths.config),
                                      "--out", str(self.files["safetensors"])])
            self.make("qdet", [str(paths.tool("convert")), "--weights", str(self.files["safetensors"]),
                               "--calib", str(paths.calib_images), "--out", str(self.files["qdet"]),
                               "--threads", str(self.threads), "--skip-sqnr", "--quiet", *calib_limit])
        if "onnx" in needed or "onnx_qdq" in needed:
            self.make("onnx", [PYTHON, str(PEERS_DIR / "export_onnx.py"), "--checkpoint", str(paths.checkpoint),
                               "--config", str(paths.config), "--out", str(self.files["onnx"])])
        if "onnx_qdq" in needed:
            self.make("onnx_qdq", [PYTHON, str(PEERS_DIR / "quantize_onnx_qdq.py"), "--model", str(self.files["onnx"]),
                                   "--calib", str(paths.calib_images), "--out", str(self.files["onnx_qdq"]),
                                   "--threads", str(self.threads), *calib_limit])

    def cost(self, name):
        entry = self.used.get(name)
        return None if entry is None else round(entry["seconds"], 2)


def tail(path, lines=15):
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace").rstrip().splitlines()
    except OSError:
        return "(no output)"
    return "\n".join(text[-lines:]) or "(no output)"


# ---------------------------------------------------------------------------
# Images

def load_image_list(annotations_path, count, only_scored_class=False):
    """Return count images spread evenly over the annotations' image list, with their annotations.

    The eval set holds highway photos first and fog photos after them, at other sizes and with more
    proposals; an even spread times both kinds in their proportions. With only_scored_class, the
    spread covers only the images with at least one SCORED_CLASS annotation, so that even a
    3-image run has ground truth for the AP50 column.
    """
    try:
        dataset = json.loads(Path(annotations_path).read_text(encoding="utf-8"))
        images = dataset["images"]
        annotations = dataset.get("annotations", [])
        category_ids = {category["id"] for category in dataset.get("categories", [])
                        if category.get("name") == SCORED_CLASS}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise tvm.InputError(f"{annotations_path}: cannot read the COCO image list: {error}") from None

    pool = images
    described = "images"
    if only_scored_class:
        if not category_ids:
            raise tvm.InputError(f"{annotations_path}: no category named {SCORED_CLASS!r}")
        ids_with_class = {a.get("image_id") for a in annotations if a.get("category_id") in category_ids}
        pool = [image for image in images if image["id"] in ids_with_class]
        described = f"images with a {SCORED_CLASS} annotation"
    if count > len(pool):
        raise tvm.InputError(f"--images {count} is more than the {len(pool)} {described} in {annotations_path}")
    chosen = [pool[index * len(pool) // count] for index in range(count)]
    ids = {image["id"] for image in chosen}
    subset = dict(dataset)
    subset["images"] = chosen
    subset["annotations"] = [a for a in annotations if a.get("image_id") in ids]
    return chosen, subset


def decode_images(images, paths):
    """Decode each image once with OpenCV into <out>/images/<stem>.rgb (raw RGB uint8 HWC)."""
    tvm.create_output_folder(paths.rgb)
    decoded = []
    for info in images:
        name = info["file_name"]
        rgb = tvm.read_image_rgb(paths.eval_images / name)
        height, width = rgb.shape[:2]
        if (width, height) != (info.get("width", width), info.get("height", height)):
            raise tvm.InputError(f"{name}: decoded size {width}x{height} differs from the annotations' "
                                 f"{info['width']}x{info['height']}")
        raw_path = paths.rgb / f"{Path(name).stem}.rgb"
        tvm.write_file_atomically(raw_path, [rgb.tobytes()])
        decoded.append({"image": name, "stem": Path(name).stem, "input": str(raw_path),
                        "width": int(width), "height": int(height)})
    return decoded


# ---------------------------------------------------------------------------
# Workers

class Worker:
    """One benchmark worker process speaking the JSON-lines protocol."""

    def __init__(self, system, command, log_path):
        self.system = system
        self.command = command
        self.log_path = log_path
        self.lines = queue.Queue()
        self.ready = None
        self.times_ms = []
        self.stages = []
        self.peak_rss_bytes = None
        log.info("starting %s: %s", system, shlex.join(command))
        self.log_file = open(log_path, "w", encoding="utf-8")
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.log_file, text=True, bufsize=1)
        self.reader = threading.Thread(target=self._read_stdout, name=f"{system}-stdout", daemon=True)
        self.reader.start()

    def _read_stdout(self):
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def receive(self, timeout, expected):
        """Return the next protocol event, raising HarnessError on an error event, exit or timeout."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise HarnessError(f"{self.system}: no '{expected}' event within {timeout} s") from None
        if line is None:
            status = self.process.wait()
            raise HarnessError(f"{self.system}: worker exited with status {status} while the harness expected "
                               f"'{expected}'; last lines of {self.log_path}:\n{tail(self.log_path)}")
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            raise HarnessError(f"{self.system}: invalid protocol line {line.strip()[:200]!r}") from None
        if event.get("event") == "error":
            raise HarnessError(f"{self.system}: worker error: {event.get('message')}")
        if event.get("event") != expected:
            raise HarnessError(f"{self.system}: expected a '{expected}' event, got {line.strip()[:200]}")
        return event

    def request(self, message, expected):
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # receive() reports the exit with the worker's log
        return self.receive(REQUEST_TIMEOUT_S, expected)

    def wait_ready(self):
        self.ready = self.receive(READY_TIMEOUT_S, "ready")
        if self.ready.get("system") != self.system:
            raise HarnessError(f"{self.system}: worker reports itself as {self.ready.get('system')!r}")
        log.info("%s ready: loaded in %.0f ms", self.system, self.ready["load_ms"])

    def run(self, image, dump=None):
        message = {"op": "run", "input": image["input"], "width": image["width"], "height": image["height"],
                   "image": image["image"]}
        if dump is not None:
            message["dump"] = str(dump)
        return self.request(message, "result")

    def read_peak_rss(self):
        """Record VmHWM (peak resident set size) from /proc/<pid>/status."""
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_rss_bytes = int(line.split()[1]) * 1024
        except OSError as error:
            log.warning("%s: cannot read peak memory: %s", self.system, error)

    def quit(self):
        self.read_peak_rss()
        try:
            self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.process.stdin.close()
        except BrokenPipeError:
            pass
        status = self.process.wait(timeout=60)
        if status != 0:
            raise HarnessError(f"{self.system}: worker exited with status {status} after quit; see {self.log_path}")

    def kill(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()


def worker_command(system, paths, artifacts, threads):
    spec = SYSTEMS[system]
    if spec["kind"] == "qdet":
        return [str(paths.tool("qdet")), "--weights", str(artifacts.files["qdet"]), "--precision", spec["precision"],
                "--threads", str(threads), "--serve"]
    if spec["kind"] == "torch":
        return [PYTHON, str(PEERS_DIR / "torch_worker.py"), "--mode", spec["mode"], "--threads", str(threads),
                "--checkpoint", str(paths.checkpoint), "--config", str(paths.config)]
    model = artifacts.files["onnx_qdq" if system == "onnxruntime_qdq_int8" else "onnx"]
    return ["node", str(PEERS_DIR / "ort_worker.js"), "--model", str(model), "--threads", str(threads),
            "--system", system]


def model_file(system, paths, artifacts):
    spec = SYSTEMS[system]
    if spec["kind"] == "qdet":
        return artifacts.files["qdet"]
    if spec["kind"] == "torch":
        return paths.checkpoint
    return artifacts.files["onnx_qdq" if system == "onnxruntime_qdq_int8" else "onnx"]


def warm_up(worker, images, count):
    if SYSTEMS[worker.system]["kind"] == "qdet":
        first = images[0]
        worker.request({"op": "warm_up", "height": first["height"], "width": first["width"]}, "warmed_up")
    for index in range(count):
        worker.run(images[index % len(images)])
    log.info("%s warmed up", worker.system)


def timed_loop(workers, images, paths, settle_ms):
    """Run every image through every worker, rotating which worker goes first.

    Waits settle_ms before each request: OpenMP and ONNX Runtime threads keep spinning for a
    while after their work ends, and without the pause they would steal the cores from the
    next system's run.
    """
    order = list(workers)
    for system in order:
        folder = paths.detections / system
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    for index, image in enumerate(images):
        shift = index % len(order)
        for system in order[shift:] + order[:shift]:
            worker = workers[system]
            time.sleep(settle_ms / 1000.0)
            result = worker.run(image, dump=paths.detections / system / f"{image['stem']}.json")
            worker.times_ms.append(float(result["ms"]))
            if "stages" in result:
                worker.stages.append(result["stages"])
        log.info("image %d/%d %s: %s", index + 1, len(images), image["image"],
                 ", ".join(f"{system} {workers[system].times_ms[-1]:.0f} ms" for system in order))


# ---------------------------------------------------------------------------
# Scoring and report

def score(system, paths, subset_annotations):
    """Score a system's dumps with engine_eval and return car AP50 (the first scored class)."""
    report_path = paths.eval_reports / f"{system}.json"
    log_path = paths.logs / f"eval_{system}.log"
    command = [str(paths.tool("engine_eval")), "--gt", str(subset_annotations),
               "--detections", str(paths.detections / system),
               "--report", str(report_path), "--quiet"]
    with open(log_path, "w", encoding="utf-8") as log_file:
        result = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise HarnessError(f"engine_eval failed on {system}'s detections with exit status {result.returncode}:\n"
                           f"{tail(log_path)}")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    car = report["classes"][0]
    if car.get("name") != "car":
        raise HarnessError(f"{report_path}: the first scored class is {car.get('name')!r}, expected 'car'")
    return car["ap50"]


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average():
    """Return the 1-minute load average, or None where /proc/loadavg is missing."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def system_row(system, worker, ap50, paths, artifacts, reference_median):
    times = worker.times_ms
    median = statistics.median(times)
    model = model_file(system, paths, artifacts)
    row = {
        "system": system,
        "images": len(times),
        "median_ms": median,
        "p90_ms": float(np.percentile(times, 90)),
        "mean_ms": statistics.fmean(times),
        "images_per_s": 1000.0 / statistics.fmean(times),
        "peak_rss_mb": None if worker.peak_rss_bytes is None else worker.peak_rss_bytes / 2**20,
        "car_ap50": ap50,
        "time_ratio_to_reference": None if reference_median is None else median / reference_median,
        "model_file": model.name,
        "model_bytes": worker.ready.get("model_bytes"),
        "load_ms": worker.ready.get("load_ms"),
        "details": worker.ready.get("details", {}),
    }
    if worker.stages:
        row["stages_median_ms"] = {name: statistics.median(stage[name] for stage in worker.stages)
                                   for name in worker.stages[0]}
    return row


def versions(rows):
    details = {row["system"]: row["details"] for row in rows}
    torch_details = details.get("torchvision_dynamic_int8") or details.get("torchvision_fp32") or {}
    ort_details = details.get("onnxruntime_fp32") or details.get("onnxruntime_qdq_int8") or {}
    import torch  # already imported through torchvision_model

    return {
        "torch": torch_details.get("torch_version", torch.__version__),
        "torchvision": torch_details.get("torchvision_version"),
        # The engine the dynamic INT8 worker used; without that worker, the driver's default.
        "torch_quantized_engine": torch_details.get("quantized_engine", torch.backends.quantized.engine),
        "onnxruntime": ort_details.get("onnxruntime_version"),
        "node": ort_details.get("node_version"),
        "python": platform.python_version(),
    }


def format_number(value, digits):
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(report):
    lines = [
        f"# qdet and peers: {report['images']} images, {report['threads']} threads",
        "",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, 1-minute load average "
        f"{format_number(report['machine']['load_average_1min_at_start'], 2)} before the run. "
        f"Untimed warm-up images per system: {report['warmup']}. Times cover RGB bytes in memory to detections in "
        "original image coordinates.",
        "",
        f"| system | median ms | p90 ms | images/s | peak RSS MB | car AP50 | time vs {report['reference_system']} | "
        "model file | "
        "model MB | load ms |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in report["systems"]:
        model_mb = None if row["model_bytes"] is None else row["model_bytes"] / 1e6
        lines.append(
            f"| {row['system']} | {row['median_ms']:.1f} | {row['p90_ms']:.1f} | {row['images_per_s']:.2f} | "
            f"{format_number(row['peak_rss_mb'], 0)} | {format_number(row['car_ap50'], 3)} | "
            f"{format_number(row['time_ratio_to_reference'], 2)} | {row['model_file']} | "
            f"{format_number(model_mb, 1)} | {format_number(row['load_ms'], 0)} |")
    costs = report["one_off_costs_s"]
    reused = [name for name, entry in report["artifacts"].items() if entry.get("reused")]
    lines += [
        "",
        "One-off costs (s): " + ", ".join(f"{name} {format_number(value, 1)}" for name, value in costs.items())
        + (f" (reused from an earlier run: {', '.join(reused)})" if reused else ""),
        "",
        "Versions: " + ", ".join(f"{name} {value}" for name, value in report["versions"].items() if value),
        "",
        f"Command: `{report['command']}`",
        "",
        "![Median latency per system, with qdet's stages](peers.svg)",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Main

def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Benchmark qdet against torchvision and ONNX Runtime: same images, machine and thread "
                    "count, one run, interleaved. Writes OUT/peers.md, OUT/peers.json and the chart OUT/peers.svg.",
    )
    parser.add_argument("--images", type=int, default=None, metavar="N",
                        help="time N images spread evenly over the eval set (default: 50; "
                             f"{QUICK_IMAGES} with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: {QUICK_IMAGES} images spread over the eval images that contain a "
                             f"{SCORED_CLASS}, {QUICK_WARMUP} warm-up image, calibration on the first "
                             f"{QUICK_CALIB_LIMIT} calibration images")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for every system (default: 2)")
    parser.add_argument("--systems", default=None, metavar="LIST",
                        help=f"comma-separated systems out of {', '.join(SYSTEMS)} "
                             "(default: all that can run here)")
    parser.add_argument("--warmup", type=int, default=None, metavar="W",
                        help=f"untimed images per system before timing (default: 3; {QUICK_WARMUP} with --quick)")
    parser.add_argument("--reference", metavar="SYSTEM",
                        help="system whose median the ratio column divides by (default: qdet_int8 when it runs, "
                             "else the first system)")
    parser.add_argument("--settle-ms", type=int, default=200, metavar="MS",
                        help="pause before each timed request, so that the previous system's spinning threads "
                             "go idle (default: 200)")
    parser.add_argument("--build", type=Path, default=REPO_DIR / "build", metavar="DIR",
                        help="qdet build directory (default: <repo>/build)")
    parser.add_argument("--out", type=Path, default=REPO_DIR / "build" / "peers", metavar="DIR",
                        help="output directory (default: <repo>/build/peers)")
    parser.add_argument("--replot", action="store_true",
                        help="rewrite OUT/peers.md and OUT/peers.svg from OUT/peers.json without running anything")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse model files from an earlier run in OUT/artifacts when built with the same "
                             "settings (their one-off costs are then those of that run)")
    args = parser.parse_args(argv)

    if args.images is None:
        args.images = QUICK_IMAGES if args.quick else 50
    if args.warmup is None:
        args.warmup = QUICK_WARMUP if args.quick else 3
    if args.images < 1:
        parser.error(f"--images must be at least 1, found {args.images}")
    if args.warmup < 0:
        parser.error(f"--warmup must be 0 or more, found {args.warmup}")
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, found {args.threads}")
    if args.settle_ms < 0:
        parser.error(f"--settle-ms must be 0 or more, found {args.settle_ms}")
    if args.systems is not None:
        requested = [name.strip() for name in args.systems.split(",") if name.strip()]
        unknown = [name for name in requested if name not in SYSTEMS]
        if unknown:
            parser.error(f"unknown system {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
        if not requested:
            parser.error("--systems is empty")
        args.systems = requested
    if args.reference is not None:
        if args.reference not in SYSTEMS:
            parser.error(f"unknown --reference system {args.reference}; choose from {', '.join(SYSTEMS)}")
        if args.systems is not None and args.reference not in args.systems:
            parser.error(f"--reference {args.reference} is not one of the systems in --systems: "
                         f"{', '.join(args.systems)}")
    return args


def run(args, argv):
    paths = Paths(args)
    check_data(paths)
    systems = select_systems(args.systems)
    reference = select_reference(args.reference, systems)
    check_build(paths, systems)
    for folder in (paths.out, paths.artifacts, paths.logs, paths.eval_reports):
        tvm.create_output_folder(folder)

    images, subset = load_image_list(paths.annotations, args.images, only_scored_class=args.quick)
    subset_annotations = paths.out / "annotations_subset.json"
    tvm.write_file_atomically(subset_annotations, [json.dumps(subset).encode("utf-8")])
    load_at_start = load_average()
    if load_at_start is not None and load_at_start > 0.5:
        log.warning("the 1-minute load average is %.2f before the run: other processes compete for the CPU, "
                    "so the times will be slower and noisier than on an idle machine", load_at_start)

    calib_limit = QUICK_CALIB_LIMIT if args.quick else 0
    artifacts = Artifacts(paths, args.reuse, calib_limit, args.threads)
    artifacts.prepare(systems)

    log.info("decoding %d images", len(images))
    decoded = decode_images(images, paths)

    workers = {}
    try:
        for system in systems:
            workers[system] = Worker(system, worker_command(system, paths, artifacts, args.threads),
                                     paths.logs / f"worker_{system}.log")
        for worker in workers.values():
            worker.wait_ready()
        for worker in workers.values():
            warm_up(worker, decoded, args.warmup)
        timed_loop(workers, decoded, paths, args.settle_ms)
        for worker in workers.values():
            worker.quit()
    finally:
        for worker in workers.values():
            worker.kill()

    ap50 = {}
    for system in systems:
        ap50[system] = score(system, paths, subset_annotations)
    reference_median = statistics.median(workers[reference].times_ms)
    rows = [system_row(system, workers[system], ap50[system], paths, artifacts, reference_median)
            for system in systems]

    report = {
        "images": len(decoded),
        "image_names": [image["image"] for image in decoded],
        "warmup": args.warmup,
        "threads": args.threads,
        "quick": args.quick,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
                    "kernel": platform.release(),
                    "load_average_1min_at_start": load_at_start, "load_average_1min_at_end": load_average()},
        "command": shlex.join([sys.executable, *sys.argv[:1], *argv]),
        "versions": versions(rows),
        "one_off_costs_s": {
            "export_safetensors": artifacts.cost("safetensors"),
            "convert_and_calibrate": artifacts.cost("qdet"),
            "onnx_export": artifacts.cost("onnx"),
            "qdq_quantization": artifacts.cost("onnx_qdq"),
        },
        "calibration_images": calib_limit or len(tvm.list_images(paths.calib_images)),
        "artifacts": artifacts.used,
        "reference_system": reference,
        "systems": rows,
    }
    tvm.write_json_atomically(paths.out / "peers.json", report, indent=1)
    log.info("wrote %s", paths.out / "peers.json")
    write_table_and_chart(report, paths.out)


def write_table_and_chart(report, out):
    table = markdown(report)
    svg = chart.latency_svg(report)
    tvm.write_file_atomically(out / "peers.md", [table.encode("utf-8")])
    tvm.write_file_atomically(out / "peers.svg", [svg.encode("utf-8")])
    print(table)
    log.info("wrote %s and %s", out / "peers.md", out / "peers.svg")


def replot(out):
    """Rewrite the table and chart of an earlier run from its peers.json."""
    path = out / "peers.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HarnessError(f"{path}: not found; run the benchmark first, or point --out at an earlier run") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HarnessError(f"{path}: cannot read the report: {error}") from None
    try:
        write_table_and_chart(report, out)
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise HarnessError(f"{path}: invalid run_peers report, {type(error).__name__}: {error}") from None


def raise_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    # The finally block in run() stops the workers, so SIGTERM has to unwind the stack to reach it.
    signal.signal(signal.SIGTERM, raise_on_sigterm)
    try:
        if args.replot:
            replot(args.out)
        else:
            run(args, argv)
    except tvm.ToolError as error:
        log.error("%s", error)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

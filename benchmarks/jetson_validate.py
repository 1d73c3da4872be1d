"""Check a TensorRT engine against its ONNX twin, on the Jetson that will run it.

    python3 benchmarks/jetson_validate.py --engine m.engine --onnx m.onnx [--images DIR] [--runs 50]
    python3 -m benchmarks.jetson_validate ...

Both models see the same inputs: letterboxed images from --images, else
seeded random ones (the ONNX reference runs on the CPU by default, so
TensorRT is not on both sides of the comparison). Reported: the largest raw
output difference, how well the decoded boxes agree (matched by class and
IoU: mean IoU, score differences, missing and extra boxes; this catches the
empty or duplicated boxes of some FP16 engines on TensorRT 8.2), the median
latency of each, and the environment (TensorRT, L4T/JetPack, nvpmodel,
jetson_clocks). Exits 1 when agreement is below the thresholds, 2 when
something cannot run.
Runs on the Nano's Python 3.6.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

if __package__ in (None, ""):
    # Run as a file: make the repository importable, as `python -m` would.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from edge.backends import open_backend, run_batched  # noqa: E402
from edge.boxes import box_iou  # noqa: E402
from edge.decode import EFFICIENT_NMS_OUTPUTS, decode_outputs  # noqa: E402
from edge.errors import EdgeError, FrameError  # noqa: E402
from edge.images import IMAGE_EXTENSIONS, list_images, read_image  # noqa: E402
from edge.tta import prepare_views, view_plan  # noqa: E402

# L4T release -> JetPack, for the Nano's JetPack 4 line.
JETPACK_BY_L4T = {"R32.5.1": "4.5.1", "R32.6.1": "4.6", "R32.7.1": "4.6.1", "R32.7.2": "4.6.2",
                  "R32.7.3": "4.6.3", "R32.7.4": "4.6.4", "R32.7.5": "4.6.5"}


def build_parser():
    p = argparse.ArgumentParser(description="Compare a TensorRT engine with its ONNX twin on this device.")
    p.add_argument("--engine", required=True, help="TensorRT .engine/.plan file")
    p.add_argument("--onnx", required=True, help="the ONNX model the engine was built from")
    p.add_argument("--onnx-providers", default="CPUExecutionProvider",
                   help="comma-separated onnxruntime providers for the reference; keep TensorRT out of it")
    p.add_argument("--images", help="folder of images to letterbox; seeded random inputs when absent")
    p.add_argument("--count", type=int, default=8, help="number of inputs (images taken, or random made)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", type=int, default=50, help="timed calls per backend")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--num-classes", type=int, help="class count; inferred from a (B, 4+nc, A) output")
    p.add_argument("--conf", type=float, default=0.25, help="score threshold for decoded boxes")
    p.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold")
    p.add_argument("--match-iou", type=float, default=0.5, help="IoU for two boxes to count as the same box")
    p.add_argument("--min-agreement", type=float, default=0.95,
                   help="minimum matched boxes / max(reference boxes, engine boxes)")
    p.add_argument("--min-mean-iou", type=float, default=0.9)
    p.add_argument("--max-score-diff", type=float, default=0.05)
    p.add_argument("--max-raw-diff", type=float, help="optional limit on the largest raw output difference")
    p.add_argument("--json", help="also write the report here")
    return p


# Inputs --------------------------------------------------------------------

def letterbox(image_bgr, height, width):
    """A BGR uint8 image as the runtime feeds it: (3, H, W) RGB float32 in 0..1 (edge.tta's letterbox)."""
    batch, _ = prepare_views(image_bgr, view_plan("none"), width, height)
    return batch[0]


def load_inputs(chw, images_dir=None, count=8, seed=0):
    """(N, C, H, W) float32 inputs: letterboxed images from ``images_dir``, else seeded uniform noise."""
    c, h, w = chw
    if images_dir is None:
        return np.random.RandomState(seed).uniform(0, 1, (count, c, h, w)).astype(np.float32)
    paths = list_images(images_dir)
    if not paths:
        raise EdgeError("no images (%s) in %s" % ("/".join(IMAGE_EXTENSIONS), images_dir))
    images = []
    for path in paths[:count]:
        try:
            images.append(letterbox(read_image(path), h, w))
        except FrameError as e:
            raise EdgeError("cannot use %s as a validation input: %s" % (path, e)) from e
    return np.stack(images)


def input_chw(engine, reference):
    """The (C, H, W) both models accept; dynamic dims of one are taken from the other."""
    dims = []
    for a, b in zip(engine.input_shape[1:], reference.input_shape[1:]):
        if a is not None and b is not None and a != b:
            raise EdgeError("engine input %s and ONNX input %s differ" % (engine.input_shape, reference.input_shape))
        dims.append(a if a is not None else b)
    if None in dims:
        raise EdgeError("both models have a dynamic input size %s; cannot choose one" % (engine.input_shape,))
    return tuple(dims)


# Comparison ----------------------------------------------------------------

def infer_num_classes(outputs, num_classes=None):
    """Class count from a (B, 4+nc, A) head output, or ``num_classes`` when given."""
    if num_classes is not None:
        return int(num_classes)
    if all(name in outputs for name in EFFICIENT_NMS_OUTPUTS):
        classes = np.asarray(outputs["det_classes"])
        return int(classes.max()) + 1 if classes.size else 1
    if len(outputs) == 1:
        (output,) = outputs.values()
        if output.ndim == 3 and output.shape[1] > 4:
            return int(output.shape[1]) - 4
    raise EdgeError("cannot infer the class count from outputs %s; pass --num-classes"
                    % {k: v.shape for k, v in outputs.items()})


def raw_differences(reference, candidate):
    """{output name: largest absolute difference}; both must have the same outputs and shapes."""
    if sorted(reference) != sorted(candidate):
        raise EdgeError("outputs differ: reference %s, engine %s" % (sorted(reference), sorted(candidate)))
    diffs = {}
    for name in reference:
        a, b = np.asarray(reference[name], np.float64), np.asarray(candidate[name], np.float64)
        if a.shape != b.shape:
            raise EdgeError("output %r has shape %s in the reference and %s in the engine" % (name, a.shape, b.shape))
        diffs[name] = float(np.abs(a - b).max()) if a.size else 0.0
    return diffs


def match_boxes(reference, candidate, iou_thr=0.5):
    """Greedy one-to-one matching of two Detections by IoU, within a class.

    Returns (ious, score_diffs) of matched pairs, then the counts of missing
    (reference boxes unmatched) and extra (candidate boxes unmatched) boxes.
    """
    iou = box_iou(reference.xyxy, candidate.xyxy)
    if iou.size:
        iou = np.where(reference.class_id[:, None] == candidate.class_id[None, :], iou, 0.0)
    ious, score_diffs = [], []
    used_ref, used_cand = set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = np.unravel_index(flat, iou.shape)
        if iou[i, j] < iou_thr:
            break
        if i in used_ref or j in used_cand:
            continue
        used_ref.add(i)
        used_cand.add(j)
        ious.append(float(iou[i, j]))
        score_diffs.append(abs(float(reference.score[i]) - float(candidate.score[j])))
    return (np.asarray(ious, np.float64), np.asarray(score_diffs, np.float64),
            len(reference) - len(used_ref), len(candidate) - len(used_cand))


def compare_detections(reference, candidate, iou_thr=0.5):
    """Box agreement over lists of per-image Detections (reference first)."""
    if len(reference) != len(candidate):
        raise EdgeError("%d reference images but %d engine images" % (len(reference), len(candidate)))
    ious, diffs, missing, extra = [], [], 0, 0
    for ref, cand in zip(reference, candidate):
        i, d, m, e = match_boxes(ref, cand, iou_thr)
        ious.append(i)
        diffs.append(d)
        missing += m
        extra += e
    ious, diffs = np.concatenate(ious), np.concatenate(diffs)
    ref_boxes, cand_boxes = sum(len(r) for r in reference), sum(len(c) for c in candidate)
    most = max(ref_boxes, cand_boxes)
    return {
        "images": len(reference), "reference_boxes": ref_boxes, "engine_boxes": cand_boxes,
        "matched": int(ious.size), "missing": missing, "extra": extra,
        "agreement": float(ious.size) / most if most else 1.0,
        "mean_iou": float(ious.mean()) if ious.size else (1.0 if not most else 0.0),
        "max_score_diff": float(diffs.max()) if diffs.size else 0.0,
        "mean_score_diff": float(diffs.mean()) if diffs.size else 0.0,
    }


def agreement_failures(report, min_agreement, min_mean_iou, max_score_diff, max_raw_diff=None):
    """Human-readable reasons the engine disagrees with its twin; empty when it passes."""
    boxes = report["boxes"]
    failures = []
    if boxes["agreement"] < min_agreement:
        failures.append("box agreement %.3f < %.3f (%d missing, %d extra of %d reference boxes)"
                        % (boxes["agreement"], min_agreement, boxes["missing"], boxes["extra"],
                           boxes["reference_boxes"]))
    if boxes["mean_iou"] < min_mean_iou:
        failures.append("mean IoU %.3f < %.3f" % (boxes["mean_iou"], min_mean_iou))
    if boxes["max_score_diff"] > max_score_diff:
        failures.append("max score difference %.4f > %.4f" % (boxes["max_score_diff"], max_score_diff))
    if max_raw_diff is not None:
        for name, diff in sorted(report["raw_max_abs_diff"].items()):
            if diff > max_raw_diff:
                failures.append("raw output %r differs by %.4g > %.4g" % (name, diff, max_raw_diff))
    return failures


def median_latency_s(backend, batch, runs=50, warmup=5):
    """Median wall time of ``backend.run(batch)`` over ``runs`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        backend.run(batch)
    times = []
    for _ in range(max(int(runs), 1)):
        start = time.perf_counter()
        backend.run(batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def compare_backends(engine, reference, inputs, num_classes=None, conf_thr=0.25, iou_thr=0.7, match_iou=0.5):
    """Raw and decoded agreement of ``engine`` with ``reference`` on the same (N, C, H, W) inputs."""
    ref_out = run_batched(reference, inputs)
    eng_out = run_batched(engine, inputs)
    nc = infer_num_classes(ref_out, num_classes)
    ref_dets = decode_outputs(ref_out, nc, conf_thr=conf_thr, iou_thr=iou_thr)
    eng_dets = decode_outputs(eng_out, nc, conf_thr=conf_thr, iou_thr=iou_thr)
    return {"num_classes": nc, "raw_max_abs_diff": raw_differences(ref_out, eng_out),
            "boxes": compare_detections(ref_dets, eng_dets, match_iou)}


# Environment ---------------------------------------------------------------

def parse_tegra_release(text):
    """'R32.7.1' from /etc/nv_tegra_release ("# R32 (release), REVISION: 7.1, ..."), else None."""
    match = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text or "")
    return "R%s.%s" % match.groups() if match else None


def parse_nvpmodel(text):
    """(mode name, mode id or None) from `nvpmodel -q` output ("NV Power Mode: MAXN" then "0"), else None."""
    match = re.search(r"NV Power Mode:\s*(\S+)(?:\s*\n\s*(\d+))?", text or "")
    if not match:
        return None
    return match.group(1), int(match.group(2)) if match.group(2) is not None else None


def jetson_clocks_state(cpu_root="/sys/devices/system/cpu"):
    """'on' when cpu0's minimum frequency is pinned to its maximum (what jetson_clocks does), 'off', or 'unknown'."""
    base = os.path.join(cpu_root, "cpu0", "cpufreq")
    try:
        with open(os.path.join(base, "scaling_min_freq")) as f:
            low = int(f.read().strip())
        with open(os.path.join(base, "scaling_max_freq")) as f:
            high = int(f.read().strip())
    except (IOError, OSError, ValueError):
        return "unknown"
    return "on" if low == high else "off"


def environment_facts(engine, release_path="/etc/nv_tegra_release", cpu_root="/sys/devices/system/cpu"):
    facts = {"tensorrt": getattr(engine, "trt_version", "unknown"), "python": sys.version.split()[0],
             "numpy": np.__version__, "l4t": None, "jetpack": None, "nvpmodel": None,
             "jetson_clocks": jetson_clocks_state(cpu_root)}
    try:
        with open(release_path) as f:
            facts["l4t"] = parse_tegra_release(f.read())
    except (IOError, OSError):
        pass  # not a Jetson, or not readable: reported as null
    facts["jetpack"] = JETPACK_BY_L4T.get(facts["l4t"])
    try:
        output = subprocess.check_output(["nvpmodel", "-q"], stderr=subprocess.STDOUT, timeout=10)
        facts["nvpmodel"] = parse_nvpmodel(output.decode("utf-8", "replace"))
    except (OSError, subprocess.SubprocessError):
        pass  # nvpmodel absent or refused: reported as null
    return facts


# Command -------------------------------------------------------------------

def run_validation(args):
    providers = args.onnx_providers.split(",")
    with open_backend(args.engine) as engine, \
            open_backend(args.onnx, kind="onnxruntime", providers=providers) as reference:
        inputs = load_inputs(input_chw(engine, reference), args.images, args.count, args.seed)
        report = compare_backends(engine, reference, inputs, args.num_classes, args.conf, args.iou, args.match_iou)
        latency = {}
        for label, backend in (("engine", engine), ("onnx", reference)):
            batch = inputs[:1]
            if backend.fixed_batch:
                batch = run_batch_of(inputs, backend.fixed_batch)
            latency[label] = {"batch": int(batch.shape[0]),
                              "median_latency_s": median_latency_s(backend, batch, args.runs, args.warmup)}
        report["latency"] = latency
        report["environment"] = environment_facts(engine)
        report["inputs"] = {"source": args.images or "random seed %d" % args.seed, "count": int(inputs.shape[0]),
                            "shape": list(inputs.shape[1:])}
    report["failures"] = agreement_failures(report, args.min_agreement, args.min_mean_iou, args.max_score_diff,
                                            args.max_raw_diff)
    return report


def run_batch_of(inputs, size):
    """The first ``size`` inputs, repeated when there are fewer."""
    repeats = -(-size // inputs.shape[0])
    return np.concatenate([inputs] * repeats)[:size]


def format_report(report):
    boxes = report["boxes"]
    lines = ["inputs: %(count)d x %(shape)s from %(source)s" % report["inputs"]]
    for name, diff in sorted(report["raw_max_abs_diff"].items()):
        lines.append("raw %s: max |engine - onnx| = %.4g" % (name, diff))
    lines.append("boxes: %(reference_boxes)d onnx, %(engine_boxes)d engine, %(matched)d matched, "
                 "%(missing)d missing, %(extra)d extra; agreement %(agreement).3f" % boxes)
    lines.append("matched boxes: mean IoU %(mean_iou).4f, score diff mean %(mean_score_diff).4f "
                 "max %(max_score_diff).4f" % boxes)
    for label, item in sorted(report["latency"].items()):
        lines.append("latency %s: %.2f ms median (batch %d)" % (label, item["median_latency_s"] * 1e3, item["batch"]))
    lines.append("environment: %s" % json.dumps(report["environment"], sort_keys=True))
    lines.extend("FAIL: %s" % f for f in report["failures"])
    lines.append("PASS" if not report["failures"] else "engine disagrees with its ONNX twin")
    return "\n".join(lines)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        report = run_validation(args)
    except EdgeError as e:
        sys.stderr.write("jetson_validate: %s\n" % e)
        return 2
    sys.stdout.write(format_report(report) + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, sort_keys=True)
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())

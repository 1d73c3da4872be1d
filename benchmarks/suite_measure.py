"""The measuring parts of `python -m benchmarks run`: accuracy, latency and energy per inference profile.

Each part calls the code that already owns the figure, so the suite reports what the trainer's
bundle stage and the single benchmarks report for the same bundle and images:

- accuracy: trainer.profile_accuracy.evaluate_profiles (edge.pipeline + edge.metrics, recall at
  each profile's operating thresholds), mAP50 / mAP50-95 by faster-coco-eval (trainer.coco_eval)
  on the same detections, the paired bootstrap of each richer profile against the cheaper one
  (trainer.profile_noise), and D-ECE (trainer.detection_ece) of every fused box matched at IoU 0.5
  (trainer.calibration_fit.matched_flags, the matching `trainer calibrate` fits on);
- latency: each profile through edge.profiles.run_profile, one frame at a time, as the device
  runs it (operating thresholds applied), with the backend's share of the frame;
- energy: trainer.bundle_energy.measure_here (edge.energy_measure's windows on edge.power's
  sampler, Wh/day for the deployment) after one idle window on the same meter, so each
  profile's energy per frame is given gross and net of idle;
- pipeline overhead: the time outside the backend calls against benchmarks.pipeline's targets;
- daemon (optional): benchmarks.daemon's whole-loop frames/s against the bare pipeline.
"""
import collections
import os
import shutil
import tempfile
import time

import numpy as np

from edge.metrics import pooled_curve
from edge.profiles import CASCADE, cascade_settings, profile_spec, run_profile

ECE_BINS = 10
MATCH_IOU = 0.5


def measure_accuracy(pipeline, items, profiles, progress=None):
    """{profile: figures} and {profile: curves/predictions for plots} over [(path, ground truth)]."""
    from trainer.profile_accuracy import evaluate_profiles, profile_figures

    bundle = pipeline.bundle
    results = evaluate_profiles(pipeline, items, profiles, progress)
    ground_truth = [gt for _, gt in items]
    figures, curves = profile_figures(results, ground_truth, bundle.num_classes), collections.OrderedDict()
    for profile, r in results.items():
        confidences, matched = reliability_inputs(r["predictions"], ground_truth)
        figures[profile].update(d_ece=d_ece(confidences, matched), map50_vs=figures[profile].get("map50_vs"))
        curves[profile] = {"by_category": category_curves(r["curves"], bundle), "confidences": confidences,
                           "matched": matched}
    return figures, curves


def category_curves(class_curves, bundle):
    """{"all" | category: pooled precision-recall curve} over the classes holding ground truth."""
    categories = {c.id: c.category for c in bundle.classes}
    present = [c for c in class_curves if c.num_gt]
    out = collections.OrderedDict([("all", pooled_curve(present))])
    for name in ("critical", "important", "general"):
        mine = [c for c in present if categories.get(c.class_id) == name]
        if mine:
            out[name] = pooled_curve(mine)
    return out


def reliability_inputs(predictions, ground_truth):
    """(confidences, matched flags) of every detection over the images."""
    from trainer.calibration_fit import matched_flags

    scores = [d.score for d in predictions] + [np.zeros(0, np.float32)]
    flags = [matched_flags(d, gt, MATCH_IOU) for d, gt in zip(predictions, ground_truth)] + [np.zeros(0, bool)]
    return np.concatenate(scores).astype(np.float64), np.concatenate(flags)


def d_ece(confidences, matched):
    from trainer.detection_ece import detection_ece

    return detection_ece(confidences, matched, ECE_BINS)


def latency_figures(latencies_s, inference_s=None):
    """p50 / p95 / mean (ms), frames per second and the backend's share of the time, from per-frame times."""
    times = np.asarray(latencies_s, np.float64)
    figures = {"frames": int(len(times)), "p50_ms": float(1000 * np.percentile(times, 50)),
               "p95_ms": float(1000 * np.percentile(times, 95)), "mean_ms": float(1000 * times.mean()),
               "fps": float(len(times) / times.sum()), "latencies_ms": [round(1000 * t, 3) for t in times]}
    figures["inference_share"] = (float(np.sum(inference_s) / times.sum()) if inference_s is not None
                                  and len(inference_s) == len(times) else None)
    return figures


def measure_latency(pipeline, frames, profiles, count, warmup=2, progress=None):
    """{profile: latency_figures} over `count` frames (cycling `frames`) per profile, after `warmup` frames."""
    settings = cascade_settings(pipeline.bundle)
    out = collections.OrderedDict()
    for profile in profiles:
        for i in range(warmup):
            run_profile(pipeline, frames[i % len(frames)], profile, settings)
        latencies, inference = [], []
        for i in (progress(range(count), "latency " + profile) if progress else range(count)):
            start = time.perf_counter()
            run_profile(pipeline, frames[i % len(frames)], profile, settings)
            latencies.append(time.perf_counter() - start)
            # The pipeline's timing covers its last call only: the cascade's second stage, if any.
            inference.append(pipeline.last_timing.inference_s)
        out[profile] = latency_figures(latencies, None if profile == CASCADE else inference)
        if profile != CASCADE:
            out[profile].update(other_share_check(out[profile]["inference_share"],
                                                  len(profile_spec(pipeline.bundle, profile)[0])))
    return out


def other_share_check(inference_share, models):
    """benchmarks.pipeline's target on the time outside the backend calls, where it has one for this many models."""
    from benchmarks.pipeline import TARGET_SHARE

    target = TARGET_SHARE.get(models)
    other = 1.0 - inference_share
    return {"other_share": other, "other_share_target": target,
            "other_share_ok": None if target is None else bool(other <= target)}


def measure_daemon(bundle_path, paths, frames, profile, meter, backend):
    """benchmarks.daemon's comparison (one repeat): frames/s of the whole daemon loop against the bare pipeline."""
    from benchmarks import daemon

    root = tempfile.mkdtemp(prefix="reefwatch-suite-daemon-")
    try:
        for i, path in enumerate(paths):  # the split's images, whatever folders they live in
            os.symlink(os.path.abspath(path), os.path.join(root, "%06d%s" % (i, os.path.splitext(path)[1])))
        args = daemon.build_parser().parse_args([
            "--bundle", bundle_path, "--images", root, "--frames", str(frames), "--profile", profile, "--repeats", "1",
            "--meter", meter, "--backend", backend])
        raw_fps, daemon_fps, _, summary = daemon.run_repeats(args)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ratio = daemon_fps[0] / raw_fps[0]
    return {"profile": profile, "frames": frames, "raw_fps": raw_fps[0], "daemon_fps": daemon_fps[0], "ratio": ratio,
            "target_ratio": daemon.TARGET_RATIO, "ok": bool(ratio >= daemon.TARGET_RATIO),
            "processed": summary["processed"]}


def measure_energy(pipeline, frames, profiles, count, meter, deployment, idle_s, progress=None):
    """trainer.bundle_energy.measure_here's figures plus the idle power and each profile's net J/frame."""
    from edge.power.sampler import PowerSampler
    from trainer.bundle_energy import SAMPLER_INTERVAL_S, measure_here, open_here_meter

    opened, skipped = open_here_meter(meter, deployment.idle_power_w)
    try:
        idle_w = None
        if idle_s > 0:
            with PowerSampler(opened, SAMPLER_INTERVAL_S) as sampler:
                idle_w = sampler.measure_idle(idle_s)
        energy = measure_here(pipeline, frames, profiles, count, opened, deployment, progress)
    finally:
        if isinstance(meter, str):
            opened.close()
    energy["skipped"] = [{"meter": n, "reason": r} for n, r in skipped]
    energy["idle_power_w"] = idle_w
    energy["deployment"] = deployment.to_dict()
    for entry in energy["profiles"].values():
        entry["net_energy_per_frame_j"] = net_energy_j(entry["energy_per_frame_j"], entry["mean_power_w"], idle_w)
    return energy


def net_energy_j(gross_j, mean_power_w, idle_w):
    """Energy per frame above idle: the window's mean power less idle, over the same time per frame."""
    if idle_w is None or not mean_power_w:
        return None
    return float(gross_j * (mean_power_w - idle_w) / mean_power_w)

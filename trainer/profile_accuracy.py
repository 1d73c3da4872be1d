"""Accuracy of each inference profile on labelled images, as the device computes it (edge.pipeline).

Moved here from benchmarks/accuracy.py so the trainer's bundle stage and the benchmark score
profiles the same way (benchmarks/accuracy.py imports it back; the trainer never imports
benchmarks). mAP50 is taken over every fused box (the pipeline with all_scores, at the
bundle's decode threshold); recall per category is what the device reports: the boxes at or
above each profile's per-class operating thresholds (for the cascade, those of the stage
that produced the frame's boxes).
"""
import statistics
import time

import numpy as np

from edge.images import read_image
from edge.metrics import evaluate, pooled_curve
from edge.pipeline import at_operating_point
from edge.profiles import cascade_settings, run_profile


def evaluate_profiles(pipeline, items, profiles, progress=None):
    """{profile: edge.metrics.evaluate result + recall_by_category at the operating point, frame times,
    pooled / critical curves, escalated_share (cascade) and the predictions} over [(path, ground truth)].

    `progress(iterable, desc)` wraps the frame loop of each profile (e.g. tqdm).
    """
    bundle = pipeline.bundle
    categories = {c.id: c.category for c in bundle.classes}
    frames = [read_image(path) for path, _ in items]
    ground_truth = [gt for _, gt in items]
    cascade = cascade_settings(bundle)  # the daemon's defaults: band 0.25-0.6, critical species >= 0.3
    results = {}
    for profile in profiles:
        predictions, reported, times, escalated = [], [], [], 0
        for frame in (progress(frames, profile) if progress else frames):
            start = time.perf_counter()
            run = run_profile(pipeline, frame, profile, cascade, all_scores=True)
            times.append(time.perf_counter() - start)
            predictions.append(run.detections)
            stage = bundle.profile_settings(run.stages[-1].profile)
            reported.append(at_operating_point(run.detections, stage))
            escalated += bool(run.escalated)
        result = evaluate(predictions, ground_truth, bundle.num_classes, categories)
        at_device = evaluate(reported, ground_truth, bundle.num_classes, categories, score_thr=0.0)
        result["recall_by_category"] = at_device["recall_by_category"]
        result["score_thr"] = "operating thresholds of the profile"
        result["reported_boxes"] = int(sum(len(r) for r in reported))
        result["frame_ms"] = 1000.0 * statistics.median(times) if times else float("nan")
        result["mean_frame_ms"] = 1000.0 * float(np.mean(times)) if times else float("nan")
        if profile == "cascade":
            result["escalated_share"] = escalated / float(max(len(frames), 1))
        critical = [c for c in result["curves"] if c.num_gt and categories.get(c.class_id) == "critical"]
        result["pooled"] = pooled_curve([c for c in result["curves"] if c.num_gt])
        result["critical"] = pooled_curve(critical) if critical else None
        result["predictions"] = predictions
        results[profile] = result
    return results


def profile_figures(results, ground_truth, num_classes):
    """{profile: the figures a bundle and the benchmark suite report} from evaluate_profiles' results:
    mAP50 (edge.metrics), mAP50-95 and mAP50 (faster-coco-eval), AP50 per class, recall per category and
    critical recall at the operating points, counts, frame time, and (trainer.profile_noise) each richer
    profile's mAP50 against the cheaper one before it.
    """
    from trainer.coco_eval import coco_map
    from trainer.profile_noise import ladder_checks

    ladder = ladder_checks({p: r["predictions"] for p, r in results.items()}, ground_truth, num_classes)
    figures = {}
    for profile, r in results.items():
        coco = coco_map(r["predictions"], ground_truth, num_classes)
        figures[profile] = {
            "map50": r["map50"], "map50_95": coco["map50_95"], "coco_map50": coco["map50"], "ap50": r["ap50"],
            "recall_by_category": r["recall_by_category"], "critical_recall": r["recall_by_category"].get("critical"),
            "images": r["images"], "gt_boxes": r["gt_boxes"], "reported_boxes": r["reported_boxes"],
            "frame_ms": r["frame_ms"], "escalated_share": r.get("escalated_share")}
        if profile in ladder:
            figures[profile]["map50_vs"] = ladder[profile]   # against the cheaper profile before it
    return figures

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
from edge.profiles import CASCADE, CASCADE_STAGES, cascade_settings, run_profile


class ReplayPipeline(object):
    """What run_profile asks of a Pipeline, answered from detections already computed for the current frame.

    The cascade's stages are the single and ensemble_full profiles, the same pipeline calls on the same
    frame, so their detections (all_scores) can be replayed through run_profile instead of run again.
    """

    def __init__(self, bundle, per_profile):
        self.bundle = bundle
        self.per_profile = per_profile    # {profile: [Detections per image]}
        self.index = 0

    def detect(self, frame, models=None, plan=None, profile=None, all_scores=False):
        found = self.per_profile[profile][self.index]
        return found if all_scores else at_operating_point(found, self.bundle.profile_settings(profile))


def evaluate_profiles(pipeline, items, profiles, progress=None):
    """{profile: edge.metrics.evaluate result + recall and precision by category at the operating point, frame times,
    pooled / critical curves, escalated_share (cascade) and the predictions} over [(path, ground truth)].

    `progress(iterable, desc)` wraps the frame loop of each profile (e.g. tqdm). Where both of the
    cascade's stages are among the profiles, the cascade replays their detections (ReplayPipeline) and
    its frame time is the sum of its stages' measured times on that frame.
    """
    bundle = pipeline.bundle
    frames = [read_image(path) for path, _ in items]
    cascade = cascade_settings(bundle)  # the daemon's defaults: band 0.25-0.6, critical species >= 0.3
    runs = {}   # profile: ([run per frame], [seconds per frame])
    replayable = all(p in profiles for p in CASCADE_STAGES)
    for profile in sorted(profiles, key=lambda p: p == CASCADE and replayable):  # the cascade after its stages
        source = pipeline
        if profile == CASCADE and replayable:
            source = ReplayPipeline(bundle, {p: [r.detections for r in runs[p][0]] for p in CASCADE_STAGES})
        done, times = [], []
        for index, frame in enumerate(progress(frames, profile) if progress else frames):
            if source is pipeline:
                start = time.perf_counter()
                done.append(run_profile(pipeline, frame, profile, cascade, all_scores=True))
                times.append(time.perf_counter() - start)
                continue
            source.index = index
            run = run_profile(source, frame, profile, cascade, all_scores=True,
                              measure=lambda p, call: (call(), None, runs[p][1][source.index]))
            done.append(run)
            times.append(sum(stage.latency_s for stage in run.stages))
        runs[profile] = (done, times)
    return {profile: _figures(bundle, runs[profile][0], runs[profile][1], [gt for _, gt in items], profile)
            for profile in profiles}


def _figures(bundle, done, times, ground_truth, profile):
    categories = {c.id: c.category for c in bundle.classes}
    predictions = [run.detections for run in done]
    reported = [at_operating_point(run.detections, bundle.profile_settings(run.stages[-1].profile)) for run in done]
    result = evaluate(predictions, ground_truth, bundle.num_classes, categories)
    at_device = evaluate(reported, ground_truth, bundle.num_classes, categories, score_thr=0.0)
    result["recall_by_category"] = at_device["recall_by_category"]
    result["precision_by_category"] = at_device["precision_by_category"]
    result["score_thr"] = "operating thresholds of the profile"
    result["reported_boxes"] = int(sum(len(r) for r in reported))
    result["frame_ms"] = 1000.0 * statistics.median(times) if times else float("nan")
    result["mean_frame_ms"] = 1000.0 * float(np.mean(times)) if times else float("nan")
    if profile == CASCADE:
        result["escalated_share"] = sum(bool(run.escalated) for run in done) / float(max(len(done), 1))
    critical = [c for c in result["curves"] if c.num_gt and categories.get(c.class_id) == "critical"]
    result["pooled"] = pooled_curve([c for c in result["curves"] if c.num_gt])
    result["critical"] = pooled_curve(critical) if critical else None
    result["predictions"] = predictions
    return result


def profile_figures(results, ground_truth, num_classes):
    """{profile: the figures a bundle and the benchmark suite report} from evaluate_profiles' results:
    mAP50 (edge.metrics), mAP50-95 and mAP50 (faster-coco-eval), AP50 per class, recall and precision per
    category and critical recall and precision at the operating points, counts, frame time, and (trainer.profile_noise) each richer
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
            "precision_by_category": r["precision_by_category"],
            "critical_precision": r["precision_by_category"].get("critical"),
            "images": r["images"], "gt_boxes": r["gt_boxes"], "reported_boxes": r["reported_boxes"],
            "frame_ms": r["frame_ms"], "escalated_share": r.get("escalated_share")}
        if profile in ladder:
            figures[profile]["map50_vs"] = ladder[profile]   # against the cheaper profile before it
    return figures

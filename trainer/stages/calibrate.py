"""Week 6: temperatures and operating thresholds per inference profile (`trainer calibrate`).

The exported variants (export_dir/export.json: name, onnx, threshold, imgsz)
run as the device runs them: an in-memory bundle (edge.bundle_build.
bundle_from_models) with each variant's operating threshold, the full view
plan and edge's fusion, decoding at `calibration.decode_thr`, through
edge.profiles.run_profile with all_scores. On the calibration split (never
test; at most `calibration.images` images) every fused detection is matched
to the ground truth by edge.metrics (greedy by score, IoU >= iou_thr, one
detection per box). First each model's fusion weight: its mAP50 alone (one
view) relative to the best model's, to the power `fusion_weight_power`, so
that a variant that trails the others counts less in weighted box fusion
(fit_fusion_weights). Then per profile (trainer.calibration_fit):

- a temperature per class minimizing binary log loss (rare classes pooled);
- operating thresholds on the calibrated scores (critical: recall target
  under a precision floor, others: max F1), with precision and recall at the
  chosen points;
- D-ECE (trainer.detection_ece) and log loss before/after per category; AP50
  per class before/after, which must agree (a temperature is monotone);
- a reliability diagram PNG (before | after).

The cascade has no settings of its own (edge.bundle's CALIBRATED_PROFILES):
it runs the single and ensemble_full stages with theirs, so its figures are
measured by replaying those stages' detections through run_profile, before
(T = 1, default thresholds) and after calibration.

Output under out_dir: calibration.json (`profiles` feeds edge.bundle.
make_manifest's temperatures/thresholds), report.md, reliability_<profile>.png.
A finished calibration.json with the same inputs (model checksums, split
images and labels, settings) is reused unless resume is off.
"""
import collections
import dataclasses
import hashlib
import json
import logging
import os

import numpy as np

from edge.bundle import CALIBRATED_PROFILES, Bundle, ProfileSettings, default_profiles, sha256_of
from edge.calibration import calibrate
from edge.errors import ConfigError as EdgeConfigError
from edge.profiles import CASCADE, CASCADE_STAGES, PROFILES, cascade_settings, check_profile, run_profile
from trainer import calibration_fit as fit
from trainer.errors import ConfigError, DataError, TrainerError
from trainer.stages.calibrate_report import cell, write_report
from trainer.stages.training import categories_for, data_names, read_data_yaml, write_json

logger = logging.getLogger(__name__)
DEPLOYED_PLAN = "full"       # the view plan a bundle ships by default (edge.bundle_build.build_bundle)
AP_TOLERANCE = 1e-4          # float32 rounding can tie two calibrated scores; nothing else may move AP


@dataclasses.dataclass(frozen=True)
class CalibrationResult:
    out_dir: str
    path: str            # calibration.json
    profiles: dict       # {profile: {"temperatures": [...], "thresholds": [...]}}, CALIBRATED_PROFILES only
    report_path: str
    resumed: bool


def run_calibrate(config, export_dir, data, out_dir, resume=True, progress=True):
    """Fit temperatures and thresholds per profile on the calibration split; a CalibrationResult."""
    section = config.calibration
    profiles = requested_profiles(section.profiles)
    split = check_split(section.split)
    export_dir, data, out_dir = (os.path.abspath(str(p)) for p in (export_dir, data, out_dir))
    variants = read_export(export_dir)
    data_cfg = read_data_yaml(data)
    names = data_names(data_cfg)
    categories = categories_for(data_cfg, len(names))
    items = calibration_items(data, split, section.images)
    inputs = input_record(variants, items, split, section)
    path = os.path.join(out_dir, "calibration.json")
    previous = finished_calibration(path, inputs) if resume else None
    if previous is not None:
        logger.info("calibration in %s has the same inputs; reusing it", out_dir)
        return _result(out_dir, previous, resumed=True)
    os.makedirs(out_dir, exist_ok=True)
    bundle = deployed_bundle(variants, names, categories, section.decode_thr)
    ground_truth = [gt for _, gt in items]
    alone = detect_alone(bundle, items, progress)
    model_map50 = models_map50(alone, ground_truth, bundle.num_classes)
    bundle = with_fusion_weights(bundle, fusion_weights(model_map50, section.fusion_weight_power))
    raw = run_stages(bundle, items, stages_needed(profiles), progress, alone)
    fitted = {p: fit_profile(raw[p], ground_truth, bundle, p, section) for p in raw}
    calibrated = with_profiles(bundle, {p: ProfileSettings(np.asarray(f["temperatures"]), np.asarray(f["thresholds"]))
                                        for p, f in fitted.items()})
    static = list(raw)  # the cascade's stages too: the device needs their settings to run it
    record = {"method": "temperature", "split": split, "images": len(items), "tta": DEPLOYED_PLAN,
              "fusion_weights": {m.name: m.fusion_weight for m in bundle.models}, "model_map50": model_map50,
              "classes": [{"id": c.id, "name": c.name, "category": c.category} for c in bundle.classes],
              "profiles": {p: {k: fitted[p][k] for k in ("temperatures", "thresholds", "figures")} for p in static},
              "d_ece": {p: fitted[p]["figures"]["d_ece"] for p in static},
              "log_loss": {p: fitted[p]["figures"]["log_loss"] for p in static}, "inputs": inputs}
    states = {p: fitted[p]["states"] for p in static}
    if CASCADE in profiles:
        record["cascade"], states[CASCADE] = cascade_figures(raw, fitted, bundle, calibrated, ground_truth, section)
        record["d_ece"][CASCADE], record["log_loss"][CASCADE] = record["cascade"]["d_ece"], record["cascade"]["log_loss"]
    record["reliability"] = {p: plot_profile(out_dir, p, s, section.ece_bins) for p, s in states.items()}
    write_report(os.path.join(out_dir, "report.md"), record)
    write_json(path, json_ready(record))
    return _result(out_dir, record, resumed=False)


def _result(out_dir, record, resumed):
    profiles = {p: {"temperatures": v["temperatures"], "thresholds": v["thresholds"]}
                for p, v in record["profiles"].items()}
    return CalibrationResult(out_dir, os.path.join(out_dir, "calibration.json"), profiles,
                             os.path.join(out_dir, "report.md"), resumed)


# ----------------------------------------------------------------------------------------
# Inputs


def requested_profiles(text):
    """Profile names from `calibration.profiles` ('single,ensemble,...'), each checked, in escalation order."""
    wanted = [p.strip() for p in str(text).split(",") if p.strip()]
    if not wanted:
        raise ConfigError("calibration.profiles is empty; expected some of %s" % ", ".join(PROFILES))
    for p in wanted:
        try:
            check_profile(p)
        except EdgeConfigError as e:
            raise ConfigError("calibration.profiles: %s" % e) from e
    return [p for p in PROFILES if p in wanted]


def stages_needed(profiles):
    """The single-stage profiles to run: those asked for and, for the cascade, both of its stages."""
    needed = set(p for p in profiles if p != CASCADE) | (set(CASCADE_STAGES) if CASCADE in profiles else set())
    return [p for p in PROFILES if p in needed]


def check_split(split):
    if split == "test":
        raise ConfigError("calibration.split is 'test': temperatures and thresholds fitted on the test split would "
                          "make its figures meaningless; use val or a calibration split")
    return split


def read_export(export_dir):
    """The variants of export_dir/export.json with their onnx paths resolved, present and matching their sha256."""
    from trainer.export_record import read_export_variants

    return read_export_variants(export_dir)


def calibration_items(data, split, limit):
    from trainer.stages.device_eval import load_ground_truth

    items = load_ground_truth(data, split, limit)
    if not items:
        raise DataError("%s: the %r split has no images to calibrate on" % (data, split))
    return items


def input_record(variants, items, split, section):
    """What a finished calibration depends on: the models' checksums, the images and labels, the settings."""
    from trainer.data.yolo_dataset import label_path_for

    labels = hashlib.sha256()
    for image, _ in items:
        label = label_path_for(image)
        labels.update(image.encode("utf-8") + b"\0")
        if os.path.exists(label):
            with open(label, "rb") as fh:
                labels.update(fh.read())
    return {"models": [{"name": v["name"], "sha256": sha256_of(v["onnx"]), "threshold": v["threshold"]}
                       for v in variants],
            "split": split, "images": [image for image, _ in items], "labels_sha256": labels.hexdigest(),
            "settings": dataclasses.asdict(section), "plan": DEPLOYED_PLAN}


def finished_calibration(path, inputs):
    """The stored calibration.json when its inputs equal `inputs`, else None."""
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        try:
            record = json.load(fh)
        except ValueError:
            return None
    same = record.get("inputs") == json.loads(json.dumps(inputs))
    return record if same and os.path.exists(os.path.join(os.path.dirname(path), "report.md")) else None


# ----------------------------------------------------------------------------------------
# The deployed pipeline


def deployed_bundle(variants, names, categories, decode_thr):
    """An in-memory Bundle over the variants at their operating thresholds, the deployed plan, T = 1."""
    from edge.bundle_build import bundle_from_models

    full = {c: categories.get(c, "general") for c in range(len(names))}
    base = bundle_from_models([(v["name"], v["onnx"]) for v in variants], names, imgsz=variants[0].get("imgsz"),
                              plan=DEPLOYED_PLAN, categories=full, decode_thr=decode_thr)
    models = [m._replace(operating_thr=v["threshold"]) for m, v in zip(base.models, variants)]
    return with_profiles(Bundle(base.root, base.manifest, models, base.classes, base.temperatures, base.plan,
                                base.fusion), default_profiles(models, len(names)))


def detect_alone(bundle, items, progress=True):
    """[{model: Detections} per image]: each model alone on the original view, through the device's pipeline
    (Pipeline.detect_per_model): what the fusion weights are fitted on, and the single and ensemble
    profiles fuse (run_stages)."""
    from tqdm import tqdm

    from edge.images import read_image
    from edge.pipeline import Pipeline

    with Pipeline.open(bundle, backend="onnxruntime") as pipeline:
        return [pipeline.detect_per_model(read_image(path))
                for path, _ in tqdm(items, desc="calibrate: each model alone", disable=not progress)]


def models_map50(alone, ground_truth, num_classes):
    """{model: mAP50 of the model alone} from detect_alone's detections."""
    from edge.metrics import evaluate

    names = list(alone[0]) if alone else []
    return collections.OrderedDict((name, float(evaluate([found[name] for found in alone], ground_truth,
                                                         num_classes)["map50"])) for name in names)


def fusion_weights(model_map50, power):
    """{model: WBF weight}: (its mAP50 / the best model's) ** power; equal where nothing scored or power is 0.

    Weighted box fusion averages boxes and scores with these weights, so a variant that
    trails the others moves the fused box and score less (on the demo and aquarium sets,
    power 2 raised the ensemble profiles' mAP50 by up to 0.01 over equal weights).
    """
    best = max([v for v in model_map50.values() if v == v] or [0.0])
    if best <= 0.0 or power == 0:
        return collections.OrderedDict((name, 1.0) for name in model_map50)
    return collections.OrderedDict((name, (max(v if v == v else 0.0, 0.0) / best) ** power)
                                   for name, v in model_map50.items())


def with_fusion_weights(bundle, weights):
    """The same bundle with each model's fusion_weight from {model: weight}; a weight of 0 is kept above 0
    (WBF needs every list to count) at 1e-3."""
    models = [m._replace(fusion_weight=max(float(weights.get(m.name, m.fusion_weight)), 1e-3)) for m in bundle.models]
    return Bundle(bundle.root, bundle.manifest, models, bundle.classes, bundle.temperatures, bundle.plan,
                  bundle.fusion, bundle.profiles, bundle.deployment)


def with_profiles(bundle, settings):
    """The same bundle with some profiles' ProfileSettings replaced."""
    profiles = dict(bundle.profiles)
    profiles.update(settings)
    return Bundle(bundle.root, bundle.manifest, bundle.models, bundle.classes, bundle.temperatures, bundle.plan,
                  bundle.fusion, profiles, bundle.deployment)


def run_stages(bundle, items, profiles, progress=True, alone=None):
    """{profile: [Detections per image]}: every fused box (all_scores) of each single-stage profile, T = 1.

    With `alone` (detect_alone's detections of the same items), the profiles on the original view only
    (single, ensemble) fuse those instead of running the models again: the same calls on the same frames.
    """
    from tqdm import tqdm

    from edge.images import read_image
    from edge.pipeline import Pipeline
    from edge.profiles import profile_spec

    raw = {p: [] for p in profiles}
    replayed = [p for p in profiles if alone is not None and profile_spec(bundle, p)[1] == "none"]
    with Pipeline.open(bundle, backend="onnxruntime") as pipeline:
        for i, (path, _) in enumerate(tqdm(items, desc="calibrate: %s" % ", ".join(profiles), disable=not progress)):
            frame = read_image(path)
            for p in profiles:
                if p in replayed:
                    models = profile_spec(bundle, p)[0]
                    found = collections.OrderedDict((m, alone[i][m]) for m in models)
                    raw[p].append(pipeline.fuse_models(found, (frame.shape[1], frame.shape[0]), p))
                else:
                    raw[p].append(run_profile(pipeline, frame, p, all_scores=True).detections)
    return raw


# ----------------------------------------------------------------------------------------
# Fitting and figures


def fit_profile(detections, ground_truth, bundle, profile, section):
    """Temperatures, thresholds and figures of one single-stage profile from its raw detections."""
    categories = {c.id: c.category for c in bundle.classes}
    matched = np.concatenate([fit.matched_flags(d, gt, section.iou_thr) for d, gt in zip(detections, ground_truth)]
                             + [np.zeros(0, bool)])
    scores, class_id = _pooled(detections)
    temps = fit.fit_class_temperatures(scores, matched, class_id, bundle.num_classes, section.min_matches)
    calibrated = [calibrate(d, temps.temperatures) for d in detections]
    before = fit.curves_of(detections, ground_truth, bundle.num_classes, section.iou_thr)
    after = fit.curves_of(calibrated, ground_truth, bundle.num_classes, section.iou_thr)
    ap = check_ap_unchanged(before, after, profile)
    defaults = bundle.profile_settings(profile).thresholds
    points = fit.choose_thresholds(after, categories, section.critical_recall_target, defaults,
                                   section.critical_min_precision)
    calibrated_scores = _pooled(calibrated)[0]
    d_ece, loss = fit.calibration_change((scores, matched, class_id, categories),
                                         (calibrated_scores, matched, class_id, categories), section.ece_bins)
    per_class = [{"id": c.id, "name": c.name, "category": c.category, "temperature": temps.temperatures[c.id],
                  "matches": temps.matches[c.id], "detections": temps.detections[c.id],
                  "pooled": c.id in temps.pooled, "threshold": points[c.id].threshold, "rule": points[c.id].rule,
                  "precision": points[c.id].precision, "recall": points[c.id].recall, "gt": points[c.id].num_gt,
                  "ap50_before": ap[c.id][0], "ap50_after": ap[c.id][1]} for c in bundle.classes]
    figures = {"d_ece": d_ece, "log_loss": loss, "per_class": per_class,
               "by_category": fit.category_points(points, categories), "pooled_temperature": temps.pooled_temperature,
               "map50_before": _mean_ap(before), "map50_after": _mean_ap(after),
               "ap50_max_change": max([abs(b - a) for b, a in ap if b == b] or [0.0])}
    return {"temperatures": temps.temperatures, "thresholds": [p.threshold for p in points], "figures": figures,
            "states": {"before": (scores, matched), "after": (calibrated_scores, matched)}}


def _pooled(detections):
    scores = np.concatenate([d.score for d in detections] + [np.zeros(0, np.float32)])
    return scores, np.concatenate([d.class_id for d in detections] + [np.zeros(0, np.int32)])


def _mean_ap(curves):
    present = [c.ap50 for c in curves if c.num_gt]
    return float(np.mean(present)) if present else None


def check_ap_unchanged(before, after, profile):
    """[(AP50 before, after)] per class; TrainerError if a temperature moved any class's AP."""
    pairs = [(float(b.ap50), float(a.ap50)) for b, a in zip(before, after)]
    for c, (b, a) in enumerate(pairs):
        if b == b and abs(a - b) > AP_TOLERANCE:
            raise TrainerError("profile %s: AP50 of class %d moved from %.6f to %.6f under its temperature; a "
                               "temperature is monotone and must not change AP (a scoring bug)" % (profile, c, b, a))
    return pairs


def cascade_predictions(bundle, per_profile):
    """(every box of the stage that answered, what the device reports) per image, through run_profile."""
    from edge.pipeline import at_operating_point

    from trainer.profile_accuracy import ReplayPipeline

    replay = ReplayPipeline(bundle, per_profile)
    settings = cascade_settings(bundle)   # the daemon's defaults, as benchmarks.accuracy scores the cascade
    predictions, reported, escalated = [], [], 0
    for index in range(len(per_profile[CASCADE_STAGES[0]])):
        replay.index = index
        run = run_profile(replay, None, CASCADE, settings, all_scores=True)
        predictions.append(run.detections)
        reported.append(at_operating_point(run.detections, bundle.profile_settings(run.stages[-1].profile)))
        escalated += bool(run.escalated)
    return predictions, reported, escalated


def cascade_figures(raw, fitted, bundle, calibrated_bundle, ground_truth, section):
    """(figures, {state: (scores, matched)}) of the cascade before (T = 1, default thresholds) and after."""
    categories = {c.id: c.category for c in bundle.classes}
    after = {p: [calibrate(d, fitted[p]["temperatures"]) for d in raw[p]] for p in CASCADE_STAGES}
    figures, states, inputs = {"stages": list(CASCADE_STAGES)}, {}, {}
    for state, b, dets in (("before", bundle, raw), ("after", calibrated_bundle, after)):
        predictions, reported, escalated = cascade_predictions(b, dets)
        matched = np.concatenate([fit.matched_flags(d, gt, section.iou_thr) for d, gt in zip(predictions, ground_truth)]
                                 + [np.zeros(0, bool)])
        scores, class_id = _pooled(predictions)
        states[state], inputs[state] = (scores, matched), (scores, matched, class_id, categories)
        curves = fit.curves_of(reported, ground_truth, bundle.num_classes, section.iou_thr)
        figures[state] = {"escalated_share": escalated / float(len(ground_truth)),
                          "by_category": fit.category_points([fit.point_at(c, 0.0, "stage") for c in curves],
                                                             categories),
                          "map50": _mean_ap(fit.curves_of(predictions, ground_truth, bundle.num_classes,
                                                          section.iou_thr))}
    figures["d_ece"], figures["log_loss"] = fit.calibration_change(inputs["before"], inputs["after"], section.ece_bins)
    return figures, states


def plot_profile(out_dir, profile, states, bins):
    from trainer.reliability_plot import plot_reliability

    name = "reliability_%s.png" % profile
    plot_reliability(os.path.join(out_dir, name), [(state, s, m) for state, (s, m) in states.items()], bins,
                     "%s: every fused detection above the decode threshold" % profile)
    return name


def json_ready(value):
    """NaN and numpy values as JSON can hold them (NaN -> null)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


# ----------------------------------------------------------------------------------------
# CLI glue: trainer.cli COMMANDS["calibrate"] = (add_arguments, run_command)


def add_arguments(parser):
    from trainer.cli import existing_file, existing_folder, output_folder

    parser.add_argument("--export", required=True, type=existing_folder("the `trainer export` output folder"),
                        help="the export folder (export.json and the variants' ONNX files)")
    parser.add_argument("--data", required=True, type=existing_file("a dataset's data.yaml"), help="dataset data.yaml")
    parser.add_argument("--out", required=True, type=output_folder,
                        help="output folder: calibration.json, report.md, reliability PNGs")
    parser.add_argument("--images", dest="calibration.images", type=int, metavar="N",
                        help="at most N images of the calibration split (default: calibration.images)")
    parser.add_argument("--no-resume", action="store_true", help="fit again even when the inputs are unchanged")


def run_command(config, args):
    """Temperatures and operating thresholds per inference profile, fitted through the device's pipeline."""
    from edge.console import printable

    result = run_calibrate(config, args.export, args.data, args.out, resume=not args.no_resume)
    with open(result.path) as fh:
        record = json.load(fh)
    for p, d in record["d_ece"].items():
        print(printable("calibrate %s: D-ECE %s -> %s, log loss %s -> %s" % (
            p, cell(d["before"].get("overall")), cell(d["after"].get("overall")),
            cell(record["log_loss"][p]["before"].get("overall")), cell(record["log_loss"][p]["after"].get("overall")))))
    print(printable("calibrate: %s%s; report %s" % (result.path, " (reused)" if result.resumed else "",
                                                    result.report_path)))
    return result

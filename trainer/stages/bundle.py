"""Week 6: `trainer bundle`, the edge bundle with its measured figures, behind the budget gate.

Inputs: the export stage's folder (export.json + <variant>.onnx), the calibrate stage's folder
(calibration.json: temperatures and operating thresholds per profile) and the dataset's
data.yaml (classes, categories, the validation split). The bundle is built by edge's own
bundle code (edge.bundle_build.build_bundle) into a staging folder inside `out_dir`, then:

- accuracy per profile on the validation split, through edge.pipeline exactly as the device
  runs it (trainer.profile_accuracy): mAP50 (edge.metrics), mAP50-95 (faster-coco-eval on the
  same detections, trainer.coco_eval), recall per category and critical recall at each
  profile's operating thresholds;
- energy per profile (trainer.bundle_energy): J/frame measured on this machine through
  edge.power ("estimated" where the meter is an estimate) and, for a jetson-nano target, the
  device table's estimate; Wh/day for config.bundle's deployment profile;
- the default profile: config.bundle.default_profile, else the best mAP50 whose Wh/day (on the
  target: the device table for jetson-nano) fits the budget and whose frames fit the day;
- the gate (trainer.gate) on the default profile's critical recall, mAP50 and Wh/day.

A failing gate raises TrainerError naming each figure, its value and its floor, and nothing is
written; with force=True the bundle ships with manifest `gate` {passed: false, failures,
forced: true}, which `edge bundle verify` and the daemon warn about. Output:

    out_dir/bundle/     the verified bundle (manifest.json, models/)
    out_dir/report.md   accuracy per profile, energy table, verdict
    out_dir/bundle.json the same figures as JSON (for run-all's stage history)
"""
import dataclasses
import json
import logging
import os
import shutil
import tempfile

from edge.bundle import CALIBRATED_PROFILES, write_bundle
from edge.profiles import PROFILES
from trainer import gate
from trainer.errors import TrainerError

logger = logging.getLogger(__name__)
CALIBRATION_FILE = "calibration.json"
BUNDLE_DIR, REPORT, SUMMARY = "bundle", "report.md", "bundle.json"
SPLIT = "val"


@dataclasses.dataclass(frozen=True)
class BundleResult:
    bundle_dir: str
    verdict: dict          # {"passed", "failures", "checks", "profile", "forced"}
    accuracy: dict         # {profile: figures}
    energy: dict           # {"here": ..., "device": ... or None, "deployment": ..., "budget_source"}
    default_profile: str
    report: str


def _read_json(folder, name, stage):
    path = os.path.join(folder, name)
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError as e:
        raise TrainerError("%s has no %s; run `trainer %s` into it first" % (folder, name, stage)) from e
    except (OSError, ValueError) as e:
        raise TrainerError("cannot read %s: %s" % (path, e)) from e


def read_export(export_dir):
    """[(variant, onnx path, threshold, fusion weight, FP32 layer names)] and the shared imgsz from export.json."""
    from trainer.export_record import read_export_variants

    variants = read_export_variants(export_dir)
    models = [(v["name"], v["onnx"], v["threshold"], float(v.get("fusion_weight", 1.0)), v["fp32_layers"])
              for v in variants]
    return models, variants[0].get("imgsz")


def read_calibration(calibration_dir, num_classes):
    """({profile: temperatures}, {profile: thresholds}, the TTA plan, method, {model: fusion weight}) from
    calibration.json (the weights {} when it fitted none)."""
    calibration = _read_json(calibration_dir, CALIBRATION_FILE, "calibrate")
    where = os.path.join(calibration_dir, CALIBRATION_FILE)
    profiles = calibration.get("profiles") if isinstance(calibration, dict) else None
    if not isinstance(profiles, dict) or not profiles:
        raise TrainerError("%s has no profiles; expected {\"profiles\": {profile: {temperatures, thresholds}}}"
                           % where)
    temperatures, thresholds = {}, {}
    for name in CALIBRATED_PROFILES:  # the cascade runs with the settings of its two stages
        entry = profiles.get(name) or {}
        for key, into in (("temperatures", temperatures), ("thresholds", thresholds)):
            values = entry.get(key)
            if values is None:
                continue
            if not isinstance(values, list) or len(values) != num_classes:
                raise TrainerError("%s profiles.%s.%s: expected a list of %d values (one per class of the "
                                   "data.yaml); was it calibrated on another dataset?" % (where, name, key, num_classes))
            into[name] = [float(v) for v in values]
    method = "%s (trainer calibrate, %s split)" % (calibration.get("method", "temperature"),
                                                   calibration.get("split", "?"))
    weights = calibration.get("fusion_weights") or {}
    if not isinstance(weights, dict) or not all(isinstance(w, (int, float)) and w > 0 for w in weights.values()):
        raise TrainerError("%s fusion_weights: expected {model: weight > 0}, got %r; rerun `trainer calibrate`"
                           % (where, weights))
    return temperatures, thresholds, calibration.get("tta", "full"), method, weights


def deployment_profile(section):
    from edge.energy import DeploymentProfile

    return DeploymentProfile(section.budget_wh_day, capture_interval_s=section.capture_interval_s,
                             powered_hours_per_day=section.powered_hours_per_day, idle_power_w=section.idle_power_w)


def _profiles(config):
    names = [p.strip() for p in config.calibration.profiles.split(",") if p.strip()]
    unknown = [p for p in names if p not in PROFILES]
    if unknown or not names:
        raise TrainerError("calibration.profiles=%r: unknown profiles %s; expected some of %s"
                           % (config.calibration.profiles, unknown, ", ".join(PROFILES)))
    return names


def choose_default(profiles, accuracy, budget, wanted=None):
    """`wanted` (checked), else the best mAP50 whose Wh/day fits (ties: less energy), else the least Wh/day.

    budget: {profile: (Wh/day in the budget's scope or None, why None)}; fits: {profile: bool}.
    """
    if wanted is not None:
        if wanted not in profiles:
            raise TrainerError("bundle.default_profile=%r was not measured; calibration.profiles lists %s"
                               % (wanted, ", ".join(profiles)))
        return wanted
    fitting = [p for p in profiles if budget[p][0] is not None and budget[p][1] is None and budget[p][2]]
    mapped = [p for p in fitting if accuracy[p]["map50"] == accuracy[p]["map50"]]  # NaN: nothing to rank by
    if mapped:
        return max(mapped, key=lambda p: (accuracy[p]["map50"], -budget[p][0]))
    measured = [p for p in profiles if budget[p][0] is not None]
    return min(measured, key=lambda p: budget[p][0]) if measured else profiles[0]


def _measure_accuracy(pipeline, items, profiles, progress):
    from trainer.profile_accuracy import evaluate_profiles, profile_figures

    results = evaluate_profiles(pipeline, items, profiles, progress)
    accuracy = profile_figures(results, [gt for _, gt in items], pipeline.bundle.num_classes)
    for figures in accuracy.values():
        figures.update(split=SPLIT, measured_by="edge.pipeline (onnxruntime) + edge.metrics; mAP50-95 faster-coco-eval")
    return accuracy


def _measure(config, bundle, data, profiles, meter, progress):
    from edge.pipeline import Pipeline
    from edge.images import read_image
    from trainer import bundle_energy
    from trainer.stages.device_eval import load_ground_truth

    section = config.bundle
    deployment = deployment_profile(section)
    items = load_ground_truth(data, SPLIT)
    if not items:
        raise TrainerError("%s: the %s split has no images; the bundle's figures need labelled images" % (data, SPLIT))
    with Pipeline.open(bundle, backend="onnxruntime") as pipeline:
        accuracy = _measure_accuracy(pipeline, items, profiles, progress)
        frames = [read_image(path) for path, _ in items[:section.energy_frames]]
        energy = {"here": bundle_energy.measure_here(pipeline, frames, profiles, section.energy_frames, meter,
                                                     deployment, progress),
                  "device": None, "deployment": deployment.to_dict(), "target": section.target}
    if section.target == "jetson-nano":
        rate = (accuracy.get("cascade") or {}).get("escalated_share")
        energy["device"] = bundle_energy.device_estimates(bundle, profiles, rate, deployment)
    energy["budget_source"] = "device" if energy["device"] else "here"
    return accuracy, energy


def _budget(energy):
    from trainer.bundle_energy import budget_figures

    figures = budget_figures(energy[energy["budget_source"]])
    fits = {p: entry["daily"].get("within_budget", False)
            for p, entry in energy[energy["budget_source"]]["profiles"].items()}
    return {p: (wh, why, fits[p]) for p, (wh, why) in figures.items()}


def judge(config, accuracy, energy, profiles):
    """(default profile, gate verdict) from the measured figures."""
    section = config.bundle
    budget = _budget(energy)
    default = choose_default(profiles, accuracy, budget, section.default_profile)
    figures = {"critical_recall": accuracy[default]["critical_recall"], "map50": accuracy[default]["map50"],
               "wh_day": budget[default][0]}
    reasons = {"critical_recall": "no critical-species box in the %s split" % SPLIT, "wh_day": budget[default][1]}
    floors = {"min_critical_recall": section.min_critical_recall, "min_map50": section.min_map50,
              "budget_wh_day": section.budget_wh_day}
    return default, gate.verdict(default, figures, floors, reasons)


def _check_out(out_dir):
    bundle_dir = os.path.join(out_dir, BUNDLE_DIR)
    if os.path.exists(bundle_dir):
        raise TrainerError("%s already exists; remove it or choose another --out (a bundle is never overwritten)"
                           % bundle_dir)
    os.makedirs(out_dir, exist_ok=True)
    return bundle_dir


def run_bundle(config, export_dir, calibration_dir, data, out_dir, force=False, progress=True, meter="auto"):
    """Build, measure and gate the edge bundle; see the module docstring. `meter`: a name or an opened Meter."""
    from edge.bundle_build import build_bundle, read_classes
    from trainer.stages.bundle_report import write_report
    from trainer.stages.training import write_json

    section = config.bundle
    profiles = _profiles(config)
    models, imgsz = read_export(export_dir)
    classes = read_classes(data)
    temperatures, thresholds, tta, method, fitted_weights = read_calibration(calibration_dir, len(classes))
    bundle_dir = _check_out(out_dir)
    staging = tempfile.mkdtemp(prefix=".bundle-staging-", dir=out_dir)
    try:
        staged = build_bundle(
            os.path.join(staging, BUNDLE_DIR), [(v, p) for v, p, _, _, _ in models], classes, tta=tta,
            target=section.target, decode_thr=config.calibration.decode_thr,
            operating_thr={v: t for v, _, t, _, _ in models if t is not None}, thresholds=thresholds,
            temperatures=temperatures, weights={v: fitted_weights.get(v, w) for v, _, _, w, _ in models},
            deployment=deployment_profile(section), imgsz=imgsz, calibration_method=method)
        accuracy, energy = _measure(config, staged, data, profiles, meter, _bar(progress))
        default, verdict = judge(config, accuracy, energy, profiles)
        verdict["forced"] = bool(force and not verdict["passed"])
        if not verdict["passed"] and not force:
            raise TrainerError("bundle refused by the budget gate: %s. Nothing was written; improve the model, "
                               "change the floors (bundle.min_map50, bundle.min_critical_recall, "
                               "bundle.budget_wh_day) or pass --force to ship it marked failing"
                               % "; ".join(verdict["failures"]))
        manifest = dict(staged.manifest)
        # What the FP16 parity check kept FP32, for the engines the device builds (`edge bundle engines`).
        fp32_layers = {v: layers for v, _, _, _, layers in models}
        manifest.update(models=[dict(m, fp32_layers=fp32_layers[m["variant"]]) for m in manifest["models"]])
        manifest.update(accuracy=accuracy, energy=energy, default_profile=default,
                        gate={"passed": verdict["passed"], "failures": verdict["failures"],
                              "forced": verdict["forced"], "profile": default})
        write_bundle(staged.root, json.loads(json.dumps(manifest)))
        os.rename(staged.root, bundle_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if verdict["forced"]:
        logger.warning("bundle %s shipped past a failing gate (--force): %s", bundle_dir, "; ".join(verdict["failures"]))
    result = BundleResult(bundle_dir, verdict, accuracy, energy, default, os.path.join(out_dir, REPORT))
    write_report(result.report, result)
    write_json(os.path.join(out_dir, SUMMARY), json.loads(json.dumps(dataclasses.asdict(result))))
    return result


def _bar(progress):
    if not progress:
        return None
    from tqdm import tqdm

    return lambda items, what: tqdm(items, desc="bundle %s" % what, leave=False)


def add_arguments(parser):
    from trainer.cli import existing_file, existing_folder, output_folder

    parser.add_argument("--export", required=True, type=existing_folder("the `trainer export` output folder"),
                        help="export folder (export.json, <variant>.onnx)")
    parser.add_argument("--calibration", required=True,
                        type=existing_folder("the `trainer calibrate` output folder"),
                        help="calibration folder (calibration.json)")
    parser.add_argument("--data", required=True, type=existing_file("a dataset's data.yaml"),
                        help="dataset data.yaml (classes, categories, the val split)")
    parser.add_argument("--out", required=True, type=output_folder, help="output folder: bundle/, report.md")
    parser.add_argument("--force", action="store_true",
                        help="write the bundle even when the gate fails (marked failing; the device warns)")


def run_command(config, args):
    """Week 6: the edge bundle with accuracy and energy measured through edge's pipeline, behind the budget gate."""
    from edge.console import printable

    result = run_bundle(config, args.export, args.calibration, args.data, args.out, force=args.force)
    for profile, figures in result.accuracy.items():
        print(printable("bundle %-13s mAP50 %.4f, mAP50-95 %.4f, critical recall %s" % (
            profile, figures["map50"], figures["map50_95"], _figure(figures["critical_recall"]))))
    verdict = result.verdict
    state = "passed" if verdict["passed"] else "FAILED (forced)"
    print(printable("gate %s on default profile %s%s; bundle %s; report %s" % (
        state, result.default_profile, "" if verdict["passed"] else ": " + "; ".join(verdict["failures"]),
        result.bundle_dir, result.report)))
    return result


def _figure(value):
    return "-" if value is None else "%.4f" % value

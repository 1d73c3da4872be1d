"""The stages of `trainer run-all` (trainer.run_all): what each reads, which `run_<stage>` it calls, what it keeps.

A Stage names its config sections (their digests are inputs), the paths it reads (`inputs`),
the folders it owns (emptied before a redo) and `run(ctx) -> Outcome`: the output paths to
checksum, the artifacts later stages read (data, weights, ...) and its key figures.

The active stage is the annotation wait: it writes the package, then stops with what to send
and the `trainer active import` command to run, and finishes on the rerun that finds every
package image merged into WORK/annotated. Synthetic data has a simulated vendor: the pool's
own label files are the answer, imported at once through the same `import_vendor`.
"""
import dataclasses
import importlib.util
import os

from trainer.errors import TrainerError

@dataclasses.dataclass
class Outcome:
    outputs: list
    artifacts: dict
    figures: dict = dataclasses.field(default_factory=dict)
    note: str = None
    status: str = "done"


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    title: str
    sections: tuple
    inputs: object            # ctx -> (paths, params)
    run: object               # ctx -> Outcome
    owns: object = ()         # folders under WORK emptied before a redo (or ctx -> folders)
    module: str = None        # where run_<name> lives, when it may be absent from this trainer
    resumable: bool = True

    def folders(self, ctx):
        return [ctx.path(f) for f in (self.owns(ctx) if callable(self.owns) else self.owns)]

    def missing(self):
        """Why the stage cannot run here (its module is absent), or None."""
        if self.module and importlib.util.find_spec(self.module) is None:
            return "%s.py is missing" % self.module.replace(".", "/")
        return None


def _figures(label, metrics, source):
    critical = (metrics.get("critical") or {}).get("recall", metrics.get("critical_recall"))
    return {label: {"mAP50": metrics.get("mAP50"), "critical_recall": critical, "wh_day": None, "source": source}}


# ----------------------------------------------------------------------------------------
# synth


def _synth_inputs(ctx):
    if ctx.data_arg:
        return [ctx.data_arg, os.path.dirname(os.path.abspath(ctx.data_arg))], {"data": ctx.data_arg}
    from trainer.run_presets import pool_images

    return [], {"pool_images": pool_images(ctx.preset, ctx.config.synth.images)}


def _synth_folders(ctx):
    # Annotations of a synthetic pool mean nothing once the scenes are redrawn; a user's are kept.
    return ("data",) if ctx.data_arg else ("synth", "pool", "annotated")


def _synth_run(ctx):
    if ctx.data_arg:
        return _user_data(ctx)
    from trainer.data.synth import generate_dataset, run_synth
    from trainer.run_presets import pool_images

    s = dataclasses.replace(ctx.config.synth, out_dir=ctx.path("synth"))
    data = run_synth(dataclasses.replace(ctx.config, synth=s), progress=ctx.progress)
    # The pool: more scenes of the same kind whose labels stay hidden until the simulated vendor answers.
    generate_dataset(ctx.path("pool"), pool_images(ctx.preset, s.images), s.classes, s.seed + 1, s.imgsz,
                     s.background_fraction, val_fraction=0.0, progress=ctx.progress)
    pool = ctx.path("pool", "images", "train")
    return Outcome([data, ctx.path("synth"), ctx.path("pool")], {"data": data, "pool": pool, "vendor": "simulated", "unlabelled": None},
                   note="%d synthetic stills, pool of %d" % (s.images, len(os.listdir(pool))))


def _user_data(ctx):
    from trainer.data.subset import write_subset
    from trainer.stages.training import read_data_yaml

    data = os.path.abspath(ctx.data_arg)
    read_data_yaml(data)
    pool = ctx.pool_arg or os.path.join(os.path.dirname(data), "unlabelled", "images")
    pool = os.path.abspath(pool) if os.path.isdir(pool) else None
    note = "using --data %s; pool %s" % (data, pool or "none (the active stage will be skipped)")
    section = ctx.config.data
    subset, left_out, counts = write_subset(data, ctx.path("data"), section.max_train_images, section.max_val_images)
    if subset is None:
        return Outcome([data], {"data": data, "pool": pool, "vendor": "human", "unlabelled": None},
                       status="skipped", note=note)
    kept = ", ".join("%s %d of %d" % (split, n, of) for split, (n, of) in counts.items())
    return Outcome([data, ctx.path("data")], {"data": subset, "pool": pool, "vendor": "human", "unlabelled": left_out},
                   note="%s; an even subset: %s%s" % (note, kept, "; MoCo v3 also sees the train frames left out"
                                                       if left_out else ""))


# ----------------------------------------------------------------------------------------
# ssl, baseline


def _train_images(data):
    from trainer.data.yolo_dataset import read_data_yaml

    return read_data_yaml(data)[1].get("train", [])


def _unlabelled_sources(ctx):
    """The pool and the train frames a subset left out (trainer.data.subset): MoCo v3 needs no labels."""
    return [p for p in (ctx.artifact("synth", "pool"), ctx.artifact("synth", "unlabelled")) if p]


def _ssl_inputs(ctx):
    return [ctx.artifact("synth", "data")] + _unlabelled_sources(ctx), {"model": ctx.config.baseline.model}


def _ssl_run(ctx):
    from trainer.data.yolo_dataset import list_images
    from trainer.ssl import run_ssl
    from trainer.ssl_augment import list_images as listed_images

    images = sorted(set(_train_images(ctx.artifact("synth", "data"))))
    for source in _unlabelled_sources(ctx):
        images += list_images(source) if os.path.isdir(source) else listed_images(source)
    os.makedirs(ctx.path("ssl"), exist_ok=True)
    listing = ctx.path("ssl", "images.txt")
    with open(listing, "w") as fh:
        fh.write("".join(os.path.abspath(p) + "\n" for p in images))
    # The backbone run-all pretrains is the baseline's: ssl.model serves the standalone command.
    section = dataclasses.replace(ctx.config.ssl, model=ctx.config.baseline.model)
    result = run_ssl(section, ctx.config.general, listing, ctx.path("ssl"), resume=True)
    return Outcome([result.backbone_path], {"backbone": result.backbone_path},
                   note="%d epochs on %d images, last loss %.4f" % (result.epochs_done, len(images),
                                                                     result.last_loss or float("nan")))


def _baseline_inputs(ctx):
    return [ctx.artifact("synth", "data"), ctx.artifact("ssl", "backbone")], {}


def _baseline_run(ctx):
    from trainer.stages.baseline import run_baseline

    section = dataclasses.replace(ctx.config.baseline, ssl_backbone=ctx.artifact("ssl", "backbone"))
    result = run_baseline(section, ctx.config.general, ctx.artifact("synth", "data"), ctx.path("baseline"))
    return Outcome([result.weights, result.metrics_path], {"weights": result.weights, "metrics": result.metrics_path},
                   _figures("baseline", result.metrics, "ultralytics val"),
                   note="mAP50 %.4f" % result.metrics.get("mAP50", float("nan")))


# ----------------------------------------------------------------------------------------
# active: the annotation wait


def _active_inputs(ctx):
    pool = ctx.artifact("synth", "pool")
    return [ctx.artifact("synth", "data"), ctx.artifact("baseline", "weights")] + ([pool] if pool else []), {}


def _active_run(ctx):
    from trainer.active.package import read_package

    data, pool = ctx.artifact("synth", "data"), ctx.artifact("synth", "pool")
    if not pool:
        return Outcome([], {"data": data}, status="skipped", note="no unlabelled pool (--pool): nothing to annotate")
    package, annotated = ctx.path("active", "package.zip"), ctx.path("annotated")
    if not os.path.exists(package):
        _select(ctx, data, pool, annotated, package)
    _prepare_annotated(data, annotated)
    manifest, _ = read_package(package)
    if not merged(manifest, annotated):
        if ctx.artifact("synth", "vendor") != "simulated":
            raise _annotation_stop(ctx, package, annotated, len(manifest["images"]))
        answer = simulated_answer(package, pool, ctx.path("active", "vendor", "annotations.json"))
        _import(answer, package, annotated)
    combined = combined_data_yaml(data, os.path.join(annotated, "images"), ctx.path("active"))
    return Outcome([package, combined, annotated], {"data": combined, "package": package, "annotated": annotated},
                   note="%d images annotated and merged into %s" % (len(manifest["images"]), annotated))


def _select(ctx, data, pool, annotated, package):
    from trainer.active.select import SelectOptions, run_select

    a = ctx.config.active
    options = SelectOptions(k=a.k, strategy=a.strategy, aggregate=a.aggregate, low_conf=a.low_conf, conf=a.conf,
                            max_distance=a.dedupe_hamming, imgsz=int(ctx.config.baseline.imgsz))
    os.makedirs(os.path.dirname(package), exist_ok=True)
    run_select(ctx.artifact("baseline", "weights"), _fresh_pool(pool, annotated, ctx.path("active", "pool")), package,
               options, names_file=data, progress=ctx.bar("active select"))


def _fresh_pool(pool, annotated, folder):
    """The pool less the images an earlier round already merged (links in `folder`), else the pool itself."""
    from trainer.active.select import pool_images
    from trainer.data.yolo_dataset import read_meta

    done = {m.get("vendor_file_name") for m in read_meta(annotated).values()} if os.path.isdir(annotated) else set()
    names, paths = pool_images(pool)
    if not done & set(names):
        return pool
    for name, path in zip(names, paths):
        if name not in done:
            link = os.path.join(folder, *name.split("/"))
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink(os.path.abspath(path), link)
    return folder


def merged(manifest, annotated):
    """Whether every image of a package is in the annotated dataset (its meta.json names what was imported)."""
    from trainer.data.yolo_dataset import read_meta

    imported = {m.get("vendor_file_name") for m in read_meta(annotated).values()} if os.path.isdir(annotated) else set()
    return all(e["file_name"] in imported for e in manifest["images"])


def _prepare_annotated(data, annotated):
    """An empty dataset with the data's classes, so the vendor's names map onto the same class ids."""
    from trainer.data.yolo_dataset import data_yaml_text
    from trainer.stages.training import categories_for, data_names, read_data_yaml

    if os.path.exists(os.path.join(annotated, "data.yaml")):
        return
    cfg = read_data_yaml(data)
    names = data_names(cfg)
    os.makedirs(annotated, exist_ok=True)
    with open(os.path.join(annotated, "data.yaml"), "w") as fh:
        fh.write(data_yaml_text(annotated, names, categories_for(cfg, len(names))))


def _annotation_stop(ctx, package, annotated, count):
    from trainer.errors import Stopped

    return Stopped(
        "waiting for annotations: send %s (%d images, COCO drafts in annotations/instances_default.json) to the "
        "annotation vendor; when their COCO file comes back, run\n"
        "  python -m trainer active import --coco %s --package %s --into %s\n"
        "then run the same run-all command again: it continues once the import has merged."
        % (package, count, "ANNOTATED.json", package, annotated))


def simulated_answer(package, pool, out_path):
    """The vendor's COCO file for a package of synthetic pool images: their own label files, in pixels."""
    import json

    from trainer.active.package import read_package
    from trainer.data.yolo_dataset import label_path_for, read_yolo_labels

    manifest, coco = read_package(package)
    images, annotations = [], []
    for entry in manifest["images"]:
        w, h = entry["width"], entry["height"]
        images.append({"id": entry["image_id"], "file_name": entry["file_name"], "width": w, "height": h})
        ids, xywhn = read_yolo_labels(label_path_for(os.path.join(pool, *entry["file_name"].split("/"))))
        for c, (cx, cy, bw, bh) in zip(ids, xywhn):
            box = [float((cx - bw / 2) * w), float((cy - bh / 2) * h), float(bw * w), float(bh * h)]
            annotations.append({"id": len(annotations) + 1, "image_id": entry["image_id"], "category_id": int(c) + 1,
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w") as fh:
        json.dump({"images": images, "annotations": annotations, "categories": coco["categories"]}, fh)
    return out_path


def _import(answer, package, annotated):
    from trainer.active.vendor_import import import_vendor, write_report

    report = import_vendor(answer, None, annotated, package=package)
    write_report(report, os.path.dirname(answer), "import_report")
    if not report.merged:
        raise TrainerError("the simulated vendor's answer %s was rejected: %s" % (answer, report.to_text()))


def combined_data_yaml(data, extra_images, folder):
    """folder/data.yaml: the data's splits as image lists, the annotated images added to train."""
    from trainer.data.yolo_dataset import data_yaml_text, list_images, read_data_yaml
    from trainer.stages.training import categories_for, data_names
    from trainer.stages.training import read_data_yaml as read_raw

    raw = read_raw(data)
    names = data_names(raw)
    _, splits = read_data_yaml(data)
    splits["train"] = list(splits.get("train", [])) + list_images(extra_images)
    os.makedirs(folder, exist_ok=True)
    lists = {}
    for split, paths in splits.items():
        lists[split] = split + ".txt"
        with open(os.path.join(folder, lists[split]), "w") as fh:
            fh.write("".join(os.path.abspath(p) + "\n" for p in paths))
    path = os.path.join(folder, "data.yaml")
    with open(path, "w") as fh:
        fh.write(data_yaml_text(folder, names, categories_for(raw, len(names)), lists["train"], lists.get("val"),
                                lists.get("test")))
    return path


# ----------------------------------------------------------------------------------------
# specialize, ensemble


def _specialize_inputs(ctx):
    return [ctx.artifact("active", "data"), ctx.artifact("baseline", "weights")], {}


def _specialize_run(ctx):
    from trainer.stages.specialize import run_specialize

    result = run_specialize(ctx.config, ctx.artifact("active", "data"), ctx.artifact("baseline", "weights"),
                            ctx.path("specialize"), progress=ctx.progress)
    device = result.metrics.get("device") or {}
    figures = _figures("specialize", device, "edge pipeline") if device else \
        _figures("specialize", result.metrics, "ultralytics val")
    return Outcome([result.weights, result.metrics_path], {"weights": result.weights}, figures,
                   note=result.summary.splitlines()[0] if result.summary else None)


def _ensemble_inputs(ctx):
    return [ctx.artifact("active", "data"), ctx.artifact("specialize", "weights")], {}


def _ensemble_run(ctx):
    from trainer.stages.ensemble import run_ensemble

    result = run_ensemble(ctx.config, ctx.artifact("active", "data"), ctx.artifact("specialize", "weights"),
                          ctx.path("ensemble"), progress=ctx.progress)
    figures = {}
    for v in result.variants:
        device = v.metrics.get("device") or {}
        figures.update(_figures("ensemble/" + v.name, device, "edge pipeline") if device else
                       _figures("ensemble/" + v.name, v.metrics, "ultralytics val"))
    return Outcome([result.summary_path] + [v.weights for v in result.variants],
                   {"ensemble_dir": result.out_dir, "summary": result.summary_path}, figures,
                   note="%d variants: %s" % (len(result.variants), ", ".join(v.name for v in result.variants)))


# ----------------------------------------------------------------------------------------
# export, calibrate, bundle (week 6)


def _export_inputs(ctx):
    return [ctx.artifact("ensemble", "summary"), ctx.artifact("active", "data")], {}


def _export_run(ctx):
    from trainer.stages.export import run_export

    result = run_export(ctx.config, ctx.artifact("ensemble", "ensemble_dir"), ctx.artifact("active", "data"),
                        ctx.path("export"), resume=True, progress=ctx.progress)
    onnx = [v["onnx"] for v in result.variants]
    return Outcome([result.path] + onnx, {"export_dir": result.out_dir, "export": result.path},
                   note="%d models: %s" % (len(onnx), ", ".join(os.path.basename(p) for p in onnx)))


def _calibrate_inputs(ctx):
    return [ctx.artifact("export", "export"), ctx.artifact("active", "data")], {}


def _calibrate_run(ctx):
    from trainer.stages.calibrate import run_calibrate

    result = run_calibrate(ctx.config, ctx.artifact("export", "export_dir"), ctx.artifact("active", "data"),
                           ctx.path("calibrate"), resume=True, progress=ctx.progress)
    return Outcome([result.path], {"calibration_dir": result.out_dir, "calibration": result.path},
                   note="temperatures for %s" % ", ".join(result.profiles))


def _bundle_inputs(ctx):
    # only a forced run records `force`: toggling it redoes the bundle, and an unforced run's record stays as it was
    return [ctx.artifact("export", "export"), ctx.artifact("calibrate", "calibration"),
            ctx.artifact("active", "data")], ({"force": True} if ctx.force else {})


def _bundle_run(ctx):
    import shutil

    from trainer.stages.bundle import run_bundle

    result = run_bundle(ctx.config, ctx.artifact("export", "export_dir"), ctx.artifact("calibrate", "calibration_dir"),
                        ctx.artifact("active", "data"), ctx.path("release"), force=ctx.force, progress=ctx.progress)
    bundle = ctx.path("bundle")
    if os.path.abspath(result.bundle_dir) != bundle:   # the bundle's place in WORK, whatever the stage's layout
        shutil.copytree(result.bundle_dir, bundle)
    return Outcome([bundle], {"bundle": bundle}, bundle_figures(result),
                   note="gate %s" % ("passed" if result.verdict.get("passed") else "FAILED (shipped, --force): %s"
                                     % "; ".join(map(str, result.verdict.get("failures", [])))))


def bundle_figures(result):
    """History rows per profile of a BundleResult: its edge-pipeline accuracy and the budget's Wh/day."""
    from trainer.bundle_energy import budget_figures

    energy = result.energy or {}
    daily = budget_figures(energy[energy["budget_source"]]) if energy.get(energy.get("budget_source")) else {}
    out = {}
    for profile, acc in result.accuracy.items():
        label = "bundle/%s%s" % (profile, " (default)" if profile == result.default_profile else "")
        out[label] = {"mAP50": acc.get("map50"), "critical_recall": acc.get("critical_recall"),
                      "wh_day": (daily.get(profile) or (None,))[0], "source": "edge pipeline"}
    return out


STAGES = (
    Stage("synth", "synthetic scenes and an unlabelled pool (or --data)", ("synth", "data"), _synth_inputs, _synth_run,
          owns=_synth_folders, resumable=False),
    Stage("ssl", "MoCo v3 pretraining of the backbone", ("ssl", "general"), _ssl_inputs, _ssl_run, owns=("ssl",)),
    Stage("baseline", "supervised training from the SSL backbone", ("baseline", "general"), _baseline_inputs,
          _baseline_run, owns=("baseline",)),
    Stage("active", "active learning: a package for the vendor, then its import", ("active",), _active_inputs,
          _active_run, owns=("active",)),
    Stage("specialize", "critical-species oversampling and hard-negative mining", ("critical_species", "general"),
          _specialize_inputs, _specialize_run, owns=("specialize",)),
    Stage("ensemble", "the device's variants", ("ensemble", "multiscale", "shore", "general"), _ensemble_inputs,
          _ensemble_run, owns=("ensemble",)),
    Stage("export", "ONNX with FP16 parity", ("export",), _export_inputs, _export_run, owns=("export",),
          module="trainer.stages.export"),
    Stage("calibrate", "temperatures and thresholds per profile", ("calibration",), _calibrate_inputs,
          _calibrate_run, owns=("calibrate",), module="trainer.stages.calibrate"),
    Stage("bundle", "the edge bundle and its budget gate", ("bundle",), _bundle_inputs, _bundle_run,
          owns=("release", "bundle"), module="trainer.stages.bundle"),
)
STAGE_NAMES = tuple(s.name for s in STAGES)

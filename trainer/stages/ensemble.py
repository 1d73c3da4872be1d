"""Week 5: the variants the device runs (`trainer ensemble`), fine-tuned from the specialized weights.

Each variant named in `ensemble.variants` (recall, balanced, precision, and any a user adds in
the config) fine-tunes the starting weights with its augmentation preset
(`ensemble.presets`), the ensemble schedule (epochs, lr0, lrf, warmup, batch) and, when
`multiscale.enabled`, every batch resized to a stride multiple in [multiscale.min, max]
(trainer.multiscale; validation stays at the nominal imgsz). Output under `out_dir`:

    training_config.yaml     the resolved config
    <variant>/train/         the ultralytics run (trainer.stages.training.fit: resume, checkpoints)
    <variant>/recipe.json    what the run was started with (a rerun with another recipe is refused)
    <variant>/metrics.json   variant, target, threshold the device must use, preset name and values,
                             size_range [min, max] or null, ultralytics' validation figures (top level,
                             as baseline's metrics.json) and `device`: edge Pipeline figures at the
                             variant's own threshold (trainer.stages.device_eval)
    ensemble.json            every variant with a metrics.json: name, weights, threshold, preset, summary

Targets: "jetson" starts every variant from `weights`. "gpu-server" (or `shore.enabled`) builds
the shore server's models from `shore.model` (yolo11x.yaml) at `shore.imgsz`: from
`shore.weights` when given, else from the yaml. Training from random weights needs the baseline
recipe, not a fine-tuning one (lr0 0.002 and no warmup would take far more than shore.epochs),
so the yaml is trained once into out_dir/base with the baseline stage itself (baseline's
optimizer, lr0, lrf, warmup and augmentation, shore.epochs, plain imgsz), and each variant then
fine-tunes that base exactly as on the Jetson path. The specialized `weights` are a different
architecture and are only recorded there.

Devices: one GPU or the CPU trains the variants one after another in this process. When
`general.device` lists several GPUs, `assign_devices` deals the variants round-robin onto them
and each GPU's share trains in its own process (ultralytics' device selection sets
CUDA_VISIBLE_DEVICES for the whole process). Callbacks only run in this process.

Resume: an interrupted variant continues its last.pt (fit); a finished one with a metrics.json
at the same threshold is not touched again.
"""
import concurrent.futures
import dataclasses
import json
import logging
import multiprocessing
import os

from trainer.errors import ConfigError, TrainerError
from trainer.stages.training import (categories_for, data_names, finetune_args, fit, read_data_yaml, run_state,
                                     ultralytics_device, write_json)

logger = logging.getLogger(__name__)
TARGETS = ("jetson", "gpu-server")
# Train arguments that may change between a run and its resumption without changing what it learns.
VOLATILE_ARGS = ("device", "workers")


@dataclasses.dataclass(frozen=True)
class VariantResult:
    name: str
    weights: str
    threshold: float
    preset: str
    metrics_path: str
    metrics: dict


@dataclasses.dataclass(frozen=True)
class EnsembleResult:
    out_dir: str
    target: str
    started_from: str     # the weights every variant fine-tuned
    summary_path: str     # ensemble.json
    variants: tuple       # VariantResult, in config order, for the variants of this run


def run_ensemble(config, data, weights, out_dir, target="jetson", variants=None, resume=True, progress=True,
                 callbacks=None):
    """Train (or resume) the ensemble variants; returns an EnsembleResult.

    config: the whole Config. weights: the specialized best.pt (the Jetson target's starting point).
    variants: names to train (default: every one in ensemble.variants). `callbacks` maps ultralytics events
    to functions run in this process (not in the per-GPU processes of a multi-GPU run).
    """
    from trainer.config import save_config

    target = resolve_target(target, config.shore.enabled)
    names = select_variants(config.ensemble.variants, variants)
    data = os.path.abspath(str(data))
    read_data_yaml(data)  # refuse a bad data.yaml before anything is written
    weights = _existing_weights(weights, "weights (the specialized best.pt)")
    out_dir = os.path.abspath(str(out_dir))
    os.makedirs(out_dir, exist_ok=True)
    save_config(config, os.path.join(out_dir, "training_config.yaml"))
    start = starting_weights(config, data, weights, out_dir, target, resume, callbacks)
    lanes = assign_devices(names, config.general.device)
    job = (config, data, start, out_dir, target, resume)
    if len(lanes) == 1:
        from tqdm import tqdm

        results = [train_variant(*job, name, callbacks=callbacks, progress=progress)
                   for name in tqdm(names, desc="ensemble variants", disable=not progress or len(names) < 2)]
    else:
        logger.info("training %d variants on %d GPUs: %s", len(names), len(lanes), lanes)
        done = {r.name: r for r in run_lanes(lanes, train_lane, job)}
        results = [done[name] for name in names]
    summary_path = write_summary(config, out_dir, target, start)
    return EnsembleResult(out_dir=out_dir, target=target, started_from=start, summary_path=summary_path,
                          variants=tuple(results))


def train_variant(config, data, start, out_dir, target, resume, name, callbacks=None, progress=False):
    """Fine-tune one variant from `start` into out_dir/<name> and write its metrics.json; a VariantResult."""
    variant = config.ensemble.variants[name]
    threshold, preset = float(variant["threshold"]), str(variant["preset"])
    variant_dir = os.path.join(out_dir, name)
    metrics_path = os.path.join(variant_dir, "metrics.json")
    size_range = [config.multiscale.min, config.multiscale.max] if config.multiscale.enabled else None
    args = variant_train_args(config, data, start, target, preset)
    recipe = {"model": start, "train_args": {k: v for k, v in args.items() if k not in VOLATILE_ARGS},
              "size_range": size_range}
    _check_recipe(os.path.join(variant_dir, "recipe.json"), recipe, name, resume)
    previous = _finished_metrics(metrics_path, threshold) if resume else None
    if previous is not None:
        logger.info("variant %s already trained (%s); not training it again", name, previous["weights"])
        return VariantResult(name, previous["weights"], threshold, preset, metrics_path, previous)
    os.makedirs(variant_dir, exist_ok=True)
    write_json(os.path.join(variant_dir, "recipe.json"), recipe)
    trainer = None
    if size_range is not None:
        from trainer.multiscale import trainer_class

        trainer = trainer_class(config.multiscale.min, config.multiscale.max, config.multiscale.stride)
    result = fit(variant_dir, start, args, keep_last=config.ensemble.keep_last, resume=resume, callbacks=callbacks,
                 trainer=trainer, val_args={"imgsz": args["imgsz"], "batch": args["batch"]})
    figures = device_figures_at(result.weights, data, args["imgsz"], threshold, variant_dir, progress)
    metrics = dict(result.metrics, variant=name, target=target, threshold=threshold,
                   preset={"name": preset, "values": dict(config.ensemble.presets[preset])},
                   size_range=size_range, imgsz=args["imgsz"], epochs=args["epochs"], started_from=start,
                   weights=result.weights, resumed=result.resumed, device=figures)
    write_json(metrics_path, metrics)
    return VariantResult(name, result.weights, threshold, preset, metrics_path, metrics)


def train_lane(device, names, config, data, start, out_dir, target, resume):
    """One GPU's share of a multi-GPU run, in its own process: its variants one after another."""
    config = dataclasses.replace(config, general=dataclasses.replace(config.general, device=device))
    return [train_variant(config, data, start, out_dir, target, resume, name) for name in names]


def variant_train_args(config, data, start, target, preset):
    """YOLO.train arguments of one variant: the ensemble schedule, the preset, the target's size and batch."""
    section = config.ensemble
    if target == "gpu-server":
        section = dataclasses.replace(section, imgsz=config.shore.imgsz, batch_size=config.shore.batch_size)
    # multi_scale 0: the range is trainer.multiscale's, never ultralytics' version-dependent fraction.
    return finetune_args(section, config.general, data, start, multi_scale=0.0, **config.ensemble.presets[preset])


def starting_weights(config, data, weights, out_dir, target, resume, callbacks=None):
    """The checkpoint every variant fine-tunes: `weights` (jetson), shore.weights, or a shore base trained
    from shore.model with the baseline recipe into out_dir/base."""
    if target == "jetson":
        return weights
    if config.shore.weights:
        return _existing_weights(config.shore.weights, "shore.weights")
    from trainer.stages.baseline import run_baseline

    base = dataclasses.replace(config.baseline, model=config.shore.model, epochs=config.shore.epochs,
                               imgsz=config.shore.imgsz, batch_size=config.shore.batch_size, ssl_backbone=None)
    logger.info("gpu-server: training %s from its yaml for %d epochs (baseline recipe) before the variants",
                config.shore.model, config.shore.epochs)
    return run_baseline(base, config.general, data, os.path.join(out_dir, "base"), resume=resume,
                        callbacks=callbacks).weights


def device_figures_at(weights, data, imgsz, threshold, variant_dir, progress=False):
    """edge Pipeline figures of `weights` on the validation split at the variant's own threshold."""
    from tqdm import tqdm

    from trainer.stages.device_eval import device_figures, load_ground_truth, open_checkpoint

    data_cfg = read_data_yaml(data)
    names = data_names(data_cfg)
    pipeline = open_checkpoint(weights, names, imgsz, os.path.join(variant_dir, "device_eval"))
    items = load_ground_truth(data, "val")
    bar = (lambda paths: tqdm(paths, desc="device figures", leave=False)) if progress else None
    return device_figures(pipeline, items, threshold, categories_for(data_cfg, len(names)), progress=bar)


def write_summary(config, out_dir, target, start):
    """ensemble.json over every configured variant that has a metrics.json in out_dir (subset runs add up)."""
    entries = []
    for name in config.ensemble.variants:
        path = os.path.join(out_dir, name, "metrics.json")
        if os.path.exists(path):
            with open(path) as fh:
                entries.append(summary_entry(json.load(fh)))
    path = os.path.join(out_dir, "ensemble.json")
    write_json(path, {"target": target, "started_from": start, "variants": entries})
    return path


def summary_entry(metrics):
    device = metrics.get("device") or {}
    return {"name": metrics["variant"], "weights": metrics["weights"], "threshold": metrics["threshold"],
            "preset": metrics["preset"]["name"], "size_range": metrics["size_range"], "imgsz": metrics["imgsz"],
            "metrics": {"mAP50": metrics.get("mAP50"), "mAP50-95": metrics.get("mAP50-95"),
                        "recall": metrics.get("recall"),
                        "critical_recall": (metrics.get("critical") or {}).get("recall"),
                        "device_mAP50": device.get("mAP50"), "device_precision": device.get("precision"),
                        "device_recall": device.get("recall"),
                        "device_critical_recall": device.get("critical_recall"),
                        "fp_per_background_image": device.get("fp_per_background_image")}}


# ----------------------------------------------------------------------------------------
# Pure helpers


def resolve_target(target, shore_enabled=False):
    """'gpu-server' when asked for or when shore.enabled; else 'jetson'."""
    if target not in TARGETS:
        raise ConfigError("target %r: expected one of %s" % (target, ", ".join(TARGETS)))
    return "gpu-server" if shore_enabled else target


def select_variants(configured, wanted=None):
    """The variant names to train, in config order; `wanted` (names or 'a,b') must all be configured."""
    if wanted is None:
        return list(configured)
    if isinstance(wanted, str):
        wanted = [w for w in (part.strip() for part in wanted.split(",")) if w]
    unknown = [w for w in wanted if w not in configured]
    if unknown or not wanted:
        raise ConfigError("variants %s: expected names from ensemble.variants: %s"
                          % (", ".join(unknown) or "(none)", ", ".join(configured)))
    return [name for name in configured if name in wanted]


def assign_devices(names, device):
    """[(device, [variant names])]: one lane with `device` unless it lists several GPUs, then the variants
    dealt round-robin onto them, one process per GPU that gets any."""
    device = ultralytics_device(device)
    gpus = [d for d in device.split(",") if d.isdigit()]
    if len(gpus) < 2 or len(names) < 2:
        return [(device, list(names))]
    lanes = [(gpu, list(names[i::len(gpus)])) for i, gpu in enumerate(gpus)]
    return [(gpu, share) for gpu, share in lanes if share]


def run_lanes(lanes, worker, job):
    """worker(device, names, *job) for every lane, each in its own (spawned) process; the results flattened
    in lane order. A lane that fails does not stop the others; the failures are raised together after."""
    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked child
    results, failures = {}, []
    with concurrent.futures.ProcessPoolExecutor(max_workers=len(lanes), mp_context=context) as pool:
        futures = {pool.submit(worker, device, names, *job): i for i, (device, names) in enumerate(lanes)}
        for future in concurrent.futures.as_completed(futures):
            i = futures[future]
            try:
                results[i] = future.result()
            except Exception as e:  # noqa: BLE001 - reported with its lane below, after every lane ended
                failures.append((lanes[i], e))
    if failures:
        detail = "; ".join("%s on device %s: %s" % (",".join(names), device, e) for (device, names), e in failures)
        raise TrainerError("ensemble variants failed: %s" % detail) from failures[0][1]
    return [r for i in range(len(lanes)) for r in results[i]]


def resolve_weights(path):
    """A .pt file as given; for a folder (the specialize output), its metrics.json "weights", else
    train/weights/best.pt."""
    path = str(path)
    if not os.path.isdir(path):
        return path
    metrics_path = os.path.join(path, "metrics.json")
    if os.path.exists(metrics_path):
        with open(metrics_path) as fh:
            recorded = json.load(fh).get("weights")
        if recorded:
            recorded = os.path.join(path, recorded)  # an absolute path stays as it is
            if os.path.isfile(recorded):
                return recorded
    best = os.path.join(path, "train", "weights", "best.pt")
    if os.path.isfile(best):
        return best
    raise ConfigError("weights folder %s holds neither a metrics.json naming existing weights nor "
                      "train/weights/best.pt; pass the specialized best.pt or the `trainer specialize` output folder"
                      % path)


def _existing_weights(path, what):
    path = os.path.abspath(resolve_weights(path))
    if not os.path.isfile(path):
        raise ConfigError("%s %s does not exist; expected a trained .pt checkpoint" % (what, path))
    return path


def _check_recipe(path, recipe, name, resume):
    if not resume or not os.path.exists(path):
        return
    with open(path) as fh:
        before = json.load(fh)
    if before != json.loads(json.dumps(recipe)):
        changed = sorted(k for k in set(before.get("train_args", {})) | set(recipe["train_args"])
                         if before.get("train_args", {}).get(k) != recipe["train_args"].get(k))
        changed += [k for k in ("model", "size_range") if before.get(k) != recipe[k]]
        raise ConfigError("variant %s in %s was started with another recipe (changed: %s); rerun with "
                          "--no-resume to train it again, or use another --out"
                          % (name, os.path.dirname(path), ", ".join(changed)))


def _finished_metrics(metrics_path, threshold):
    """The stored metrics of a finished variant measured at `threshold`, else None."""
    if not os.path.exists(metrics_path):
        return None
    with open(metrics_path) as fh:
        metrics = json.load(fh)
    last = os.path.join(os.path.dirname(metrics_path), "train", "weights", "last.pt")
    if metrics.get("threshold") != threshold or not os.path.isfile(metrics.get("weights", "")):
        return None
    return metrics if run_state(last) == "finished" else None


# ----------------------------------------------------------------------------------------
# CLI glue: trainer.cli COMMANDS["ensemble"] = (add_arguments, run_command)


def variant_names(text):
    names = [part.strip() for part in str(text).split(",") if part.strip()]
    if not names:
        import argparse

        raise argparse.ArgumentTypeError("%r: expected variant names separated by commas, e.g. recall,balanced"
                                         % text)
    return names


def add_arguments(parser):
    from trainer.cli import existing_file, existing_path, output_folder

    parser.add_argument("--data", required=True, type=existing_file("a dataset's data.yaml"), help="dataset data.yaml")
    parser.add_argument("--weights", required=True,
                        type=existing_path("the specialized best.pt or the `trainer specialize` output folder"),
                        help="specialized best.pt, or the specialize output folder")
    parser.add_argument("--out", required=True, type=output_folder,
                        help="output folder: one folder per variant, ensemble.json")
    parser.add_argument("--target", choices=TARGETS, default="jetson",
                        help="jetson (default) or gpu-server (shore.model, e.g. yolo11x.yaml); "
                             "shore.enabled selects gpu-server too")
    parser.add_argument("--variants", type=variant_names, metavar="A,B",
                        help="train only these variants (default: every one in ensemble.variants)")
    parser.add_argument("--epochs", dest="ensemble.epochs", type=int, help="default: ensemble.epochs")
    parser.add_argument("--device", dest="general.device", help="cpu, 0, or 0,1 for one variant per GPU")
    parser.add_argument("--no-resume", action="store_true", help="start every variant over instead of resuming")


def run_command(config, args):
    """Fine-tune the ensemble variants (recall, balanced, precision, ...) from the specialized weights."""
    from edge.console import printable

    weights = resolve_weights(args.weights)
    result = run_ensemble(config, args.data, weights, args.out, target=args.target, variants=args.variants,
                          resume=not args.no_resume)
    for variant in result.variants:
        device = variant.metrics.get("device") or {}
        print(printable("ensemble %s (%s): threshold %.2f, preset %s, mAP50 %.4f, device mAP50 %s, recall at "
                        "threshold %s; weights %s" % (
                            variant.name, result.target, variant.threshold, variant.preset,
                            variant.metrics.get("mAP50", float("nan")), _figure(device.get("mAP50")),
                            _figure(device.get("recall")), variant.weights)))
    return result


def _figure(value):
    return "-" if value is None else "%.4f" % value

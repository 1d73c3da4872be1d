"""Week 6: the models that ship (`trainer export`), each checked for FP16 parity before it leaves.

For every variant of ensemble_dir/ensemble.json: its weights exported to ONNX (export.opset,
a static batch of export.batch or 1, or a dynamic batch axis), then an FP16 twin of that ONNX
(trainer.fp16) compared with it through edge's Pipeline on the first export.parity_images images
of the data's val split: max box deviation (model-input px) and max score deviation over the boxes
the variant reports at its threshold, matched to the twin's, and the mAP50 drop. Above a limit
(export.max_*), the twin is rebuilt with export.fp32_layers kept FP32 (the detect head by default,
one more module per further try) and checked again, up to export.max_tries; each try goes into
parity.json and a variant still failing is refused, naming the figure, its value and its limit.
The FP32 layers of the passing try go to the engine build as precision constraints.

With export.efficient_nms, each checked ONNX also gets a twin with an EfficientNMS_TRT tail
(trainer.efficient_nms) at the device's decode threshold (calibration.decode_thr), NMS IoU
(edge.bundle.DEFAULT_NMS_IOU) and at most 300 boxes; the engines are built from that twin, while
ONNX Runtime, the parity check and a CPU bundle keep the plain file. The plugin only runs under
TensorRT: here the tail is checked up to the plugin boundary (tests/test_efficient_nms.py).

Output under out_dir:

    <variant>.onnx              the model that ships (FP32 ONNX; FP16 is the engine's precision)
    <variant>.fp16.onnx         with export.ship_fp16: its FP16 twin (the passing try's), which ships instead
    <variant>.nms.onnx          with export.efficient_nms: the same with the EfficientNMS_TRT tail
    work/<variant>/             FP16 twins and the pipelines' scratch files
    parity.json                 {variant: {"source_sha256", "settings", "passed", "tries": [...]}}
    export.json                 variants (name, onnx (the file that ships), sha256, onnx_fp32, threshold, imgsz,
                                batch, dynamic, fp32_layers,
                                parity, efficient_nms (null or its file, sha256, thresholds, outputs)),
                                opset, tensorrt (version or null), engines (list or null)
    build_engines.sh            trtexec per model for the device (+ <variant>.fp32_layers.txt)
    training_config.yaml        the resolved config

Resume: a variant whose ONNX and passing parity record exist for the same source sha256 and
settings is not exported again.
"""
import dataclasses
import json
import logging
import os

from trainer.errors import ConfigError, TrainerError
from trainer.stages.training import categories_for, data_names, read_data_yaml, write_json

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ExportResult:
    out_dir: str
    path: str             # export.json
    variants: list        # dicts as in export.json
    script: str           # build_engines.sh
    engines: object       # list of engine records, or None where TensorRT is not importable here


def run_export(config, ensemble_dir, data, out_dir, resume=True, progress=True):
    """Export every ensemble variant with its FP16 parity verdict; returns an ExportResult."""
    from trainer.config import save_config
    from trainer.engines import build_engines, write_script

    variants = read_ensemble(ensemble_dir, config.ensemble.imgsz, config.export.imgsz)
    data = os.path.abspath(str(data))
    data_cfg = read_data_yaml(data)
    out_dir = os.path.abspath(str(out_dir))
    os.makedirs(out_dir, exist_ok=True)
    save_config(config, os.path.join(out_dir, "training_config.yaml"))
    parity_path = os.path.join(out_dir, "parity.json")
    records = _read_json(parity_path) if resume else {}
    items = _parity_items(data, config.export.parity_images)
    names = data_names(data_cfg)
    categories = categories_for(data_cfg, len(names))
    tail = nms_settings(config) if config.export.efficient_nms else None
    entries, models = [], []
    for variant in variants:
        entry, model = export_variant(config.export, variant, out_dir, items, names, categories, records,
                                      parity_path, progress)
        entry["efficient_nms"] = write_nms_twin(tail, model, len(names))
        entries.append(entry)
        models.append(model)
    script = write_script(models, out_dir, config.export.workspace_mb)
    engines = build_engines(models, out_dir, config.export.workspace_mb)
    summary = {"variants": entries, "opset": config.export.opset,
               "tensorrt": engines[0]["tensorrt"] if engines else None, "engines": engines,
               "build_script": os.path.basename(script)}
    path = os.path.join(out_dir, "export.json")
    write_json(path, summary)
    return ExportResult(out_dir=out_dir, path=path, variants=entries, script=script, engines=engines)


def export_variant(export, variant, out_dir, items, names, categories, records, parity_path, progress):
    """Export one variant and settle its FP16 parity; (export.json entry, engine model dict)."""
    import onnx

    from edge.bundle import sha256_of
    from trainer.export import export_onnx, onnx_io

    name, imgsz = variant["name"], variant["imgsz"]
    onnx_path = os.path.join(out_dir, name + ".onnx")
    source = sha256_of(variant["weights"])
    batch = None if export.dynamic else (export.batch or 1)
    settings = {"opset": export.opset, "imgsz": imgsz, "batch": batch, "dynamic": export.dynamic,
                "threshold": variant["threshold"], "limits": limits_of(export), "fp32_layers": export.fp32_layers,
                "max_tries": export.max_tries, "parity_images": len(items)}
    record = records.get(name)
    if not (record and record.get("passed") and record.get("source_sha256") == source
            and record.get("settings") == settings and os.path.isfile(onnx_path)):
        work = os.path.join(out_dir, "work", name)
        os.makedirs(work, exist_ok=True)
        export_onnx(variant["weights"], onnx_path, imgsz, batch=batch or 1, dynamic=export.dynamic,
                    opset=export.opset)
        record = {"source": variant["weights"], "source_sha256": source, "settings": settings, "tries": []}
        records[name] = record
        settle_parity(export, name, onnx.load(onnx_path), onnx_path, variant["threshold"], imgsz, items, names,
                      categories, work, record, lambda: write_json(parity_path, records), progress)
    else:
        logger.info("variant %s already exported with passing FP16 parity (%s); not exporting it again",
                    name, onnx_path)
    final = record["tries"][-1]
    input_name, input_shape, outputs = onnx_io(onnx_path)
    shipped = write_fp16_twin(onnx_path, final["fp32_layers"]) if export.ship_fp16 else onnx_path
    entry = {"name": name, "onnx": os.path.basename(shipped), "sha256": sha256_of(shipped),
             "onnx_fp32": os.path.basename(onnx_path),
             "source": variant["weights"], "source_sha256": source, "threshold": variant["threshold"],
             "imgsz": imgsz, "batch": batch, "dynamic": export.dynamic, "fp32_layers": final["fp32_layers"],
             "parity": final["figures"], "parity_tries": len(record["tries"])}
    model = {"name": name, "onnx": onnx_path, "fp32_layers": final["fp32_layers"], "dynamic": export.dynamic,
             "shape": (3, imgsz, imgsz), "input": input_name, "input_shape": input_shape, "outputs": outputs}
    return entry, model


def write_fp16_twin(onnx_path, fp32_layers):
    """<variant>.fp16.onnx beside the FP32 ONNX: the twin of the passing parity try (the same conversion of the
    same model keeping the same layers FP32), which calibration and the bundle then use; returns its path."""
    import onnx

    from trainer.fp16 import fp16_twin

    path = os.path.splitext(onnx_path)[0] + ".fp16.onnx"
    tmp = path + ".tmp"
    onnx.save(fp16_twin(onnx.load(onnx_path), fp32_layers), tmp)
    os.replace(tmp, path)
    return path


def nms_settings(config):
    """The EfficientNMS_TRT tail's thresholds: those the device decodes a plain head at."""
    from edge.bundle import DEFAULT_NMS_IOU
    from trainer.efficient_nms import MAX_OUTPUT_BOXES

    return {"decode_thr": config.calibration.decode_thr, "iou_thr": DEFAULT_NMS_IOU,
            "max_output_boxes": MAX_OUTPUT_BOXES}


def write_nms_twin(tail, model, num_classes):
    """<variant>.nms.onnx beside the model's ONNX when `tail` (nms_settings) is set, pointed at by the engine
    model dict (whose outputs become the plugin's); its export.json record, or None (a stale twin is removed)."""
    from edge.bundle import sha256_of
    from trainer.efficient_nms import nms_onnx_path, write_efficient_nms
    from trainer.export import onnx_io

    path = nms_onnx_path(model["onnx"])
    if tail is None:
        if os.path.exists(path):
            logger.info("export.efficient_nms is off: removing %s from an earlier export", path)
            os.remove(path)
        return None
    write_efficient_nms(model["onnx"], path, tail["decode_thr"], tail["iou_thr"], tail["max_output_boxes"],
                        num_classes=num_classes)
    model["nms_onnx"] = path
    model["outputs"] = onnx_io(path)[2]
    return dict(tail, onnx=os.path.basename(path), sha256=sha256_of(path), outputs=model["outputs"])


def settle_parity(export, name, model, onnx_path, threshold, imgsz, items, names, categories, work, record, save,
                  progress):
    """Check FP16 twins of `model` against it, keeping more layers FP32 after each failing try, until one
    passes (recorded) or export.max_tries run out (TrainerError naming figure, value and limit)."""
    from trainer.fp16 import describe_failures, fp32_layer_names, parity_failures

    reference = None
    kept_before = None
    limits = limits_of(export)
    for attempt in range(export.max_tries):
        kept = [] if attempt == 0 else fp32_layer_names(model, export.fp32_layers, widen=attempt - 1)
        if kept == kept_before:
            logger.info("variant %s: no further layers to keep in FP32 after try %d", name, attempt)
            break
        kept_before = kept
        if reference is None:
            reference = _run_pipeline(onnx_path, names, imgsz, items, categories, threshold,
                                      os.path.join(work, "fp32"), progress, "%s FP32" % name)
        figures = measure_twin(model, kept, reference, names, imgsz, items, categories, threshold, work, attempt,
                               progress, name, limits)
        failures = parity_failures(figures, limits)
        record["tries"].append({"try": attempt + 1, "fp32_layers": kept, "figures": figures,
                                "failures": [{"figure": f, "value": v, "limit": lim} for f, v, lim in failures]})
        record["passed"] = not failures
        save()
        if not failures:
            logger.info("variant %s: FP16 parity passes on try %d (%d FP32 layers)", name, attempt + 1, len(kept))
            return
        logger.warning("variant %s: FP16 parity try %d fails (%s)", name, attempt + 1, describe_failures(failures))
    last = record["tries"][-1]
    raise TrainerError("variant %s: FP16 parity failed after %d tries (last kept %d layers FP32): %s; raise "
                       "export.max_* or keep more layers FP32 (export.fp32_layers, export.max_tries); see %s"
                       % (name, len(record["tries"]), len(last["fp32_layers"]),
                          describe_failures([(f["figure"], f["value"], f["limit"]) for f in last["failures"]]),
                          os.path.join(os.path.dirname(os.path.dirname(work)), "parity.json")))


def measure_twin(model, kept, reference, names, imgsz, items, categories, threshold, work, attempt, progress, name,
                 limits):
    """Parity figures of the FP16 twin keeping `kept` nodes FP32, against the FP32 run `reference`."""
    import onnx

    from trainer.fp16 import fp16_twin, parity_figures

    twin_path = os.path.join(work, "fp16_try%d.onnx" % (attempt + 1))
    onnx.save(fp16_twin(model, kept), twin_path)
    twin = _run_pipeline(twin_path, names, imgsz, items, categories, threshold,
                         os.path.join(work, "fp16_try%d" % (attempt + 1)), progress,
                         "%s FP16 try %d" % (name, attempt + 1))
    return parity_figures(reference["detections"], twin["detections"], reference["scales"], threshold,
                          reference["map50"], twin["map50"], limits)


def _run_pipeline(path, names, imgsz, items, categories, threshold, work, progress, what):
    """Detections (every score, single model, original view) and mAP50 of one ONNX model on the items."""
    from edge.images import read_image
    from edge.metrics import evaluate
    from trainer.fp16 import letterbox_scale
    from trainer.stages.device_eval import open_checkpoint

    pipeline = open_checkpoint(path, names, imgsz, work)
    paths = [p for p, _ in items]
    if progress:
        from tqdm import tqdm

        paths = tqdm(paths, desc="parity %s" % what, leave=False)
    detections, scales = [], []
    try:
        for image_path in paths:
            frame = read_image(image_path)
            scales.append(letterbox_scale(frame.shape, imgsz))
            detections.append(pipeline.detect(frame, plan="none", all_scores=True))
    finally:
        pipeline.close()
    result = evaluate(detections, [gt for _, gt in items], len(names), categories, score_thr=threshold)
    return {"detections": detections, "scales": scales, "map50": result["map50"]}


def limits_of(export):
    return {"max_box_deviation_px": export.max_box_deviation_px, "max_score_deviation": export.max_score_deviation,
            "max_map50_drop": export.max_map50_drop, "max_outlier_fraction": export.max_outlier_fraction}


def _parity_items(data, count):
    from trainer.stages.device_eval import load_ground_truth

    items = load_ground_truth(data, "val", limit=count)
    if not items:
        raise TrainerError("%s: the val split holds no images to check FP16 parity on" % data)
    return items


# ----------------------------------------------------------------------------------------
# The ensemble's variants


def read_ensemble(ensemble_dir, default_imgsz, export_imgsz=None):
    """[{name, weights, threshold, imgsz}] from ensemble_dir/ensemble.json (imgsz: export_imgsz when set, else
    the entry's or the variant's metrics.json, else default_imgsz); weights must exist."""
    if export_imgsz is not None and export_imgsz % 32:
        raise ConfigError("export.imgsz = %d: expected a multiple of 32, the YOLO stride (e.g. %d)"
                          % (export_imgsz, max(32, int(round(export_imgsz / 32.0)) * 32)))
    path = os.path.join(str(ensemble_dir), "ensemble.json")
    if not os.path.isfile(path):
        raise ConfigError("%s has no ensemble.json; pass the `trainer ensemble` output folder" % ensemble_dir)
    summary = _read_json(path)
    entries = summary.get("variants") if isinstance(summary, dict) else None
    if not entries:
        raise ConfigError("%s lists no variants; run `trainer ensemble` to completion first" % path)
    variants = []
    for entry in entries:
        name = entry.get("name")
        weights = entry.get("weights") or ""
        weights = weights if os.path.isabs(weights) else os.path.join(str(ensemble_dir), weights)
        if not name or not os.path.isfile(weights) or entry.get("threshold") is None:
            raise ConfigError("%s: variant %r needs a name, a threshold and existing weights (got %r)"
                              % (path, name, weights))
        metrics = os.path.join(str(ensemble_dir), name, "metrics.json")
        imgsz = entry.get("imgsz") or (_read_json(metrics).get("imgsz") if os.path.isfile(metrics) else None)
        variants.append({"name": str(name), "weights": os.path.abspath(weights),
                         "threshold": float(entry["threshold"]), "imgsz": int(export_imgsz or imgsz or default_imgsz)})
    return variants


def _read_json(path):
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as fh:
            return json.load(fh)
    except ValueError as e:
        raise TrainerError("%s is not valid JSON (%s); delete it or rerun with --no-resume" % (path, e)) from e


# ----------------------------------------------------------------------------------------
# CLI glue: trainer.cli COMMANDS["export"] = (add_arguments, run_command)


def add_arguments(parser):
    from trainer.cli import existing_file, existing_folder, output_folder

    parser.add_argument("--ensemble", required=True, type=existing_folder("the `trainer ensemble` output folder"),
                        help="`trainer ensemble` output folder (its ensemble.json)")
    parser.add_argument("--data", required=True, type=existing_file("a dataset's data.yaml"),
                        help="dataset data.yaml: FP16 parity is checked on its val split")
    parser.add_argument("--out", required=True, type=output_folder,
                        help="output folder: <variant>.onnx, export.json, parity.json, build_engines.sh")
    parser.add_argument("--no-resume", action="store_true", help="export every variant again")


def run_command(config, args):
    """Week 6: ONNX for TensorRT 8.2 with an FP16 parity check per variant, and the engines or their build script."""
    from edge.console import printable

    result = run_export(config, args.ensemble, args.data, args.out, resume=not args.no_resume)
    for entry in result.variants:
        parity = entry["parity"]
        print(printable("export %s: %s (batch %s%s), FP16 parity: box %.3f px, score %.4f, mAP50 drop %.4f "
                        "on %d images; %d FP32 layers" % (
                            entry["name"], entry["onnx"], entry["batch"], ", dynamic" if entry["dynamic"] else "",
                            parity["max_box_deviation_px"], parity["max_score_deviation"], parity["map50_drop"],
                            parity["images"], len(entry["fp32_layers"]))))
        tail = entry["efficient_nms"]
        if tail:
            print(printable("export %s: %s with the EfficientNMS_TRT tail (decode threshold %g, IoU %g, at most %d "
                            "boxes); engines are built from it" % (entry["name"], tail["onnx"], tail["decode_thr"],
                                                                    tail["iou_thr"], tail["max_output_boxes"])))
    print(printable("export: %s; engines: %s" % (result.path, "built with TensorRT %s" % result.engines[0]["tensorrt"]
                                                 if result.engines else "run %s on the device" % result.script)))
    return result

"""`run-all --preset`: config overrides that size the whole chain (smoke, demo, full).

A preset is a {section: {key: value}} table applied over the config file and under `--set`
(defaults < file < preset < --set < flags), plus `pool_images`: the unlabelled pool the
synthetic data comes with for the active-learning stage, whose own labels play the vendor's
answer. `full` changes nothing: the config as written.

    smoke  3 classes at 96 px, 64 px training, one epoch per fit: the whole chain in minutes on 2 cores
    demo   6 classes at 192 px, 11 baseline epochs, 1 per fine-tune: `make demo`, under 15 minutes on 2 cores
    real   a real dataset (--data) on a 2-core CPU in under 2 hours (aquarium: 60 min, DeepFish: 86 min, at 45 epochs): YOLOv8n at 320 px, MoCo v3 first,
           a larger set subsampled to aquarium's size
    full   the configuration as written
"""
import yaml

from trainer.errors import ConfigError

_TINY_SSL = {"model": "yolov8n.yaml", "epochs": 1, "batch_size": 4, "proj_hidden_dim": 64, "proj_dim": 32,
             "pred_hidden_dim": 64, "checkpoint_every": 1, "keep_last": 1}
# Gate floors at zero: a model trained for a minute is not meant to pass them, only to go through the gate.
_OPEN_GATE = {"min_map50": 0.0, "min_critical_recall": 0.0, "budget_wh_day": 1000.0}



def _chain(imgsz, batch, workers, epochs, fine_tune_epochs, multiscale):
    """The sections both small presets size the same way: one model, short schedules, no periodic checkpoints."""
    short = {"save_period": -1, "keep_last": 1}
    return {
        "general": {"device": "cpu", "num_workers": workers, "batch_size": batch, "imgsz": imgsz, "seed": 0},
        # nbs = batch: no gradient accumulation over a handful of batches
        "baseline": dict(short, model="yolov8n.yaml", epochs=epochs, imgsz=imgsz, batch_size=batch, mosaic=0.0,
                         nbs=batch),
        "critical_species": dict(short, iterations=1, epochs=fine_tune_epochs, mosaic=0.0),
        "ensemble": dict(short, epochs=fine_tune_epochs),
        "multiscale": {"enabled": True, "min": multiscale[0], "max": multiscale[1], "stride": 32},
    }


def _merge(base, extra):
    return {section: dict(base.get(section, {}), **extra.get(section, {})) for section in dict(base, **extra)}


PRESETS = {
    "smoke": {"pool_images": 12, "config": _merge(_chain(64, 4, 0, 1, 1, (64, 96)), {
        "synth": {"images": 32, "classes": 3, "imgsz": 96, "background_fraction": 0.2, "val_fraction": 0.25,
                  "sequences": 0, "sequence_length": 0},
        "ssl": dict(_TINY_SSL, imgsz=64, batch_size=12),
        "baseline": {"warmup_epochs": 0.0},
        "active": {"k": 4},
        "critical_species": {"holdout_fraction": 0.5},
        # one-epoch models score below the device's 0.01 everywhere: decode lower so calibration has detections
        "calibration": {"images": 16, "min_matches": 5, "decode_thr": 0.001},
        "export": {"parity_images": 2, "max_tries": 1},
        "bundle": dict(_OPEN_GATE, energy_frames=2)})},
    # Sized for `make demo` under 15 minutes on a quiet 2-core machine: the baseline's epochs buy the accuracy
    # (the old demo's 15 epochs from scratch at 192 px reached mAP50 ~0.4); SSL, the fine-tunes and the
    # measuring stages get the least that still shows each step working.
    # A fresh clone's demo took 16 min 3 s with 360 stills, 11 epochs and two epochs per variant (13.7 min of
    # it the demo, 3.5 min of that the three variants, the rest the install): one epoch per variant.
    "demo": {"pool_images": 120, "config": _merge(_chain(192, 16, 2, 11, 1, (160, 224)), {
        "synth": {"images": 360, "classes": 6, "imgsz": 192, "background_fraction": 0.08, "val_fraction": 0.2,
                  "sequences": 5, "sequence_length": 12},
        "ssl": dict(_TINY_SSL, epochs=1, batch_size=16, imgsz=64),
        "baseline": {"optimizer": "AdamW", "lr0": 0.003, "lrf": 0.2, "warmup_epochs": 1.0, "cache": True,
                     "patience": 0},
        "active": {"k": 40},
        # every synthetic class is critical: oversampling lists nearly every image again
        "critical_species": {"oversample": 2},
        "calibration": {"images": 120, "min_matches": 10},
        "export": {"parity_images": 4, "max_tries": 2},
        "bundle": dict(_OPEN_GATE, energy_frames=5)})},
    # A real data set (run-all --data, e.g. aquarium: 448 train / 127 val images at 1024 px) on a 2-core CPU in
    # under 2 hours. Measured on aquarium here (benchmarks/results/README.md): MoCo v3 on the training images and
    # the --pool folder for 30 epochs 710 s (at temperature 0.2, the DeepFish experiment's: at 1.0 a CPU budget
    # leaves the loss at chance; that experiment gave 1.6-2.8x the mAP50 of scratch at equal budget), 30 baseline
    # epochs 2884 s (mAP50 0.31), one mining round of 3 epochs 435 s, 4 epochs per variant 1226 s, export,
    # calibration and bundle at 320 px 258 s. Aquarium's full-TTA bundle: mAP50 0.36.
    # 45 baseline epochs, not 30: on aquarium (run-all --set baseline.epochs=45, 60 s an epoch on a quiet machine,
    # 2,723 s) the baseline reached mAP50 0.374 against 0.312 at 30, and the full-TTA bundle 0.445 against 0.375.
    # A larger set keeps aquarium's cost: at most 450 train and 300 val images, evenly spread (video frames are
    # near-duplicates; trainer.data.subset), and MoCo v3 sees every train frame within the 14,000 images its
    # 30 epochs saw on aquarium (DeepFish: 4,568 frames, 3 epochs).
    "real": {"pool_images": None, "config": _merge(_chain(320, 16, 2, 45, 4, (256, 384)), {
        "data": {"max_train_images": 450, "max_val_images": 300},
        "ssl": {"model": "yolov8n.yaml", "epochs": 30, "batch_size": 64, "imgsz": 128, "lr": 0.0015,
                "temperature": 0.2, "proj_hidden_dim": 1024, "proj_dim": 256, "pred_hidden_dim": 1024,
                "checkpoint_every": 5, "keep_last": 1, "image_budget": 14000},
        "baseline": {"optimizer": "AdamW", "lr0": 0.002, "lrf": 0.1, "warmup_epochs": 2.0, "mosaic": 1.0,
                     "cache": True, "patience": 0},
        "critical_species": {"oversample": 2, "epochs": 3, "mosaic": 1.0},
        "calibration": {"min_matches": 20},
        # FP16 ONNX: half the size. 5 px: aquarium's precision variant moved one box of 141 by 4.5 px at 320 px
        # input in FP16 however many layers stayed FP32, while its mAP50 moved 0.0004 (the mAP50 and score limits stay)
        # 384: the top of the multiscale range the variants trained at. Measured on aquarium's variants (ultralytics
        # val, mAP50 at 320 / 384 px): recall 0.274 / 0.322, balanced 0.310 / 0.341, precision 0.315 / 0.338.
        "export": {"parity_images": 50, "max_tries": 3, "ship_fp16": True, "max_box_deviation_px": 5.0,
                   "imgsz": 384},
        "bundle": {"energy_frames": 20}})},
    "full": {"pool_images": None, "config": {}},
}


def preset_overrides(name):
    """'section.key=value' strings of a preset, in table order (values written as YAML)."""
    table = _preset(name)["config"]
    return ["%s.%s=%s" % (section, key, _yaml_value(value)) for section, values in table.items()
            for key, value in values.items()]


def _yaml_value(value):
    if isinstance(value, str):   # quoted, so a name like 'null' or '1e3' stays a string
        return "'%s'" % value.replace("'", "''")
    return yaml.safe_dump(value, default_flow_style=True).strip().replace("\n...", "").strip()


def pool_images(name, synth_images):
    """Pool size for synthetic data: the preset's, else a quarter of the synthetic stills."""
    count = _preset(name)["pool_images"]
    return int(count) if count is not None else max(1, int(synth_images) // 4)


def _preset(name):
    if name not in PRESETS:
        raise ConfigError("--preset %s: no such preset; expected one of %s" % (name, ", ".join(PRESETS)))
    return PRESETS[name]

"""Ensemble stage: variant selection, device plan, lanes in processes, recipe checks; tiny CPU runs of the
variants (a fourth from the config), an interrupted variant resuming, the gpu-server target on yolo11n."""
import json
import os

import pytest
import yaml

from tests.test_baseline import GENERAL, Interrupt, make_yolo_dataset, tiny_config
from trainer.cli import COMMANDS, main
from trainer.config import load_config
from trainer.errors import ConfigError, TrainerError
from trainer.stages import ensemble

CLI = dict(COMMANDS, ensemble=(ensemble.add_arguments, ensemble.run_command))
TINY = {"general": {"device": "cpu", "num_workers": 0, "batch_size": 4, "imgsz": 64},
        "ensemble": {"epochs": 1, "save_period": 1, "variants": {"night": {"threshold": 0.3, "preset": "light"}}},
        "multiscale": {"min": 64, "max": 96, "stride": 32},
        "shore": {"model": "yolo11n.yaml", "epochs": 1, "imgsz": 64, "batch_size": 4}}


def write_config(path, **sections):
    raw = {name: dict(values, **sections.get(name, {})) for name, values in TINY.items()}
    with open(path, "w") as fh:
        yaml.safe_dump(raw, fh)
    return str(path)


@pytest.mark.parametrize("names, device, expected", [
    (["a", "b", "c"], "cpu", [("cpu", ["a", "b", "c"])]),
    (["a", "b", "c"], "0", [("0", ["a", "b", "c"])]),
    (["a", "b", "c"], "", [("", ["a", "b", "c"])]),
    (["a", "b", "c"], "0,1", [("0", ["a", "c"]), ("1", ["b"])]),
    (["a", "b", "c"], "cuda:2", [("2", ["a", "b", "c"])]),
    (["a", "b", "c", "d"], "1, 3", [("1", ["a", "c"]), ("3", ["b", "d"])]),
    (["a", "b"], "0,1,2", [("0", ["a"]), ("1", ["b"])]),    # no process for a GPU without a variant
    (["a"], "0,1", [("0,1", ["a"])]),                       # one variant keeps both GPUs (ultralytics' DDP)
])
def test_assign_devices(names, device, expected):
    lanes = ensemble.assign_devices(names, device)
    assert lanes == expected
    assert sorted(n for _, share in lanes for n in share) == sorted(names)


@pytest.mark.parametrize("wanted, expected", [
    (None, ["recall", "balanced", "precision", "night"]),
    ("precision,recall", ["recall", "precision"]),          # config order, whatever the order asked
    (["night"], ["night"]),
    (" balanced , ", ["balanced"]),
])
def test_select_variants(wanted, expected):
    configured = load_config(None, ["ensemble.variants={night: {threshold: 0.3, preset: light}}"]).ensemble.variants
    assert ensemble.select_variants(configured, wanted) == expected


@pytest.mark.parametrize("wanted", ["recal", ["recall", "sharp"], ",", []])
def test_select_variants_refuses_unknown_names(wanted):
    with pytest.raises(ConfigError, match="ensemble.variants: recall, balanced, precision"):
        ensemble.select_variants(load_config().ensemble.variants, wanted)


@pytest.mark.parametrize("target, shore_enabled, expected", [
    ("jetson", False, "jetson"), ("gpu-server", False, "gpu-server"), ("jetson", True, "gpu-server"),
])
def test_resolve_target(target, shore_enabled, expected):
    assert ensemble.resolve_target(target, shore_enabled) == expected


def test_resolve_target_refuses_unknown():
    with pytest.raises(ConfigError, match="jetson, gpu-server"):
        ensemble.resolve_target("orin", False)


def test_resolve_weights_file_folder_metrics_and_best(tmp_path):
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"x")
    assert ensemble.resolve_weights(str(pt)) == str(pt)
    folder = tmp_path / "specialized"
    best = folder / "train" / "weights" / "best.pt"
    with pytest.raises(ConfigError, match="train/weights/best.pt"):
        ensemble.resolve_weights(str(folder.mkdir() or folder))
    best.parent.mkdir(parents=True)
    best.write_bytes(b"x")
    assert ensemble.resolve_weights(str(folder)) == str(best)
    (folder / "metrics.json").write_text(json.dumps({"weights": "gone.pt"}))
    assert ensemble.resolve_weights(str(folder)) == str(best)       # a stale record falls back to best.pt
    (folder / "metrics.json").write_text(json.dumps({"weights": str(pt)}))
    assert ensemble.resolve_weights(str(folder)) == str(pt)


@pytest.mark.parametrize("target, imgsz", [("jetson", 64), ("gpu-server", 96)])
def test_variant_train_args_carry_the_preset_and_continue_the_weights(target, imgsz):
    config = load_config(None, ["general.imgsz=64", "shore.imgsz=96", "ensemble.epochs=7"])
    for name, variant in config.ensemble.variants.items():
        args = ensemble.variant_train_args(config, "data.yaml", "start.pt", target, variant["preset"])
        preset = config.ensemble.presets[variant["preset"]]
        assert {k: args[k] for k in preset} == preset
        assert (args["pretrained"], args["epochs"], args["imgsz"], args["multi_scale"]) == ("start.pt", 7, imgsz, 0.0)
        assert args["lr0"] == config.ensemble.lr0


def lane_worker(device, names, tag):
    if "broken" in names:
        raise ValueError("no such GPU")
    return [(os.getpid(), device, name, tag) for name in names]


def test_run_lanes_runs_each_lane_in_its_own_process():
    got = ensemble.run_lanes([("0", ["recall", "precision"]), ("1", ["balanced"])], lane_worker, ("t",))
    assert [(device, name, tag) for _, device, name, tag in got] == [
        ("0", "recall", "t"), ("0", "precision", "t"), ("1", "balanced", "t")]
    pids = {pid for pid, *_ in got}
    assert len(pids) == 2 and os.getpid() not in pids


def test_run_lanes_reports_the_failed_lane():
    with pytest.raises(TrainerError, match="broken on device 1: no such GPU"):
        ensemble.run_lanes([("0", ["recall"]), ("1", ["broken"])], lane_worker, ("t",))


def test_what_a_lane_process_is_sent_and_returns_pickles(tmp_path):
    """The multi-GPU path sends train_lane the whole Config and gets VariantResults back (run_lanes' real
    training across two processes costs ~30 s on 2 cores, so it is not in the suite; the pickling is)."""
    import pickle

    config = load_config(write_config(tmp_path / "c.yaml"))
    job = ("0", ["recall"], config, "data.yaml", "start.pt", str(tmp_path), "jetson", True)
    assert pickle.loads(pickle.dumps(job)) == job
    assert pickle.loads(pickle.dumps(ensemble.train_lane)) is ensemble.train_lane
    result = ensemble.VariantResult("recall", "w.pt", 0.15, "heavy", "m.json", {"mAP50": 0.5})
    assert pickle.loads(pickle.dumps(result)) == result


def test_a_changed_recipe_is_refused_on_resume(tmp_path):
    config = load_config(write_config(tmp_path / "c.yaml"))
    (tmp_path / "out" / "recall").mkdir(parents=True)
    before = {"model": "start.pt", "train_args": {"mosaic": 0.0}, "size_range": [64, 96]}
    (tmp_path / "out" / "recall" / "recipe.json").write_text(json.dumps(before))
    with pytest.raises(ConfigError, match="recall .* another recipe .*model.*--no-resume"):
        ensemble.train_variant(config, "data.yaml", "other.pt", str(tmp_path / "out"), "jetson", True, "recall")


def test_cli_refuses_unknown_variant_and_empty_weights_folder(tmp_path, capsys):
    data = tmp_path / "data.yaml"
    data.write_text("names: {0: a}\n")
    (tmp_path / "empty").mkdir()
    pt = tmp_path / "w.pt"
    pt.write_bytes(b"x")
    base = ["ensemble", "--data", str(data), "--out", str(tmp_path / "out")]
    assert main(base + ["--weights", str(pt), "--variants", "recall,sharp"], commands=CLI) == 2
    assert "variants sharp: expected names from ensemble.variants" in capsys.readouterr().err
    assert main(base + ["--weights", str(tmp_path / "empty")], commands=CLI) == 2
    assert "neither a metrics.json" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------
# Tiny training runs


@pytest.fixture(scope="module")
def specialized(tmp_path_factory):
    """A tiny dataset and a 1-epoch yolov8n standing in for the specialized weights: (data, folder, best.pt)."""
    from trainer.stages.baseline import run_baseline

    root = tmp_path_factory.mktemp("ensemble")
    data = make_yolo_dataset(root / "data")
    result = run_baseline(tiny_config(), GENERAL, data, root / "specialized")
    return data, str(root / "specialized"), result.weights


def read_json(path):
    with open(path) as fh:
        return json.load(fh)


@pytest.mark.slow
def test_every_configured_variant_trains_with_its_threshold_and_preset(specialized, tmp_path, capsys):
    data, folder, weights = specialized
    config_path = write_config(tmp_path / "config.yaml")
    config = load_config(config_path)
    out = tmp_path / "out"
    result = ensemble.run_ensemble(config, data, weights, out, progress=False)

    names = list(config.ensemble.variants)
    assert names == ["recall", "balanced", "precision", "night"] and [v.name for v in result.variants] == names
    for name, variant in config.ensemble.variants.items():
        metrics = read_json(out / name / "metrics.json")
        preset = variant["preset"]
        assert (metrics["variant"], metrics["target"], metrics["threshold"]) == (name, "jetson", variant["threshold"])
        assert metrics["preset"] == {"name": preset, "values": config.ensemble.presets[preset]}
        assert metrics["size_range"] == [64, 96] and metrics["started_from"] == weights
        assert metrics["device"]["threshold"] == variant["threshold"]
        assert 0.0 <= metrics["mAP50"] <= 1.0 and 0.0 <= metrics["device"]["mAP50"] <= 1.0
        assert os.path.isfile(metrics["weights"])
    three = [read_json(out / n / "metrics.json") for n in ("recall", "balanced", "precision")]
    assert len({m["threshold"] for m in three}) == 3 and len({m["preset"]["name"] for m in three}) == 3

    summary = read_json(out / "ensemble.json")
    assert [v["name"] for v in summary["variants"]] == names
    assert [v["threshold"] for v in summary["variants"]] == [config.ensemble.variants[n]["threshold"] for n in names]
    assert load_config(str(out / "training_config.yaml")) == config

    # The CLI on the same folder, --weights as the specialize folder: nothing is trained again.
    last = out / "recall" / "train" / "weights" / "last.pt"
    stamp = os.stat(last).st_mtime_ns
    assert main(["--config", config_path, "ensemble", "--data", data, "--weights", folder, "--out", str(out),
                 "--variants", "precision,recall"], commands=CLI) == 0
    # ultralytics' own progress bars share stdout (the API run above): keep the command's summary lines
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("ensemble ")]
    assert [line.split()[1] for line in lines] == ["recall", "precision"]
    assert "threshold 0.15, preset heavy" in lines[0]
    assert os.stat(last).st_mtime_ns == stamp
    assert [v["name"] for v in read_json(out / "ensemble.json")["variants"]] == names  # a subset keeps the rest


@pytest.mark.slow
def test_an_interrupted_variant_continues(specialized, tmp_path):
    data, _, weights = specialized
    config = load_config(write_config(tmp_path / "config.yaml", ensemble={"epochs": 2}))
    out = tmp_path / "out"

    def stop_after_first_epoch(trainer):
        if trainer.epoch == 0:
            raise Interrupt("simulated crash after epoch 1 was saved")

    with pytest.raises(Interrupt):
        ensemble.run_ensemble(config, data, weights, out, variants=["balanced"], progress=False,
                              callbacks={"on_fit_epoch_end": stop_after_first_epoch})
    assert not (out / "balanced" / "metrics.json").exists()
    starts = []
    result = ensemble.run_ensemble(config, data, weights, out, variants=["balanced"], progress=False,
                                   callbacks={"on_train_start": lambda t: starts.append(t.start_epoch)})
    assert starts == [1]  # resumed from last.pt, not restarted
    assert result.variants[0].metrics["resumed"] == "unfinished"


@pytest.mark.slow
def test_gpu_server_target_trains_the_shore_model_from_its_yaml(specialized, tmp_path):
    from trainer import yolo

    data, _, weights = specialized
    config = load_config(write_config(tmp_path / "config.yaml", multiscale={"enabled": False}))
    out = tmp_path / "out"
    result = ensemble.run_ensemble(config, data, weights, out, target="gpu-server", variants="precision",
                                   progress=False)
    assert result.target == "gpu-server"
    assert result.started_from == str(out / "base" / "train" / "weights" / "best.pt")
    metrics = read_json(out / "precision" / "metrics.json")
    assert (metrics["target"], metrics["size_range"], metrics["imgsz"]) == ("gpu-server", None, 64)
    model, _ = yolo.load_checkpoint(metrics["weights"])
    assert "yolo11n" in str(model.yaml.get("yaml_file"))
    assert read_json(out / "ensemble.json")["target"] == "gpu-server"



def test_training_validates_at_the_device_nms_iou():
    """ultralytics' own 0.7 made a variant's reported mAP50 and its best.pt choice differ from what the device runs."""
    from edge.bundle import DEFAULT_NMS_IOU
    from trainer.yolo import train_args

    assert train_args(data="data.yaml")["iou"] == DEFAULT_NMS_IOU
    assert train_args(iou=0.6)["iou"] == 0.6

"""`python -m trainer` end to end on tiny synthetic data: every stage through main()."""
import json
import os

import pytest

from trainer.cli import main

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("cli") / "synth")
    assert main(["synth", "--out", out, "--images", "24", "--classes", "4", "--imgsz", "96", "--sequences", "2",
                 "--sequence-length", "4", "--seed", "3"]) == 0
    return out


def test_synth_validate_split(synth, tmp_path, capsys):
    assert main(["data", "validate", synth, "--report", str(tmp_path / "report")]) == 0
    assert os.path.exists(str(tmp_path / "report" / "validation_classes.png"))
    assert main(["--set", "data.train_fraction=0.6", "--set", "data.val_fraction=0.2", "--set",
                 "data.test_fraction=0.2", "data", "split", synth, "--out", str(tmp_path / "split")]) == 0
    lists = {name: open(str(tmp_path / "split" / (name + ".txt"))).read().split() for name in ("train", "val", "test")}
    # Frames of one synthetic sequence never straddle splits.
    owners = {}
    for name, files in lists.items():
        for f in files:
            stem = os.path.basename(f)
            if stem.startswith("seq"):
                owners.setdefault(stem.split("_")[0], set()).add(name)
    assert owners and all(len(v) == 1 for v in owners.values())


def test_bad_config_value_is_one_line(synth, capsys):
    assert main(["--set", "data.train_fraction=2", "data", "split", synth, "--out", "x"]) == 2
    assert "data.train_fraction" in capsys.readouterr().err


def test_ssl_then_baseline_from_the_command_line(synth, tmp_path):
    ssl_out = str(tmp_path / "ssl")
    tiny = ["--set", "ssl.imgsz=64", "--set", "ssl.batch_size=8", "--set", "ssl.proj_hidden_dim=64",
            "--set", "ssl.pred_hidden_dim=64", "--set", "ssl.proj_dim=32", "--set", "general.num_workers=0"]
    assert main(tiny + ["ssl", "--images", os.path.join(synth, "images"), "--out", ssl_out, "--epochs", "1",
                        "--model", "yolov8n.yaml"]) == 0
    assert os.path.exists(os.path.join(ssl_out, "backbone.pt"))
    assert os.path.exists(os.path.join(ssl_out, "training_config.yaml"))
    base_out = str(tmp_path / "baseline")
    assert main(["--set", "baseline.imgsz=64", "--set", "baseline.batch_size=8", "--set", "general.num_workers=0",
                 "baseline", "--data", os.path.join(synth, "data.yaml"), "--out", base_out, "--epochs", "1",
                 "--model", "yolov8n.yaml", "--ssl-backbone", ssl_out]) == 0
    metrics = json.load(open(os.path.join(base_out, "metrics.json")))
    assert 0.0 <= metrics["mAP50"] <= 1.0 and set(metrics["recall_by_category"]) == {"critical", "important", "general"}
    report = json.load(open(os.path.join(base_out, "backbone_transfer.json")))
    assert report  # the SSL backbone was transferred and reported

"""`trainer specialize` on tiny data: mining rounds through edge's Pipeline, resume, CLI and bad input."""
import json
import os

import numpy as np
import pytest

from tests.test_baseline import make_yolo_dataset
from trainer.cli import COMMANDS, main
from trainer.stages import mining, specialize

pytest.importorskip("torch")

SPECIALIZE = dict(COMMANDS, specialize=(specialize.add_arguments, specialize.run_command))
SETTINGS = ["general.device=cpu", "general.imgsz=64", "general.batch_size=4", "general.num_workers=0",
            "general.seed=0", "critical_species.epochs=1", "critical_species.iterations=2",
            "critical_species.oversample=2", "critical_species.mine_conf=0.0",
            "critical_species.max_background_fraction=0.25", "critical_species.holdout_fraction=0.3",
            # the untrained model's figures are noise: keep every round, so the cap decides the stop
            "critical_species.fp_tolerance=1000", "critical_species.recall_tolerance=1.0"]
NO_CRITICAL = (1, 3)  # train images whose class-0 (critical) box is removed


class Interrupt(Exception):
    pass


def start_checkpoint(path, nc=3):
    """A YOLOv8n checkpoint whose class logits start at 0, so it fires (score ~0.5) on every frame, and whose
    values differ from any fresh initialisation (a run that dropped them would start from other biases)."""
    import torch

    from tests.yolo_models import yolo_yaml_with_classes
    from trainer import yolo

    torch.manual_seed(0)
    net = yolo.detection_model(yolo_yaml_with_classes(os.path.join(os.path.dirname(path), "cfg"), nc), nc=nc)
    with torch.no_grad():
        for branch in net.model[-1].cv3:
            branch[-1].bias.zero_()
    net.names = {i: "abc"[i] if i < 3 else "c%d" % i for i in range(nc)}
    torch.save({"model": net, "train_args": {"model": "yolov8n.yaml", "imgsz": 64, "task": "detect"},
                "epoch": -1, "optimizer": None}, path)
    return path


def background_pool(folder, count, labelled=1):
    """`count` synthetic background stills under folder/images, plus `labelled` images with a label file."""
    import cv2

    from trainer.data.synth import render_scene

    os.makedirs(os.path.join(folder, "images"))
    os.makedirs(os.path.join(folder, "labels"))
    for i in range(count + labelled):
        image, _, _ = render_scene(np.random.default_rng([5, i]), imgsz=64, classes=3, background=i < count)
        cv2.imwrite(os.path.join(folder, "images", "bg%d.jpg" % i), image)
        if i >= count:
            with open(os.path.join(folder, "labels", "bg%d.txt" % i), "w") as fh:
                fh.write("1 0.5 0.5 0.2 0.2\n")
    return os.path.join(folder, "images")


def tiny_dataset(root):
    data = make_yolo_dataset(root, n_images=4, size=64)
    for i in NO_CRITICAL:
        label = os.path.join(root, "labels", "train", "%d.txt" % i)
        lines = [line for line in open(label).read().splitlines() if not line.startswith("0 ")]
        open(label, "w").write("\n".join(lines) + "\n")
    return data


def config(*extra):
    from trainer.config import load_config

    return load_config(None, SETTINGS + list(extra))


def same_values(model, weights):
    """True when every float tensor of the model equals the checkpoint's (fp16 rounding allowed)."""
    import torch

    from trainer import yolo

    expected = yolo.load_checkpoint(weights)[0].state_dict()
    got = model.state_dict()
    return all(torch.allclose(got[k].float().cpu(), v.float(), atol=2e-3, rtol=2e-3)
               for k, v in expected.items() if v.is_floating_point())


def read_json(path):
    with open(path) as fh:
        return json.load(fh)


@pytest.mark.slow
def test_mining_rounds_fine_tune_from_the_weights_and_resume_reuses_finished_rounds(tmp_path, capsys):
    data = tiny_dataset(str(tmp_path / "data"))
    weights = start_checkpoint(str(tmp_path / "start.pt"))
    negatives = background_pool(str(tmp_path / "negatives"), count=6)
    labelled_negative = os.path.join(negatives, "bg6.jpg")
    out = tmp_path / "out"
    starts = []

    def on_train_start(trainer):
        round_dir = os.path.dirname(str(trainer.save_dir))
        k = int(os.path.basename(round_dir)[len("round"):])
        expected = weights if k == 0 else read_json(str(out / ("round%d" % (k - 1)) / "round.json"))["weights"]
        starts.append((k, same_values(trainer.model, expected)))
        if k == 1 and len(starts) == 2:
            raise Interrupt("simulated crash as round 1 starts training")

    with pytest.raises(Interrupt):
        specialize.run_specialize(config(), data, weights, out, negatives=negatives, progress=False,
                                  callbacks={"on_train_start": on_train_start})
    assert starts == [(0, True), (1, True)]  # fine-tuning continues the given weights, round 1 round 0's
    round0 = read_json(str(out / "round0" / "round.json"))
    selection = read_json(str(out / "round1" / "selection.json"))
    assert not (out / "round1" / "round.json").exists()

    # Resume through the CLI: round 0 is reused (not trained again), round 1 keeps its recorded selection.
    argv = ["--set=" + s for s in SETTINGS] + ["specialize", "--data", data, "--weights", weights, "--out", str(out),
                                                "--negatives", negatives]
    assert main(argv, commands=SPECIALIZE) == 0
    assert "specialize: best round" in capsys.readouterr().out
    assert read_json(str(out / "round0" / "round.json")) == round0
    assert read_json(str(out / "round1" / "selection.json")) == selection

    rounds = read_json(str(out / "rounds.json"))
    names_in_pool = sorted(os.path.join(negatives, "bg%d.jpg" % i) for i in range(6))
    mine, holdout = mining.split_pool(names_in_pool, 0.3, seed=0)
    assert len(holdout) == 2 and len(mine) == 4
    base = 2 * 2 + 2  # two train images hold the critical class, listed twice; two once
    room = max(n for n in range(10) if n / (base + n) <= 0.25)
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert rounds[0]["mined"] == [] and rounds[0]["train_images"] == base
    assert sorted(rounds[1]["mined"]) == mine  # the untrained head fires everywhere: every minable frame
    assert len(rounds[1]["added"]) == room and set(rounds[1]["added"]) <= set(mine)
    assert rounds[1]["backgrounds"] == room and rounds[1]["train_images"] == base + room
    assert sorted(rounds[2]["mined"]) == sorted(set(mine) - set(rounds[1]["added"]))
    assert rounds[2]["added"] == [] and "background cap" in rounds[2]["decision"]
    for r in rounds:
        assert labelled_negative not in r["mined"] and not set(holdout) & set(r["mined"])
    for r in rounds[:2]:
        assert r["kept"] and r["fp_per_background_image"] >= 0.0 and r["first_epoch"]["first_epoch_mAP50"] >= 0.0
    listed = open(str(out / "round1" / "train.txt")).read().split()
    assert len(listed) == base + room and listed[base:] == rounds[1]["added"]

    oversampling = read_json(str(out / "oversampling.json"))
    assert oversampling["before"]["per_class"] == {"a": 2, "b": 4, "c": 4}
    assert oversampling["after"]["per_class"] == {"a": 4, "b": 6, "c": 6}
    assert oversampling["after"]["images"] == base
    metrics = read_json(str(out / "metrics.json"))
    assert metrics["best_round"] in (0, 1) and "round %d" % metrics["best_round"] in metrics["reason"]
    assert metrics["first_epoch"]["start_mAP50"] is not None and "background cap" in metrics["stopped"]
    report = open(str(out / "report.md")).read()
    assert "First fine-tuning epoch" in report and "FP per background image" in report
    assert (out / "training_config.yaml").exists()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("specialize_inputs")
    (root / "bad.pt").write_bytes(b"not a checkpoint")
    return {"data": tiny_dataset(str(root / "data")), "weights": start_checkpoint(str(root / "start.pt")),
            "two_classes": start_checkpoint(str(root / "m2" / "two.pt"), nc=2), "root": root}


@pytest.mark.parametrize("case, argv, message", [
    ("missing weights", ["--weights", "{root}/nope.pt"], "--weights: {root}/nope.pt does not exist"),
    ("folder without weights", ["--weights", "{root}"], "without train/weights/best.pt"),
    ("class count", ["--weights", "{two_classes}"], "has 2 classes but"),
    ("not a checkpoint", ["--weights", "{root}/bad.pt"], "cannot be loaded as an ultralytics checkpoint"),
    ("empty negatives", ["--weights", "{weights}", "--negatives", "{root}/empty"], "(--negatives) "),
])
def test_bad_input_is_one_line_and_writes_nothing(inputs, tmp_path, capsys, case, argv, message):
    os.makedirs(str(inputs["root"] / "empty"), exist_ok=True)
    fill = {k: str(v) for k, v in inputs.items()}
    out = tmp_path / "out"
    argv = ["specialize", "--data", inputs["data"], "--out", str(out)] + [a.format(**fill) for a in argv]
    assert main(argv, commands=SPECIALIZE) == 2
    err = capsys.readouterr().err
    assert message.format(**fill) in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_no_critical_class_makes_oversampling_a_noted_no_op(inputs, tmp_path):
    import yaml

    raw = yaml.safe_load(open(inputs["data"]))
    raw["categories"] = {0: "general", 1: "important", 2: "general"}
    data = str(tmp_path / "data.yaml")
    yaml.safe_dump(raw, open(data, "w"))
    plan = specialize.prepare(config(), data, inputs["weights"], None)
    record = specialize.oversampling_record(plan, 3)
    assert plan.critical == [] and record["before"] == record["after"] and "no critical class" in record["note"]
    assert plan.pool_source == "dataset" and plan.mine == [] and plan.holdout == []  # no background frames
    records = [{"round": 0, "mined": [], "added": [], "backgrounds": 0, "train_images": 4, "figures": {},
                "first_epoch": None, "kept": True, "decision": "kept"}]
    metrics = {"best_round": 0, "reason": "r", "stopped": "s", "weights": "w", "threshold": 0.25}
    text = specialize.report_text(plan, record, {"figures": {}, "mAP50": 0.1}, records, metrics, config().critical_species)
    assert "Note: no critical class" in text and "Nothing to mine" in text


def test_weights_folder_resolves_to_the_baseline_best(tmp_path):
    weights = tmp_path / "baseline" / "train" / "weights"
    weights.mkdir(parents=True)
    (weights / "last.pt").write_bytes(b"x")
    assert specialize.resolve_weights(str(tmp_path / "baseline")) == str(weights / "last.pt")
    (weights / "best.pt").write_bytes(b"x")
    assert specialize.resolve_weights(str(tmp_path / "baseline")) == str(weights / "best.pt")

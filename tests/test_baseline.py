"""Baseline stage: pure helpers on tables; one tiny interrupted-then-resumed training run."""
import json
import os
from types import SimpleNamespace

import pytest

from trainer.errors import ConfigError, DataError
from trainer.stages import baseline

COLOURS = ((0, 0, 255), (0, 255, 0), (255, 0, 0))


def make_yolo_dataset(root, n_images=4, size=96, seed=0):
    """A 3-class YOLO dataset of coloured squares on grey (same layout for train and val);
    returns the data.yaml path. Categories: 0 critical, 1 important, 2 general."""
    import cv2
    import numpy as np
    import yaml

    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        os.makedirs(os.path.join(root, "images", split))
        os.makedirs(os.path.join(root, "labels", split))
        for i in range(n_images):
            image = np.full((size, size, 3), 60, np.uint8)
            lines = []
            for cls, colour in enumerate(COLOURS):
                side = int(rng.integers(size // 6, size // 3))
                x0, y0 = (int(v) for v in rng.integers(0, size - side, 2))
                cv2.rectangle(image, (x0, y0), (x0 + side - 1, y0 + side - 1), colour, -1)
                lines.append("%d %.6f %.6f %.6f %.6f" % (cls, (x0 + side / 2) / size, (y0 + side / 2) / size,
                                                         side / size, side / size))
            cv2.imwrite(os.path.join(root, "images", split, "%d.jpg" % i), image)
            with open(os.path.join(root, "labels", split, "%d.txt" % i), "w") as fh:
                fh.write("\n".join(lines) + "\n")
    data = {"path": str(root), "train": "images/train", "val": "images/val", "names": {0: "a", 1: "b", 2: "c"},
            "categories": {0: "critical", 1: "important", 2: "general"}}
    path = os.path.join(root, "data.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump(data, fh)
    return path


def tiny_config(**overrides):
    values = dict(model="yolov8n.yaml", epochs=1, batch_size=4, imgsz=64, save_period=1, keep_last=3)
    values.update(overrides)
    return SimpleNamespace(**values)


GENERAL = SimpleNamespace(device="cpu", num_workers=0, seed=0)


@pytest.mark.parametrize("names, keep, expected", [
    ([], 3, []),
    (["epoch0.pt"], 3, []),
    (["epoch%d.pt" % e for e in (0, 10, 20, 30, 40)], 3, ["epoch0.pt", "epoch10.pt"]),
    # numeric, not lexical order: epoch9 is older than epoch10
    (["epoch10.pt", "epoch9.pt", "epoch11.pt"], 2, ["epoch9.pt"]),
    (["last.pt", "best.pt", "epoch1.pt", "epoch2.pt", "epoch1.pt.tmp", "xepoch0.pt"], 1, ["epoch1.pt"]),
    (["epoch1.pt", "epoch2.pt"], 0, ["epoch1.pt"]),  # keep at least the newest
])
def test_periodic_checkpoints_to_delete(names, keep, expected):
    assert sorted(baseline.periodic_checkpoints_to_delete(names, keep)) == sorted(expected)


def test_prune_periodic_checkpoints_deletes_only_old_epoch_files(tmp_path):
    for name in ("epoch0.pt", "epoch10.pt", "epoch20.pt", "epoch30.pt", "last.pt", "best.pt"):
        (tmp_path / name).write_bytes(b"x")
    assert baseline.prune_periodic_checkpoints(tmp_path, 3) == ["epoch0.pt"]
    assert sorted(os.listdir(tmp_path)) == ["best.pt", "epoch10.pt", "epoch20.pt", "epoch30.pt", "last.pt"]


RECALL_CASES = [
    # (recall per present class, present class ids, categories)
    ([0.5, 1.0, 0.25], [0, 1, 2], {0: "critical", 1: "critical", 2: "general"}),
    ([0.2], [25], baseline.DEFAULT_36_CATEGORIES),
    ([], [], {0: "critical"}),
    ([0.3, 0.9], [4, 7], {}),
]


@pytest.mark.parametrize("recall, index, categories", RECALL_CASES)
def test_category_recall_is_the_mean_over_present_classes(recall, index, categories):
    got = baseline.category_recall(recall, index, categories)
    assert set(got) == set(baseline.CATEGORIES)
    for category in baseline.CATEGORIES:
        values = [r for r, c in zip(recall, index) if categories.get(c) == category]
        if values:
            assert got[category] == pytest.approx(sum(values) / len(values))
        else:
            assert got[category] is None


@pytest.mark.parametrize("class_id, category", [(0, "critical"), (19, "critical"), (20, "important"),
                                                (28, "important"), (29, "general"), (35, "general")])
def test_default_categories_for_36_classes(class_id, category):
    assert baseline.categories_for({"names": list(range(36))}, 36)[class_id] == category


def test_categories_from_data_yaml_and_errors():
    assert baseline.categories_for({"categories": {"0": "general", 1: "critical"}}, 2) == {0: "general", 1: "critical"}
    assert baseline.categories_for({}, 3) == {}
    with pytest.raises(DataError, match="nice-to-have"):
        baseline.categories_for({"categories": {0: "nice-to-have"}}, 1)


@pytest.mark.parametrize("device, expected", [
    (None, ""), ("", ""), ("cpu", "cpu"), ("0", "0"), (0, "0"), ("cuda:1", "1"), ("0, 1", "0,1"),
    ([0, 1], "0,1"), ((2,), "2"),
])
def test_ultralytics_device(device, expected):
    assert baseline.ultralytics_device(device) == expected


def test_ultralytics_device_rejects_nonsense():
    with pytest.raises(ConfigError, match="gpu0"):
        baseline.ultralytics_device("gpu0")


class Interrupt(Exception):
    pass


@pytest.mark.slow
def test_baseline_trains_resumes_prunes_and_writes_metrics(tmp_path):
    data = make_yolo_dataset(tmp_path / "data")
    out = tmp_path / "out"
    config = tiny_config(epochs=2, keep_last=1)

    def stop_after_first_epoch(trainer):
        if trainer.epoch == 0:
            raise Interrupt("simulated crash after epoch 1 was saved")

    with pytest.raises(Interrupt):
        baseline.run_baseline(config, GENERAL, data, out, callbacks={"on_fit_epoch_end": stop_after_first_epoch})
    weights = out / "train" / "weights"
    assert sorted(os.listdir(weights)) == ["best.pt", "epoch0.pt", "last.pt"]

    starts = []
    result = baseline.run_baseline(config, GENERAL, data, out,
                                   callbacks={"on_train_start": lambda t: starts.append(t.start_epoch)})
    assert starts == [1]  # resumed from last.pt, not restarted
    assert sorted(os.listdir(weights)) == ["best.pt", "epoch1.pt", "last.pt"]  # keep_last=1 pruned epoch0.pt

    with open(result.metrics_path) as fh:
        metrics = json.load(fh)
    assert metrics == result.metrics
    for key in ("mAP50", "mAP50-95", "precision", "recall"):
        assert 0.0 <= metrics[key] <= 1.0
    assert set(metrics["recall_by_category"]) == {"critical", "important", "general"}
    for value in metrics["recall_by_category"].values():
        assert 0.0 <= value <= 1.0  # every category has a class in val
    assert {v["category"] for v in metrics["per_class"].values()} == {"critical", "important", "general"}

    # a finished run is validated again, not retrained
    again = baseline.run_baseline(config, GENERAL, data, out,
                                  callbacks={"on_train_start": lambda t: starts.append(t.start_epoch)})
    assert starts == [1]
    assert again.metrics["mAP50"] == pytest.approx(metrics["mAP50"])

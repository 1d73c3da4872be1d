"""`active select` end to end on small randomized YOLOv8 ONNX models."""
import hashlib
import json
import os
import shutil
import zipfile

import cv2
import numpy as np
import pytest

from edge.bundle_build import build_bundle, read_classes
from trainer.active.package import COCO_PATH, MANIFEST_PATH, read_package
from trainer.active.select import SelectOptions, run_select
from trainer.errors import TrainerError
from tests.yolo_models import random_detector_onnx, random_frames, write_data_yaml
from tests.active_cli import parse, run

pytest.importorskip("onnxruntime")
pytest.importorskip("ultralytics")

NC, IMGSZ = 5, 160


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("active")
    models = [random_detector_onnx(str(root / "models"), NC, IMGSZ, seed=s) for s in (0, 1)]
    data_yaml = write_data_yaml(str(root / "data.yaml"), NC)
    pool = root / "pool"
    random_frames(str(pool / "cam_a"), 6, seed=0)
    random_frames(str(pool / "cam_b"), 4, seed=1)
    # A re-encoded, lightly noised copy of a frame: must never be picked together with its original.
    original = cv2.imread(str(pool / "cam_a" / "frame_000.jpg"))
    noise = np.random.default_rng(5).normal(0, 2, original.shape)
    cv2.imwrite(str(pool / "cam_a" / "frame_000_copy.png"), np.clip(original + noise, 0, 255).astype(np.uint8))
    bundle = root / "bundle"
    build_bundle(str(bundle), [("recall", models[0]), ("balanced", models[1])], read_classes(data_yaml), tta="none")
    return {"root": root, "models": models, "data": data_yaml, "pool": str(pool), "bundle": str(bundle)}


def check_package(path, k):
    manifest, coco = read_package(path)   # verifies every checksum
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        for entry in manifest["images"]:
            data = z.read("images/" + entry["file_name"])
            assert hashlib.sha256(data).hexdigest() == entry["sha256"] == manifest["files"]["images/"
                                                                                         + entry["file_name"]]
            thumb = cv2.imdecode(np.frombuffer(z.read(entry["thumbnail"]), np.uint8), cv2.IMREAD_COLOR)
            assert max(thumb.shape[:2]) <= 256
    assert {COCO_PATH, MANIFEST_PATH} <= names
    assert len(coco["images"]) == len(manifest["images"]) == manifest["k"] == k
    assert [c["id"] for c in coco["categories"]] == list(range(1, NC + 1))
    assert [c["name"] for c in coco["categories"]] == ["species_%d" % i for i in range(NC)]
    image_ids = {im["id"]: im for im in coco["images"]}
    assert all({"id", "file_name", "width", "height"} <= set(im) for im in coco["images"])
    ann_ids = [a["id"] for a in coco["annotations"]]
    assert len(set(ann_ids)) == len(ann_ids)
    for a in coco["annotations"]:
        assert set(a) >= {"id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation", "score"}
        assert 1 <= a["category_id"] <= NC and a["iscrowd"] == 0 and a["segmentation"] == []
        im = image_ids[a["image_id"]]
        x, y, w, h = a["bbox"]
        assert 0 <= x and 0 <= y and x + w <= im["width"] + 0.01 and y + h <= im["height"] + 0.01
        assert a["area"] == pytest.approx(w * h, abs=0.02) and a["score"] >= 0.25
    return manifest, coco


def test_select_writes_a_valid_package(assets, tmp_path):
    out = str(tmp_path / "pkg.zip")
    rc, text = run(["active", "select", "--model", assets["models"][0], "--pool", assets["pool"], "--k", "5",
                    "--out", out, "--strategy", "margin", "--aggregate", "sum", "--names", assets["data"]])
    assert rc == 0 and "selected 5 of 11" in text
    manifest, coco = check_package(out, 5)
    assert coco["annotations"], "the randomized head should give some draft boxes"
    assert manifest["strategy"] == "margin" and manifest["aggregate"] == "sum" and manifest["pool_size"] == 11
    assert manifest["model"]["kind"] == "onnx" and manifest["k_requested"] == 5

    scores = [e["uncertainty"] for e in manifest["images"]]
    assert scores == sorted(scores, reverse=True)
    assert [e["rank"] for e in manifest["images"]] == [1, 2, 3, 4, 5]
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".partial")]


def test_class_names_come_from_the_onnx_metadata(assets, tmp_path):
    summary = run_select(assets["models"][0], assets["pool"], str(tmp_path / "p.zip"), SelectOptions(k=1))
    # ultralytics stores the names it was built with; this test model was built with nc only.
    assert summary["manifest"]["classes"] == [str(i) for i in range(NC)]


def test_near_duplicates_are_not_picked_twice(assets, tmp_path):
    out = str(tmp_path / "all.zip")
    summary = run_select(assets["models"][0], assets["pool"], out, SelectOptions(k=11, strategy="entropy"))
    picked = [e["file_name"] for e in summary["manifest"]["images"]]
    assert summary["k"] == 10
    assert ("cam_a/frame_000.jpg" in picked) != ("cam_a/frame_000_copy.png" in picked)
    # Without suppression every image is taken.
    summary = run_select(assets["models"][0], assets["pool"], out, SelectOptions(k=11, max_distance=0))
    assert summary["k"] == 11


@pytest.mark.parametrize("strategy", ["least_confidence", "entropy"])
def test_selection_is_deterministic(assets, tmp_path, strategy):
    options = SelectOptions(k=4, strategy=strategy, aggregate="max")
    a = run_select(assets["models"][0], assets["pool"], str(tmp_path / "a.zip"), options)
    b = run_select(assets["models"][0], assets["pool"], str(tmp_path / "b.zip"), options)
    assert a["manifest"]["images"] == b["manifest"]["images"]
    assert open(tmp_path / "a.zip", "rb").read() == open(tmp_path / "b.zip", "rb").read()


def test_disagreement_with_an_ensemble_bundle(assets, tmp_path):
    out = str(tmp_path / "ens.zip")
    rc, text = run(["active", "select", "--model", assets["bundle"], "--pool", assets["pool"], "--k", "3",
                    "--out", out, "--strategy", "disagreement"])
    assert rc == 0, text
    manifest, _ = check_package(out, 3)
    assert manifest["model"]["kind"] == "bundle" and len(manifest["model"]["models"]) == 2
    assert all(e["uncertainty"] > 0 for e in manifest["images"])


def test_disagreement_needs_several_models(assets, tmp_path):
    with pytest.raises(TrainerError, match="two or more models"):
        run_select(assets["models"][0], assets["pool"], str(tmp_path / "x.zip"),
                   SelectOptions(k=2, strategy="disagreement"))
    assert not os.path.exists(tmp_path / "x.zip")


def test_bad_inputs_name_themselves(assets, tmp_path):
    with pytest.raises(TrainerError, match="not a folder"):
        run_select(assets["models"][0], str(tmp_path / "nowhere"), str(tmp_path / "x.zip"), SelectOptions(k=2))
    with pytest.raises(TrainerError, match="k is 0"):
        run_select(assets["models"][0], assets["pool"], str(tmp_path / "x.zip"), SelectOptions(k=0))
    with pytest.raises(SystemExit):
        parse(["active", "select", "--model", "m.onnx", "--pool", "p", "--out", "o.zip", "--strategy", "random"])

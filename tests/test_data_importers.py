import json
import os
import shutil

import cv2
import numpy as np
import pytest
import yaml

from trainer.data import importers, importers_coco
from trainer.data import yolo_dataset as yd
from trainer.data.taxonomy import load_taxonomy
from trainer.errors import DataError

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "data")
TAX = load_taxonomy()


def make_image(path, seed, w=100, h=80):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return str(path)


def labels_of(out, name):
    return yd.read_yolo_labels(os.path.join(out, "labels", os.path.splitext(name)[0] + ".txt"))


@pytest.fixture(scope="module")
def coco_import(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("coco")
    for seed, name in enumerate("abcdef"):
        make_image(tmp / "imgs" / (name + ".png"), seed)
    shutil.copyfile(tmp / "imgs" / "a.png", tmp / "imgs" / "g.png")  # duplicate content
    out = tmp / "ds"
    rep = importers.import_dataset("coco", os.path.join(FIXTURES, "fathomnet_coco.json"), str(out), TAX,
                                   source="fathomnet", images_dir=str(tmp / "imgs"))
    return rep, str(out)


def test_coco_import_maps_1_based_categories_and_boxes(coco_import):
    rep, out = coco_import
    ids, boxes = labels_of(out, "a.png")
    w, h = 100, 80
    expected = [[(10 + 20 / 2) / w, (10 + 30 / 2) / h, 20 / w, 30 / h], [(50 + 5) / w, (40 + 5) / h, 10 / w, 10 / h]]
    assert ids.tolist() == [TAX.map_label("green turtle"), TAX.map_label("fish")]
    np.testing.assert_allclose(boxes, expected, atol=1e-6)
    assert yd.read_meta(out)["a.png"]["group"] == "dive7"


def test_coco_import_reports_every_problem(coco_import):
    rep, out = coco_import
    quarantined = {q["name"]: " ".join(q["reasons"]) for q in rep.quarantined}
    assert set(quarantined) == {"b.png", "missing.png", "d.png", "e.png", "g.png"}
    assert rep.unmapped == {"Bathochordaeus": 2}
    assert "coco_url" not in quarantined["missing.png"] and "https://fathomnet.org" in quarantined["missing.png"]
    assert rep.missing_images == ["missing.png"]
    assert rep.duplicates == [{"name": "g.png", "duplicate_of": "a.png"}]
    assert "far outside" in quarantined["d.png"] and "degenerate" in quarantined["e.png"]
    assert (rep.items, rep.imported, rep.backgrounds, rep.clipped_boxes, rep.boxes) == (8, 3, 1, 1, 3)
    assert sorted(os.listdir(os.path.join(out, "images"))) == ["a.png", "c.png", "f.png"]
    assert sorted(os.listdir(os.path.join(out, "quarantine", "images"))) == ["b.png", "d.png", "e.png", "g.png"]
    ids, boxes = labels_of(out, "c.png")  # 91.5 + 10 > 100: clipped to the edge
    np.testing.assert_allclose(boxes[0, [0, 2]], [(91.5 + 100) / 2 / 100, (100 - 91.5) / 100], atol=1e-6)


def test_coco_drop_unmapped_keeps_image_as_reported(tmp_path):
    make_image(tmp_path / "b.png", 1)
    rep = importers.import_dataset("coco", os.path.join(FIXTURES, "fathomnet_coco.json"), str(tmp_path / "ds"),
                                   TAX, images_dir=str(tmp_path), drop_unmapped=True)
    assert rep.unmapped == {"Bathochordaeus": 2}
    assert os.path.exists(tmp_path / "ds" / "images" / "b.png")


@pytest.mark.parametrize("obj, needle", [
    ([], "not a COCO"),
    ({"images": [{"id": 1}]}, "file_name"),
    ({"images": [], "categories": [{"name": "x"}]}, "integer 'id'"),
])
def test_parse_coco_errors(obj, needle):
    with pytest.raises(DataError, match=needle):
        importers_coco.parse_coco(obj)


def test_voc_import(tmp_path):
    src = tmp_path / "voc"
    shutil.copytree(os.path.join(FIXTURES, "voc"), src)
    make_image(src / "JPEGImages" / "reef_0001.jpg", 1, 64, 48)
    make_image(src / "JPEGImages" / "reef_0002.jpg", 2, 64, 48)
    rep = importers.import_dataset("voc", str(src), str(tmp_path / "ds"), TAX)
    ids, boxes = labels_of(tmp_path / "ds", "reef_0001.jpg")
    w, h = 64, 48  # VOC is 1-based: xmin 11 -> 10
    expected = [[(10 + 30) / 2 / w, (4 + 24) / 2 / h, 20 / w, 20 / h], [(40 + 50) / 2 / w, (30 + 40) / 2 / h, 10 / w, 10 / h]]
    assert ids.tolist() == [TAX.map_label("stingray"), TAX.map_label("starfish")]
    np.testing.assert_allclose(boxes, expected, atol=1e-6)
    assert rep.unmapped == {"diver": 1} and [q["name"] for q in rep.quarantined] == ["reef_0002.jpg"]


@pytest.mark.parametrize("text, needle", [("<annotation>", "not valid XML"), ("<a/>", "expected <annotation>"),
                                          ("<annotation><filename/></annotation>", "filename")])
def test_parse_voc_errors(text, needle):
    with pytest.raises(DataError, match=needle):
        importers_coco.parse_voc(text)


def _yolo_source(root, names, fmt_path=None):
    make_image(root / "train" / "images" / "vid1_f000001_jpg.rf.abc123.jpg", 1)
    make_image(root / "train" / "images" / "vid1_f000002_jpg.rf.def456.jpg", 2)
    make_image(root / "valid" / "images" / "vid2_f000001_jpg.rf.0a0b0c.jpg", 3)
    labels = {"train/labels/vid1_f000001_jpg.rf.abc123.txt": "0 0.5 0.5 0.2 0.2\n",
              "train/labels/vid1_f000002_jpg.rf.def456.txt": "",
              "valid/labels/vid2_f000001_jpg.rf.0a0b0c.txt": "1 0.5 0.5 0.2 0.2\n0 0.2 0.2 0.1 0.1\n"}
    for rel, text in labels.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "train/images", "val": "valid/images", "names": names}))


@pytest.mark.parametrize("names", [["fish", "octopus"], {0: "fish", 1: "octopus"}])
def test_yolo_import_remaps_ids(tmp_path, names):
    _yolo_source(tmp_path / "src", names)
    rep = importers.import_dataset("yolo", str(tmp_path / "src"), str(tmp_path / "ds"), TAX)
    assert (rep.imported, rep.boxes, rep.backgrounds, rep.unmapped) == (3, 3, 1, {})
    ids, _ = labels_of(tmp_path / "ds", "vid2_f000001_jpg.rf.0a0b0c.jpg")
    assert ids.tolist() == [TAX.map_label("octopus"), TAX.map_label("fish")]


def test_deepfish_yolo_records_video_group(tmp_path):
    _yolo_source(tmp_path / "src", ["fish", "Fish"])
    importers.import_dataset("deepfish-yolo", str(tmp_path / "src"), str(tmp_path / "ds"), TAX)
    meta = yd.read_meta(tmp_path / "ds")
    assert {m["group"] for m in meta.values()} == {"vid1", "vid2"}
    assert {m["source"] for m in meta.values()} == {"deepfish"}


def test_deepfish_csv_is_ssl_only(tmp_path):
    make_image(tmp_path / "img" / "7398" / "valid" / "7398_F6_f000520.jpg", 1)
    make_image(tmp_path / "img" / "7398" / "empty" / "7398_NF2_f000010.jpg", 2)
    rep = importers.import_dataset("deepfish-csv", os.path.join(FIXTURES, "deepfish"), str(tmp_path / "ds"), TAX,
                                   images_dir=str(tmp_path / "img"))
    assert rep.unlabelled == 2 and rep.imported == 0 and rep.boxes == 0
    assert any(n.startswith(importers.SSL_ONLY_NOTE) for n in rep.notes)
    assert rep.missing_images == ["9907_F1_f000001.jpg"]
    assert sorted(os.listdir(tmp_path / "ds" / "unlabelled" / "images")) == ["7398_F6_f000520.jpg",
                                                                             "7398_NF2_f000010.jpg"]
    assert os.listdir(tmp_path / "ds" / "images") == []


def test_unknown_format_lists_choices(tmp_path):
    with pytest.raises(DataError, match="coco, deepfish-csv, deepfish-yolo, voc, yolo"):
        importers.import_dataset("kitti", str(tmp_path), str(tmp_path / "ds"), TAX)


def test_missing_source_is_named(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        importers.import_dataset("yolo", str(tmp_path / "nowhere"), str(tmp_path / "ds"), TAX)

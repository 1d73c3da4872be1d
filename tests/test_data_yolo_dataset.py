import os

import cv2
import numpy as np
import pytest
import yaml

from trainer.data import yolo_dataset as yd
from trainer.data.taxonomy import load_taxonomy
from trainer.errors import DataError


def make_image(path, seed, w=32, h=24):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return str(path)


@pytest.mark.parametrize("ids, boxes", [
    ([], np.zeros((0, 4))),
    ([3], [[0.5, 0.5, 0.25, 0.125]]),
    ([0, 35], [[0.1, 0.2, 0.05, 0.05], [0.9, 0.8, 0.2, 0.4]]),
])
def test_labels_roundtrip(tmp_path, ids, boxes):
    path = tmp_path / "labels" / "x.txt"
    yd.write_yolo_labels(path, ids, boxes)
    got_ids, got_boxes = yd.read_yolo_labels(path)
    assert got_ids.dtype == np.int32 and got_boxes.shape == (len(ids), 4)
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_allclose(got_boxes, np.reshape(boxes, (-1, 4)), atol=1e-6)
    assert (path.read_text() == "") == (len(ids) == 0)  # an empty file is a background


def test_polygon_becomes_its_bounding_box(tmp_path):
    xs, ys = [0.1, 0.4, 0.3], [0.2, 0.25, 0.6]
    path = tmp_path / "p.txt"
    path.write_text("7 " + " ".join("%g %g" % xy for xy in zip(xs, ys)) + "\n")
    ids, boxes = yd.read_yolo_labels(path)
    expected = [(min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)]
    assert ids.tolist() == [7]
    np.testing.assert_allclose(boxes[0], expected, atol=1e-6)


@pytest.mark.parametrize("text, needle", [
    ("0 0.5 0.5 0.1\n", "5 columns"),
    ("a 0.5 0.5 0.1 0.1\n", "numbers"),
    ("1.5 0.5 0.5 0.1 0.1\n", "not an integer"),
])
def test_malformed_labels_name_file_and_line(tmp_path, text, needle):
    path = tmp_path / "bad.txt"
    path.write_text("0 0.5 0.5 0.1 0.1\n" + text)
    with pytest.raises(DataError, match=needle) as e:
        yd.read_yolo_labels(path)
    assert "bad.txt:2" in str(e.value)


@pytest.mark.parametrize("image, label", [
    ("/d/train/images/a.jpg", "/d/train/labels/a.txt"),
    ("/d/images/x/images/b.png", "/d/images/x/labels/b.txt"),
    ("/d/flat/c.jpg", "/d/flat/c.txt"),
])
def test_label_path_for(image, label):
    assert yd.label_path_for(image.replace("/", os.sep)) == label.replace("/", os.sep)


@pytest.mark.parametrize("names", [["fish", "shark"], {0: "fish", 1: "shark"}])
def test_read_data_yaml_names_and_relative_path(tmp_path, names):
    root = tmp_path / "ds"
    make_image(root / "train" / "images" / "a.jpg", 1)
    make_image(root / "valid" / "images" / "b.jpg", 2)
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "data.yaml").write_text(yaml.safe_dump(
        {"path": "../ds", "train": "train/images", "val": "valid/images", "names": names}))
    got_names, splits = yd.read_data_yaml(tmp_path / "cfg" / "data.yaml")
    assert got_names == ["fish", "shark"]
    assert [os.path.basename(p) for p in splits["train"]] == ["a.jpg"]
    assert [os.path.basename(p) for p in splits["val"]] == ["b.jpg"]


def test_read_data_yaml_without_splits_says_what_is_expected(tmp_path):
    (tmp_path / "data.yaml").write_text("names: [fish]\n")
    with pytest.raises(DataError, match="train"):
        yd.read_data_yaml(tmp_path / "data.yaml")


def _records(tmp_path, n, offset=0):
    return [yd.Record("img%d.jpg" % (i + offset), make_image(tmp_path / "src" / ("img%d.jpg" % (i + offset)), i + offset),
                      np.array([29], np.int32), np.array([[0.5, 0.5, 0.2, 0.2]], np.float32), meta={"group": "g"})
            for i in range(n)]


def test_merge_creates_dataset_with_data_yaml(tmp_path):
    tax = load_taxonomy()
    out = tmp_path / "ds"
    bad = yd.Record("bad.jpg", None, reasons=["missing image bad.jpg"])
    written = yd.merge_into(out, _records(tmp_path, 2) + [bad], tax)
    assert written == ["img0.jpg", "img1.jpg"]
    assert sorted(os.listdir(out / "images")) == written
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["nc"] == len(tax) and data["names"][0] == tax.names[0]
    assert data["path"] == str(out) and {"train", "val", "test"} <= set(data)
    assert data["categories"] == tax.category_of_ids()
    assert "bad.jpg" in (out / "quarantine" / "reasons.json").read_text()
    assert not [p for p in os.listdir(tmp_path) if "staging" in p]


def test_merge_into_existing_renames_clashes(tmp_path):
    tax = load_taxonomy()
    out = tmp_path / "ds"
    yd.merge_into(out, _records(tmp_path, 2), tax)
    written = yd.merge_into(out, _records(tmp_path, 1), tax)
    assert written == ["img0_1.jpg"]
    assert set(yd.read_meta(out)) == {"img0.jpg", "img1.jpg", "img0_1.jpg"}


def test_merge_failure_leaves_dataset_unchanged(tmp_path, monkeypatch):
    tax = load_taxonomy()
    out = tmp_path / "ds"
    yd.merge_into(out, _records(tmp_path, 2), tax)
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    meta_before = (out / "meta.json").read_text()
    real_replace, calls = os.replace, []

    def flaky_replace(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(yd.os, "replace", flaky_replace)
    with pytest.raises(DataError, match="undone"):
        yd.merge_into(out, _records(tmp_path, 3, offset=10), tax)
    monkeypatch.undo()
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before
    assert (out / "meta.json").read_text() == meta_before
    assert not [p for p in os.listdir(tmp_path) if "staging" in p]

import json
import os

import cv2
import numpy as np
import pytest

from trainer.data import report, validate
from trainer.data import yolo_dataset as yd
from trainer.data.taxonomy import load_taxonomy

TOL = validate.CLIP_TOL


def make_image(path, seed, w=40, h=30):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return str(path)


def xyxy(x0, y0, x1, y1):
    return [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]


@pytest.mark.parametrize("ids, boxes, expected, n_clipped, problem", [
    ([], [], [], 0, None),
    ([1], [xyxy(0.1, 0.1, 0.3, 0.4)], [xyxy(0.1, 0.1, 0.3, 0.4)], 0, None),
    ([1], [xyxy(-TOL / 2, 0.1, 0.3, 0.4)], [xyxy(0, 0.1, 0.3, 0.4)], 1, None),
    ([1], [xyxy(0.5, 0.5, 1 + TOL / 2, 1 + TOL / 4)], [xyxy(0.5, 0.5, 1, 1)], 1, None),
    ([1], [xyxy(0.5, 0.5, 1 + 3 * TOL, 0.9)], None, 1, "far outside"),
    ([1], [[0.5, 0.5, 0.0, 0.1]], None, 0, "degenerate"),
    ([1], [[0.5, 0.5, -0.1, 0.1]], None, 0, "degenerate"),
    ([36], [xyxy(0.1, 0.1, 0.3, 0.4)], None, 0, "unknown class id"),
    ([-1], [xyxy(0.1, 0.1, 0.3, 0.4)], None, 0, "unknown class id"),
])
def test_check_boxes(ids, boxes, expected, n_clipped, problem):
    got_ids, got, clipped, problems = validate.check_boxes(ids, boxes, 36)
    assert got_ids.tolist() == list(ids)
    assert clipped == n_clipped
    if problem is None:
        assert problems == []
        np.testing.assert_allclose(got, np.reshape(expected, (-1, 4)), atol=1e-6)
    else:
        assert any(problem in p for p in problems)


def test_check_boxes_min_size_in_pixels():
    w = 100
    ok = validate.check_boxes([0], [[0.5, 0.5, 1.0 / w, 0.1]], 36, width=w, height=w)[3]
    tiny = validate.check_boxes([0], [[0.5, 0.5, 0.5 / w, 0.1]], 36, width=w, height=w)[3]
    assert ok == [] and "degenerate" in tiny[0]


def test_xyxy_abs_to_xywhn():
    got = validate.xyxy_abs_to_xywhn([[10, 20, 30, 60]], 100, 80)
    np.testing.assert_allclose(got, [[20 / 100, 40 / 80, 20 / 100, 40 / 80]])


def test_inspect_image_rejects_garbage_and_truncation(tmp_path):
    good = make_image(tmp_path / "g.jpg", 0, 64, 48)
    assert validate.inspect_image(good)[:2] == (64, 48)
    (tmp_path / "x.jpg").write_bytes(b"not an image")
    data = open(good, "rb").read()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    for name in ("x.jpg", "t.jpg", "missing.jpg"):
        with pytest.raises(validate.DataError, match=name):
            validate.inspect_image(str(tmp_path / name))


@pytest.fixture
def messy_dataset(tmp_path):
    root = tmp_path / "ds"
    rows = {  # name: (seed, label text or None for no label file)
        "ok.jpg": (1, "0 0.5 0.5 0.2 0.2\n20 0.3 0.3 0.1 0.1\n"),
        "bg.jpg": (2, ""),
        "clip.jpg": (3, "29 %f 0.5 0.2 0.2\n" % (0.9 + TOL / 2)),
        "far.jpg": (4, "29 1.5 0.5 0.2 0.2\n"),
        "unknown.jpg": (5, "99 0.5 0.5 0.2 0.2\n"),
        "nolabel.jpg": (6, None),
        "dup.jpg": (2, ""),  # same pixels as bg.jpg, listed after it
    }
    for name, (seed, text) in rows.items():
        make_image(root / "images" / name, seed)
        if text is not None:
            (root / "labels").mkdir(parents=True, exist_ok=True)
            (root / "labels" / (name[:-4] + ".txt")).write_text(text)
    (root / "images" / "broken.jpg").write_bytes(b"\xff\xd8garbage")
    (root / "labels" / "broken.txt").write_text("")
    (root / "labels" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    return root


def test_validate_dataset_counts_every_problem(messy_dataset):
    tax = load_taxonomy()
    rep = validate.validate_dataset(str(messy_dataset), tax)
    bad = {b["name"]: " ".join(b["reasons"]) for b in rep.bad}
    assert set(bad) == {"far.jpg", "unknown.jpg", "nolabel.jpg", "dup.jpg", "broken.jpg"}
    assert "duplicate of" in bad["dup.jpg"] and "unreadable" in bad["broken.jpg"]
    assert rep.duplicates == [{"name": "dup.jpg", "duplicate_of": "bg.jpg"}]
    assert rep.missing_images == ["orphan"]
    assert (rep.images, rep.boxes, rep.backgrounds, rep.clipped_boxes) == (3, 3, 1, 1)
    assert rep.category_counts["critical"]["boxes"] == 1 and rep.category_counts["important"]["boxes"] == 1
    assert rep.category_counts["general"] == {"classes": 7, "boxes": 1, "images": 1}
    assert not rep.ok and rep.quarantined == 0 and os.path.exists(messy_dataset / "images" / "far.jpg")


def test_validate_fix_quarantines_and_clips(messy_dataset):
    tax = load_taxonomy()
    rep = validate.validate_dataset(str(messy_dataset), tax, fix=True)
    assert rep.quarantined == 5
    q = messy_dataset / "quarantine"
    assert sorted(os.listdir(q / "images")) == ["broken.jpg", "dup.jpg", "far.jpg", "nolabel.jpg", "unknown.jpg"]
    reasons = json.loads((q / "reasons.json").read_text())
    assert {r["name"] for r in reasons} == set(os.listdir(q / "images")) and all(r["reasons"] for r in reasons)
    again = validate.validate_dataset(str(messy_dataset), tax)
    assert again.bad == [] and again.clipped_boxes == 0 and again.images == 3


def test_report_files(messy_dataset, tmp_path):
    tax = load_taxonomy()
    rep = validate.validate_dataset(str(messy_dataset), tax)
    paths = report.write_report(rep, str(tmp_path / "rep"), "validation", "Validation", tax)
    assert [os.path.basename(p) for p in paths] == ["validation.json", "validation.md", "validation_classes.png"]
    md = open(paths[1]).read()
    assert "| category | classes | boxes | images |" in md and "| critical | 20 | 1 | 1 |" in md
    assert "far.jpg" in md
    assert json.load(open(paths[0]))["backgrounds"] == 1
    assert cv2.imread(paths[2]) is not None

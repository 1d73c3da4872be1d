"""`active import`: a package goes to a "vendor", comes back edited, and is validated and merged all-or-nothing."""
import copy
import json
import os
import shutil

import cv2
import numpy as np
import pytest

from edge.detections import Detections
from trainer.active.package import read_package, write_package
from trainer.active.vendor_import import check_box
from trainer.data.yolo_dataset import read_yolo_labels
from tests.yolo_models import random_frames
from tests.active_cli import run

NAMES = ["species_0", "species_1", "species_2"]


def write_dataset_yaml(folder):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "data.yaml"), "w") as f:
        f.write("path: %s\ntrain: images\nval: images\nnc: 3\nnames: {0: species_0, 1: species_1, 2: species_2}\n"
                "categories: {0: critical, 1: important, 2: general}\n" % folder)


def write_taxonomy(path):
    with open(path, "w") as f:
        f.write("classes:\n" + "".join("  - {id: %d, name: %s, category: %s}\n" % (i, n, c) for i, (n, c) in
                                       enumerate(zip(NAMES, ("critical", "important", "general")))))
    return str(path)


def snapshot(folder):
    """Every file under folder with its bytes: equal snapshots mean nothing changed."""
    out = {}
    for root, _dirs, files in os.walk(folder):
        for f in files:
            path = os.path.join(root, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = fh.read()
    return out


@pytest.fixture
def package(tmp_path):
    frames = random_frames(str(tmp_path / "pool" / "site1"), 3, seed=4)
    selected = []
    for i, path in enumerate(frames):
        h, w = cv2.imread(path).shape[:2]
        det = Detections([[10, 10, 60, 50], [20, 30, 80, 90]][: i + 1], [0.9, 0.4][: i + 1], [0, 2][: i + 1])
        selected.append({"file_name": "site1/" + os.path.basename(path), "path": path, "width": w, "height": h,
                         "uncertainty": 1.0 - i * 0.1, "detections": det})
    out = str(tmp_path / "pkg.zip")
    write_package(out, selected, NAMES, {"model": {"kind": "test"}, "strategy": "margin", "aggregate": "sum",
                                         "k": 3, "pool_size": 3})
    manifest, coco = read_package(out)
    return {"zip": out, "coco": coco, "manifest": manifest, "pool": str(tmp_path / "pool")}


def vendor_edit(coco):
    """What a labelling tool sends back: its own category numbering, a box moved, one added, one deleted."""
    coco = copy.deepcopy(coco)
    renumber = {c["id"]: 10 + (len(coco["categories"]) - c["id"]) for c in coco["categories"]}
    for c in coco["categories"]:
        c["id"] = renumber[c["id"]]
        c["name"] = c["name"].replace("_", " ").title()   # "Species 0": matched by normalised name
    coco["categories"].append({"id": 99, "name": "unused label"})
    for a in coco["annotations"]:
        a["category_id"] = renumber[a["category_id"]]
        a.pop("score")
    coco["annotations"][0]["bbox"] = [5.0, 6.0, 40.0, 30.0]
    coco["annotations"] = [a for a in coco["annotations"] if a["id"] != 3]   # image 2 loses a box
    coco["annotations"].append({"id": 100, "image_id": 1, "category_id": renumber[2], "bbox": [0, 0, 20, 10],
                                "area": 200, "iscrowd": 0, "segmentation": []})
    return coco


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)
    return str(path)


def test_round_trip_merges_by_category_name(package, tmp_path):
    coco = vendor_edit(package["coco"])
    ann = write_json(tmp_path / "annotated.json", coco)
    ds = str(tmp_path / "ds")
    write_dataset_yaml(ds)
    rc, text = run(["active", "import", "--coco", ann, "--into", ds, "--package", package["zip"]])
    assert rc == 0, text
    assert sorted(os.listdir(os.path.join(ds, "images"))) == ["site1__frame_%03d.jpg" % i for i in range(3)]
    expected = {}
    by_id = {im["id"]: im for im in coco["images"]}
    names = {c["id"]: c["name"] for c in coco["categories"]}
    for a in coco["annotations"]:
        im = by_id[a["image_id"]]
        x, y, w, h = a["bbox"]
        class_id = NAMES.index(names[a["category_id"]].lower().replace(" ", "_"))
        expected.setdefault(im["file_name"], []).append(
            [class_id, (x + w / 2) / im["width"], (y + h / 2) / im["height"], w / im["width"], h / im["height"]])
    for im in coco["images"]:
        ids, xywhn = read_yolo_labels(os.path.join(ds, "labels", im["file_name"].replace("/", "__")[:-4] + ".txt"))
        got = np.asarray(sorted([[int(c)] + list(b) for c, b in zip(ids, xywhn)])).reshape(-1, 5)
        want = np.asarray(sorted(expected.get(im["file_name"], []))).reshape(-1, 5)
        assert got.shape == want.shape and np.allclose(got, want, atol=1e-5)
    report = json.load(open(tmp_path / "annotated.import_report.json"))
    assert report["ok"] and report["merged"] and report["annotations"] == len(coco["annotations"])
    meta = json.load(open(os.path.join(ds, "meta.json")))
    assert meta["site1__frame_000.jpg"]["source"] == "active"
    # The same annotations again: already in the dataset, rejected.
    before = snapshot(ds)
    rc, _ = run(["active", "import", "--coco", ann, "--into", ds, "--package", package["zip"]])
    assert rc == 1 and snapshot(ds) == before


def _unknown_category(coco, pool):
    coco["annotations"][0]["category_id"] = 42


def _unmapped_name(coco, pool):
    coco["categories"][0]["name"] = "sea cucumber"


def _outside(coco, pool):
    coco["annotations"][0]["bbox"] = [300, 10, 50, 20]


def _degenerate(coco, pool):
    coco["annotations"][1]["bbox"] = [10, 10, 0, 15]


def _malformed(coco, pool):
    coco["annotations"][1]["bbox"] = [10, 10, "wide"]


def _duplicate_ids(coco, pool):
    coco["annotations"][1]["id"] = coco["annotations"][0]["id"]


def _missing_image(coco, pool):
    coco["images"].append({"id": 77, "file_name": "site1/ghost.jpg", "width": 10, "height": 10})


def _not_in_package(coco, pool):
    extra = os.path.join(pool, "site1", "extra.jpg")
    cv2.imwrite(extra, np.full((40, 40, 3), 90, np.uint8))
    coco["images"].append({"id": 78, "file_name": "site1/extra.jpg", "width": 40, "height": 40})


def _checksum(coco, pool):
    path = os.path.join(pool, "site1", "frame_001.jpg")
    image = cv2.imread(path)
    image[0, 0] = 255 - image[0, 0]
    cv2.imwrite(path, image)


def _size_mismatch(coco, pool):
    coco["images"][0]["width"] += 7


BREAKAGES = [
    (_unknown_category, "unknown_category"), (_unmapped_name, "unknown_category"), (_outside, "box_outside_image"),
    (_degenerate, "degenerate_box"), (_malformed, "malformed_box"), (_duplicate_ids, "duplicate_annotation_id"),
    (_missing_image, "missing_image"), (_not_in_package, "not_in_package"), (_checksum, "checksum_mismatch"),
    (_size_mismatch, "size_mismatch"),
]


@pytest.mark.parametrize("break_it, kind", BREAKAGES, ids=[k for _, k in BREAKAGES])
@pytest.mark.parametrize("dataset_exists", [True, False])
def test_bad_annotations_change_nothing(package, tmp_path, break_it, kind, dataset_exists):
    ds = str(tmp_path / "ds")
    if dataset_exists:
        write_dataset_yaml(ds)
        os.makedirs(os.path.join(ds, "images"))
        os.makedirs(os.path.join(ds, "labels"))
        cv2.imwrite(os.path.join(ds, "images", "old.jpg"), np.zeros((8, 8, 3), np.uint8))
        with open(os.path.join(ds, "labels", "old.txt"), "w") as f:
            f.write("1 0.5 0.5 0.2 0.2\n")
    before = snapshot(ds) if dataset_exists else None
    coco = copy.deepcopy(package["coco"])
    break_it(coco, package["pool"])
    ann = write_json(tmp_path / "bad.json", coco)
    reports = tmp_path / "reports"
    rc, text = run(["active", "import", "--coco", ann, "--images", package["pool"], "--into", ds,
                    "--package", package["zip"], "--report", str(reports),
                    "--taxonomy", write_taxonomy(tmp_path / "taxonomy.yaml")])
    assert rc == 1 and "REJECTED" in text
    if dataset_exists:
        assert snapshot(ds) == before
    else:
        assert not os.path.exists(ds)
    report = json.load(open(reports / "bad.import_report.json"))
    assert not report["ok"] and not report["merged"]
    assert kind in {p["kind"] for p in report["problems"]}, report["problems"]
    assert kind in open(reports / "bad.import_report.txt").read()
    assert not [f for f in os.listdir(tmp_path) if ".staging" in f]


def test_every_problem_is_reported_not_just_the_first(package, tmp_path):
    coco = copy.deepcopy(package["coco"])
    for break_it in (_unknown_category, _degenerate, _missing_image, _outside):
        break_it(coco, package["pool"])
    ann = write_json(tmp_path / "bad.json", coco)
    rc, _ = run(["active", "import", "--coco", ann, "--images", package["pool"], "--into", str(tmp_path / "ds"),
                 "--taxonomy", write_taxonomy(tmp_path / "taxonomy.yaml")])
    report = json.load(open(tmp_path / "bad.import_report.json"))
    assert rc == 1 and {"unknown_category", "degenerate_box", "missing_image",
                        "box_outside_image"} <= {p["kind"] for p in report["problems"]}


@pytest.mark.parametrize("bbox, expected_kind, expected_xyxy", [
    ([10, 20, 30, 40], None, [10, 20, 40, 60]),
    ([-0.5, 0, 30, 40], None, [0, 0, 29.5, 40]),          # within the 1 px tolerance: clipped
    ([-3, 0, 30, 40], "box_outside_image", None),
    ([90, 90, 20, 20], "box_outside_image", None),       # image is 100 x 100
    ([10, 10, 0.5, 40], "degenerate_box", None),
    ([10, 10, -5, 40], "degenerate_box", None),
    ([10, 10, 5], "malformed_box", None),
    ([10, 10, float("nan"), 5], "malformed_box", None),
])
def test_check_box(bbox, expected_kind, expected_xyxy):
    xyxy, kind, _ = check_box(bbox, 100, 100)
    assert kind == expected_kind
    if expected_xyxy is not None:
        assert xyxy == pytest.approx(expected_xyxy)


# --- bad vendor files (issue 8): every fault is named with where it is; nothing is merged ---------------

def _secret_image(tmp_path):
    """An image outside the images folder that a crafted file_name must not reach."""
    path = str(tmp_path / "secret.jpg")
    cv2.imwrite(path, np.full((30, 40, 3), 200, np.uint8))
    return path


def _dotdot(tmp_path, pool):
    return "../" + os.path.basename(_secret_image(tmp_path))


def _absolute(tmp_path, pool):
    return _secret_image(tmp_path)


def _symlink(tmp_path, pool):
    os.symlink(_secret_image(tmp_path), os.path.join(pool, "site1", "link.jpg"))
    return "site1/link.jpg"


@pytest.mark.parametrize("make_name, kind", [(_dotdot, "bad_file_name"), (_absolute, "bad_file_name"),
                                             (_symlink, "outside_images_folder")],
                         ids=["dotdot", "absolute", "symlink"])
def test_file_name_outside_the_images_folder_is_refused(package, tmp_path, make_name, kind):
    coco = copy.deepcopy(package["coco"])
    name = make_name(tmp_path, package["pool"])
    coco["images"].append({"id": 50, "file_name": name, "width": 40, "height": 30})
    ann = write_json(tmp_path / "bad.json", coco)
    ds = str(tmp_path / "ds")
    rc, text = run(["active", "import", "--coco", ann, "--images", package["pool"], "--into", ds,
                    "--taxonomy", write_taxonomy(tmp_path / "taxonomy.yaml")])
    assert rc == 1 and not os.path.exists(ds), text
    entry = "images[%d]" % (len(coco["images"]) - 1)
    problems = json.load(open(tmp_path / "bad.import_report.json"))["problems"]
    assert [(p["kind"], p["at"]) for p in problems] == [(kind, entry)], problems
    assert entry + ".file_name" in problems[0]["message"] and name in problems[0]["message"]


def _set(path, value):
    """A breakage setting coco[path[0]][path[1]]...[path[-1]] = value."""
    def apply(coco):
        target = coco
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return apply


# (breakage, expected (kind, where) pairs: where is the entry the report names).
TYPE_FAULTS = [
    ("file_name-int", _set(["images", 0, "file_name"], 5), [("structure", "images[0]")]),
    ("file_name-list", _set(["images", 1, "file_name"], ["a.jpg"]), [("structure", "images[1]")]),
    ("file_name-nul", _set(["images", 1, "file_name"], "site1/a\x00.jpg"), [("bad_file_name", "images[1]")]),
    ("image-id-list", _set(["images", 0, "id"], [1]), [("bad_id", "images[0]")]),
    ("image-id-dict", _set(["images", 2, "id"], {"id": 3}), [("bad_id", "images[2]")]),
    ("image-width-text", _set(["images", 0, "width"], "wide"), [("structure", "images[0]")]),
    ("annotation-id-list", _set(["annotations", 0, "id"], [1]), [("bad_id", "annotations[0]")]),
    ("image_id-dict", _set(["annotations", 1, "image_id"], {"id": 1}), [("bad_id", "annotations[1]")]),
    ("category_id-list", _set(["annotations", 2, "category_id"], [0]), [("bad_id", "annotations[2]")]),
    ("category-id-list", _set(["categories", 0, "id"], [0]), [("bad_id", "categories[0]")]),
    ("category-name-dict", _set(["categories", 1, "name"], {"en": "x"}), [("structure", "categories[1]")]),
    ("categories-a-dict", _set(["categories"], {"0": "species_0"}), [("structure", "categories")]),
    ("image-not-an-object", _set(["images", 1], "site1/frame_001.jpg"), [("structure", "images[1]")]),
    ("bbox-nested", _set(["annotations", 1, "bbox"], [[1, 2], [3, 4]]), [("malformed_box", "annotations[1]")]),
    # Every fault of one entry, not only its first.
    ("image-all-faults", _set(["images", 0], {"id": [1], "file_name": "../x.jpg", "width": -3}),
     [("bad_id", "images[0]"), ("bad_file_name", "images[0]"), ("structure", "images[0]")]),
    ("annotation-all-faults", _set(["annotations", 0], {"id": [1], "image_id": 999, "category_id": 42,
                                                        "bbox": [1, 2, "x"], "iscrowd": 1}),
     [("bad_id", "annotations[0]"), ("unknown_image", "annotations[0]"), ("unknown_category", "annotations[0]"),
      ("crowd", "annotations[0]"), ("malformed_box", "annotations[0]")]),
]


@pytest.mark.parametrize("break_it, expected", [c[1:] for c in TYPE_FAULTS], ids=[c[0] for c in TYPE_FAULTS])
def test_wrong_types_are_reported_with_where_they_are(package, tmp_path, break_it, expected):
    coco = copy.deepcopy(package["coco"])
    break_it(coco)
    ann = write_json(tmp_path / "bad.json", coco)
    ds = str(tmp_path / "ds")
    rc, text = run(["active", "import", "--coco", ann, "--into", ds, "--package", package["zip"],
                    "--taxonomy", write_taxonomy(tmp_path / "taxonomy.yaml")])
    assert rc == 1 and "REJECTED" in text and not os.path.exists(ds)
    problems = json.load(open(tmp_path / "bad.import_report.json"))["problems"]
    broken = expected[0][1]
    assert sorted((p["kind"], p["at"]) for p in problems if p["at"] == broken) == sorted(expected), problems
    # Besides, only annotations pointing at an id that no intact entry has any more.
    assert {p["kind"] for p in problems if p["at"] != broken} <= {"unknown_image", "unknown_category"}, problems
    assert all(p["message"].startswith(p["at"]) for p in problems), problems


@pytest.mark.parametrize("where, text_of", [
    ("annotations[1].segmentation[0][0][0]", lambda coco, deep: json.dumps(coco).replace('"DEEP"', deep)),
    ("[0][0][0]", lambda coco, deep: deep),
])
def test_deeply_nested_json_is_a_named_problem(package, tmp_path, where, text_of):
    depth = 100000      # past the json module's recursion limit
    coco = copy.deepcopy(package["coco"])
    coco["annotations"][1]["segmentation"] = "DEEP"
    path = str(tmp_path / "bad.json")
    with open(path, "w") as f:
        f.write(text_of(coco, "[" * depth + "]" * depth))
    ds = str(tmp_path / "ds")
    rc, text = run(["active", "import", "--coco", path, "--into", ds, "--package", package["zip"],
                    "--taxonomy", write_taxonomy(tmp_path / "taxonomy.yaml")])
    problems = json.load(open(tmp_path / "bad.import_report.json"))["problems"]
    assert rc == 1 and not os.path.exists(ds)
    assert [p["kind"] for p in problems] == ["too_deep"] and problems[0]["at"].startswith(where), problems


def test_non_utf8_coco_file_name_still_gets_its_report(package, tmp_path):
    """Linux file names are bytes: a COCO file whose name is not UTF-8 is imported and reported."""
    name = os.fsdecode(os.fsencode(str(tmp_path)) + b"/r\xe9sultat.json")
    with open(name, "w") as f:
        json.dump(vendor_edit(package["coco"]), f)
    ds = str(tmp_path / "ds")
    write_dataset_yaml(ds)
    rc, text = run(["active", "import", "--coco", name, "--into", ds, "--package", package["zip"]])
    assert rc == 0, text
    report_txt = os.fsdecode(os.fsencode(str(tmp_path)) + b"/r\xe9sultat.import_report.txt")
    assert "merged 3 images" in open(report_txt, encoding="utf-8").read()

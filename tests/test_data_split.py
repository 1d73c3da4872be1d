import os
import random

import cv2
import numpy as np
import pytest
import yaml

from trainer.data import split
from trainer.data import yolo_dataset as yd
from trainer.data.taxonomy import CATEGORIES, load_taxonomy
from trainer.errors import DataError

TAX = load_taxonomy()


@pytest.mark.parametrize("name, key", [
    ("7117_Caranx_sexfasciatus_juvenile_f000004_jpg.rf.4d67296de04ef75f519c841c5ae90c14.jpg",
     "7117_Caranx_sexfasciatus_juvenile"),
    ("7117_Caranx_sexfasciatus_juvenile_f000004.jpg", "7117_Caranx_sexfasciatus_juvenile"),
    ("7398_NF2_f000010.jpg", "7398_NF2"),
    ("IMG_2274_jpeg_jpg.rf.2f319e949748145fb22dcb52bb325a0c.jpg", "IMG_2274"),
    ("dive3-frame0042.png", "dive3"),
    ("single.jpg", "single"),
])
def test_default_group_key(name, key):
    assert split.default_group_key(name) == key


@pytest.mark.parametrize("pattern, name, key", [
    (r"^(\d+)_", "7117_Caranx_f000004.jpg", "7117"),
    (r"^(?P<group>[a-z]+)", "reefcam_0001.jpg", "reefcam"),
    (r"cam\d", "site_cam2_0001.jpg", "cam2"),
    (r"^(\d+)_", "nodigits.jpg", None),
])
def test_pattern_group_key(pattern, name, key):
    assert split.pattern_group_key(pattern)(name) == key


def test_bad_pattern_is_named():
    with pytest.raises(DataError, match="group-pattern"):
        split.pattern_group_key("(")


def synthetic_groups(n_groups, seed):
    """Groups of 1..40 frames; each group is one category or background, like one video."""
    rng = random.Random(seed)
    groups = {}
    for g in range(n_groups):
        size = rng.randint(1, 40)
        v = np.zeros(len(split.DIMS), np.int64)
        v[0] = size
        v[rng.choice([1, 1, 2, 3, 3, 3, 4])] = size  # critical, important, general or background
        groups["g%03d" % g] = v
    return groups


@pytest.mark.parametrize("ratios", [(0.7, 0.15, 0.15), (0.8, 0.1, 0.1), (0.5, 0.25, 0.25)])
@pytest.mark.parametrize("seed", [0, 1])
def test_assign_groups_hits_ratios_and_covers_categories(ratios, seed):
    groups = synthetic_groups(300, seed)
    assignment = split.assign_groups(groups, ratios, seed)
    assert set(assignment) == set(groups)  # every group in exactly one split
    totals = np.zeros((3, len(split.DIMS)))
    for g, s in assignment.items():
        totals[s] += groups[g]
    fractions = totals / totals.sum(axis=0)
    np.testing.assert_allclose(fractions[:, 0], ratios, atol=0.02)
    for d in range(1, len(split.DIMS)):
        np.testing.assert_allclose(fractions[:, d], ratios, atol=0.05)
        assert (totals[:, d] > 0).all()


def test_rare_category_reaches_every_split():
    groups = synthetic_groups(60, 3)
    for g in list(groups):
        groups[g][1] = 0  # no critical anywhere...
    for name in ("r1", "r2", "r3"):  # ...except three small videos
        groups[name] = np.array([2, 2, 0, 0, 0])
    assignment = split.assign_groups(groups, (0.7, 0.15, 0.15), 0)
    assert sorted(assignment[n] for n in ("r1", "r2", "r3")) == [0, 1, 2]


def test_assign_groups_is_deterministic_by_seed():
    groups = synthetic_groups(100, 0)
    assert split.assign_groups(groups, (0.7, 0.15, 0.15), 5) == split.assign_groups(groups, (0.7, 0.15, 0.15), 5)


@pytest.mark.parametrize("ratios", [(0.7, 0.2, 0.2), (1.2, -0.2), (1.0,)])
def test_bad_ratios_raise(ratios):
    with pytest.raises(DataError, match="ratios"):
        split.assign_groups({"a": np.ones(len(split.DIMS))}, ratios)


@pytest.fixture(scope="module")
def video_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("split") / "ds"
    img = np.zeros((8, 8, 3), np.uint8)
    rng = random.Random(0)
    class_for = {"critical": 0, "important": 20, "general": 29}
    for v in range(40):
        cat = rng.choice(CATEGORIES + ("background",))
        for f in range(rng.randint(1, 6)):
            name = "%04d_site_f%06d_jpg.rf.%08x" % (v, f, rng.getrandbits(32))
            os.makedirs(root / "images", exist_ok=True)
            cv2.imwrite(str(root / "images" / (name + ".jpg")), img)
            ids = [] if cat == "background" else [class_for[cat]]
            yd.write_yolo_labels(root / "labels" / (name + ".txt"), ids, [[0.5, 0.5, 0.2, 0.2]] * len(ids))
    return root


def test_split_dataset_keeps_videos_together(video_dataset, tmp_path):
    out = tmp_path / "split"
    rep = split.split_dataset(str(video_dataset), str(out), TAX, seed=0)
    lists = {s: (out / (s + ".txt")).read_text().split() for s in split.SPLITS}
    assert sum(len(v) for v in lists.values()) == len(os.listdir(video_dataset / "images"))
    videos = {s: {os.path.basename(p)[:4] for p in v} for s, v in lists.items()}
    assert not videos["train"] & videos["val"] and not videos["train"] & videos["test"]
    assert not videos["val"] & videos["test"]
    assert rep.straddling_groups == [] and rep.groups == 40
    assert all(os.path.isabs(p) for p in lists["train"])  # images are outside the split folder
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert (data["train"], data["val"], data["test"], data["nc"]) == ("train.txt", "val.txt", "test.txt", 36)


def test_split_inside_dataset_writes_relative_paths(video_dataset):
    split.split_dataset(str(video_dataset), str(video_dataset), TAX, ratios=[0.8, 0.2], seed=1)
    train = (video_dataset / "train.txt").read_text().split()
    assert train and all(p.startswith("./images/") for p in train)
    assert (video_dataset / "test.txt").read_text() == ""
    assert yaml.safe_load((video_dataset / "data.yaml").read_text())["test"] is None


def test_group_pattern_overrides_file_name_key(video_dataset, tmp_path):
    rep = split.split_dataset(str(video_dataset), str(tmp_path / "s"), TAX, group_pattern=r"^(\d)", seed=0)
    assert rep.groups == 1 and rep.group_source == "pattern"
    assert sorted(rep.images.values()) == [0, 0, len(os.listdir(video_dataset / "images"))]

"""The DeepFish frame selection of the trainer experiments, on a small fake DeepFish tree."""
import os

import cv2
import numpy as np
import pytest

from benchmarks import deepfish_sets as ds
from benchmarks.small_yolo import read_map50, summarize


def write_frame(root, split, video, species, frame, boxes, size=360, band=(78, 282)):
    """A letterboxed DeepFish-like frame (black bars outside `band` rows) and its YOLO label."""
    name = "%s_%s_f%06d_jpg.rf.%032x" % (video, species, frame, frame)
    image = np.zeros((size, size, 3), np.uint8)
    image[band[0]:band[1]] = (90, 140, 120)
    for kind in ("images", "labels"):
        os.makedirs(os.path.join(root, split, kind), exist_ok=True)
    path = os.path.join(root, split, "images", name + ".jpg")
    cv2.imwrite(path, image)
    with open(os.path.join(root, split, "labels", name + ".txt"), "w") as f:
        f.write("".join("0 %.6f %.6f %.6f %.6f\n" % tuple(b) for b in boxes))
    return path


def test_parse_name_keeps_the_species_in_the_video_key():
    assert ds.parse_name("7117_Caranx_sexfasciatus_juvenile_f000123_jpg.rf.4d67.jpg") == (
        "7117_Caranx_sexfasciatus_juvenile", 123)
    with pytest.raises(ValueError, match="not a DeepFish frame name"):
        ds.parse_name("holiday.jpg")


def test_site_split_holds_out_each_videos_later_frames_with_a_gap():
    paths = ["/d/train/images/%d_F1_f%06d_jpg.rf.x.jpg" % (v, n) for v in (1, 2) for n in range(0, 101)]
    early, late = ds.site_split(paths, eval_fraction=0.25, gap=10)
    for video in ("1_F1", "2_F1"):
        e = [ds.parse_name(p)[1] for p in early if ds.parse_name(p)[0] == video]
        l = [ds.parse_name(p)[1] for p in late if ds.parse_name(p)[0] == video]
        assert min(l) == 75 and max(l) == 100 and max(e) == 64 and min(e) == 0
    assert not set(early) & set(late)


def test_even_sample_visits_every_video():
    paths = ["/d/%d_F1_f%06d_jpg.jpg" % (v, n) for v in range(4) for n in range(50 if v == 0 else 5)]
    picked = ds.even_sample(paths, 8, np.random.default_rng(0))
    assert len(picked) == 8 and {ds.parse_name(p)[0] for p in picked} == {"0_F1", "1_F1", "2_F1", "3_F1"}


def test_large_fish_videos_use_the_median_width_and_bring_their_sites_no_fish_clips(tmp_path):
    root = str(tmp_path)
    write_frame(root, "train", 1, "Big", 0, [(0.5, 0.5, 60 / 360.0, 0.1)] * 3)
    write_frame(root, "train", 2, "Small", 0, [(0.5, 0.5, 10 / 360.0, 0.05), (0.4, 0.5, 90 / 360.0, 0.05),
                                               (0.3, 0.5, 12 / 360.0, 0.05)])
    write_frame(root, "val", 3, "Empty", 0, [])
    write_frame(root, "val", 1, "NF1", 4, [])
    write_frame(root, "val", 2, "NF1", 4, [])
    frames = ds.list_frames(root)
    assert ds.large_fish_videos(frames, 40) == ["1_Big"] == ds.select_videos(frames, 40)
    assert ds.select_videos(frames, 40, no_fish_clips=True) == ["1_Big", "1_NF1"]   # backgrounds of site 1 only


def test_materialize_crops_the_bars_and_keeps_boxes_on_the_same_pixels(tmp_path):
    root = str(tmp_path / "deepfish")
    # A fish drawn at rows 150-180, columns 100-160 of the 360x360 letterboxed frame.
    src = write_frame(root, "train", 5, "Fish", 7, [(130 / 360.0, 165 / 360.0, 60 / 360.0, 30 / 360.0)])
    image = cv2.imread(src)
    image[150:180, 100:160] = (250, 250, 250)
    cv2.imwrite(src, image, [cv2.IMWRITE_JPEG_QUALITY, 100])
    made, = ds.materialize(str(tmp_path / "work"), [src], size=180)
    small = cv2.imread(made)
    assert small.shape[:2] == (102, 180)   # band 78:282 (204 rows) halved
    (_, cx, cy, w, h), = ds.read_boxes(made)
    x0, y0, x1, y1 = ((cx - w / 2) * 180, (cy - h / 2) * 102, (cx + w / 2) * 180, (cy + h / 2) * 102)
    assert (x0, y0, x1, y1) == pytest.approx((50, 36, 80, 51), abs=0.01)
    bright = np.argwhere(small.min(axis=2) > 200)
    assert bright[:, 0].min() == pytest.approx(y0, abs=1) and bright[:, 1].min() == pytest.approx(x0, abs=1)


def test_materialize_without_labels_hides_them(tmp_path):
    src = write_frame(str(tmp_path / "d"), "train", 5, "Fish", 1, [(0.5, 0.5, 0.1, 0.1)])
    made, = ds.materialize(str(tmp_path / "pool"), [src], size=160, with_labels=False)
    assert not os.path.exists(ds.label_of(made)) and ds.label_stats([made])["backgrounds"] == 1


def test_a_run_is_scored_on_its_last_epochs(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.csv").write_text("epoch,  metrics/mAP50(B)\n1, 0.1\n2, 0.3\n3, 0.2\n4, 0.4\n")
    summary = summarize(read_map50(str(run)), tail=3)
    assert summary["map50"] == pytest.approx(0.3) and summary["map50_sd"] == pytest.approx(0.1)
    assert summary["map50_range"] == [0.2, 0.4] and summary["map50_last_epoch"] == 0.4

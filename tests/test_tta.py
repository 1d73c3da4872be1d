import cv2
import numpy as np
import pytest

from edge.detections import Detections
from edge.errors import ConfigError, FrameError
from edge.tta import (PRESETS, VIEWS, boxes_to_frame, boxes_to_input, detections_to_frame, images_to_batch,
                      letterbox_geometry, letterbox_image, orient_image, prepare_views, view_plan, view_transform)


@pytest.mark.parametrize("preset,count", [("none", 1), ("flip", 2), ("full", 7)])
def test_presets(preset, count):
    assert len(view_plan(preset)) == count


def test_plan_from_names_and_dicts():
    plan = view_plan(["identity", {"hflip": True, "rot90": 1, "scale": 0.8}])
    assert plan[1].hflip and plan[1].rot90 == 1 and plan[1].scale == 0.8
    assert view_plan("hflip,rot90") == (VIEWS["hflip"], VIEWS["rot90"])


@pytest.mark.parametrize("bad", ["rot45", [{"rot90": 5}], [{"flip": True}], []])
def test_bad_plan_names_the_problem(bad):
    with pytest.raises(ConfigError):
        view_plan(bad)


@pytest.mark.parametrize("h,w,size", [(480, 640, 320), (1080, 1920, 640), (360, 360, 320), (100, 900, 256)])
def test_letterbox_geometry_matches_ultralytics_formula(h, w, size):
    g = letterbox_geometry(h, w, size, size)
    r = min(size / h, size / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    assert (g.new_w, g.new_h) == (new_w, new_h)
    assert g.left == round((size - new_w) / 2 - 0.1) and g.top == round((size - new_h) / 2 - 0.1)


def _random_boxes(rng, n, w, h):
    x1 = rng.uniform(0, w - 2, n)
    y1 = rng.uniform(0, h - 2, n)
    return np.stack([x1, y1, rng.uniform(x1 + 1, w), rng.uniform(y1 + 1, h)], axis=1)


@pytest.mark.parametrize("view", list(VIEWS.values()), ids=list(VIEWS))
def test_forward_then_inverse_is_within_half_a_pixel(view):
    rng = np.random.default_rng(7)
    for _ in range(200):
        w, h = int(rng.integers(16, 2000)), int(rng.integers(16, 2000))
        size = int(rng.choice([160, 320, 640]))
        t = view_transform(w, h, view, size, size)
        boxes = _random_boxes(rng, 20, w, h)
        back = boxes_to_frame(boxes_to_input(boxes, t), t)
        assert np.abs(back - boxes).max() < 0.5


@pytest.mark.parametrize("view", ["hflip", "rot90", "rot180", "rot270"])
def test_box_map_follows_the_pixels(view):
    """A bright rectangle drawn in the frame lands where boxes_to_input says in the network input."""
    frame = np.zeros((120, 200, 3), np.uint8)
    box = np.array([[30, 20, 90, 50]], float)
    frame[20:50, 30:90] = 255
    batch, (t,) = prepare_views(frame, view_plan([view]), 200, 200)  # gain 1: no resampling blur
    lit = np.argwhere(batch[0, 0] > 0.99)
    observed = [lit[:, 1].min(), lit[:, 0].min(), lit[:, 1].max() + 1, lit[:, 0].max() + 1]
    np.testing.assert_allclose(boxes_to_input(box, t)[0], observed, atol=1e-6)


def test_rotated_views_swap_height_and_width():
    t = view_transform(640, 480, VIEWS["rot90"], 320, 320)
    assert (t.geometry.new_w, t.geometry.new_h) == (240, 320)


def test_all_views_share_one_input_shape():
    frame = np.random.default_rng(0).integers(0, 255, (90, 160, 3), dtype=np.uint8)
    batch, transforms = prepare_views(frame, view_plan("full"), 128, 96)
    assert batch.shape == (7, 3, 96, 128) and batch.dtype == np.float32
    assert 0.0 <= batch.min() and batch.max() <= 1.0


def test_detections_to_frame_clips_and_keeps_scores():
    t = view_transform(100, 50, VIEWS["scale1.1"], 64, 64)
    d = Detections([[-10, -10, 70, 70]], [0.5], [3])
    out = detections_to_frame(d, t)
    assert out.xyxy.min() >= 0 and out.xyxy[0, 2] <= 100 and out.xyxy[0, 3] <= 50
    assert out.score[0] == np.float32(0.5) and out.class_id[0] == 3


@pytest.mark.parametrize("frame", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32), None,
                                   np.zeros((1, 10, 3), np.uint8)])
def test_bad_frames_are_refused(frame):
    with pytest.raises(FrameError):
        prepare_views(frame, view_plan("none"), 64, 64)


def test_identity_matches_ultralytics_letterbox():
    LetterBox = pytest.importorskip("ultralytics.data.augment").LetterBox

    frame = np.random.default_rng(1).integers(0, 255, (375, 500, 3), dtype=np.uint8)
    ours, _ = prepare_views(frame, view_plan("none"), 320, 320)
    theirs = LetterBox((320, 320), auto=False)(image=frame)
    expected = theirs[..., ::-1].transpose(2, 0, 1).astype(np.float32) / 255.0
    np.testing.assert_array_equal(ours[0], expected)


def test_presets_are_named_views():
    assert all(name in VIEWS for names in PRESETS.values() for name in names)


@pytest.mark.parametrize("frame_hw, in_wh", [((768, 1024), (320, 320)), ((768, 1024), (320, 256)),
                                             ((301, 517), (160, 224)), ((64, 48), (96, 96))])
def test_views_resized_once_then_turned_match_turning_the_frame_first(frame_hw, in_wh):
    """prepare_views resizes the frame once per size and flips/turns the small image; the pixels match
    turning the full frame first within the fixed-point rounding of cv2's bilinear resize (1 grey level)."""
    rng = np.random.RandomState(0)
    frame = cv2.GaussianBlur(rng.randint(0, 256, frame_hw + (3,)).astype(np.uint8), (5, 5), 0)
    batch, transforms = prepare_views(frame, view_plan("full"), *in_wh)
    reference = images_to_batch(np.stack([letterbox_image(orient_image(frame, t.view), t.geometry)
                                          for t in transforms]))
    assert batch.shape == reference.shape
    assert np.abs(batch - reference).max() * 255 <= 1.0 + 1e-4


@pytest.mark.parametrize("frame_hw", [(768, 1024), (1024, 768), (37, 91), (8, 8), (301, 300)])
@pytest.mark.parametrize("in_wh", [(320, 320), (320, 256), (64, 96)])
@pytest.mark.parametrize("plan", ["full", "none", [{"hflip": True, "rot90": 1, "scale": 1.3},
                                                   {"hflip": True, "rot90": 3, "scale": 0.5},
                                                   {"hflip": True, "rot90": 2, "scale": 4.0}]],
                         ids=["full", "none", "flipped-turns-and-crops"])
def test_native_view_batch_equals_numpy_batch(frame_hw, in_wh, plan, monkeypatch):
    """The one-pass C batcher against canvases, cv2 turns and the numpy conversion, bit for bit."""
    from edge import native

    frame = np.random.RandomState(1).randint(0, 256, frame_hw + (3,)).astype(np.uint8)
    monkeypatch.setenv("REEFWATCH_NATIVE", "0")
    expected, _ = prepare_views(frame, view_plan(plan), *in_wh)
    monkeypatch.setenv("REEFWATCH_NATIVE", "1")
    if native.active() is None:
        pytest.skip("the native kernels are not built (python -m edge.native.build)")
    got, _ = prepare_views(np.asfortranarray(frame) if frame_hw == (301, 300) else frame, view_plan(plan), *in_wh)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def random_views(rng, n_views, per_view_boxes, empty, min_side=1):
    """Each view's Detections in input pixels, some past the input's edges; view `empty` has none."""
    per_view = []
    for i in range(n_views):
        n = 0 if i == empty else per_view_boxes
        xy = rng.uniform(-20, 330, (n, 2)).astype(np.float32)
        per_view.append(Detections(np.concatenate([xy, xy + rng.uniform(min_side, 120, (n, 2))], axis=1),
                                   rng.uniform(0.001, 1, n), rng.randint(0, 4, n)))
    return per_view


@pytest.mark.parametrize("per_view_boxes", [0, 1, 40])
def test_views_to_frame_then_fusion_equals_view_by_view(per_view_boxes):
    """The pipeline's one-array inversion and fusion of a frame's views against detections_to_frame
    and fuse_detections view by view, bit for bit (boxes past the edges and empty views included)."""
    from edge.fusion import fuse_concatenated, fuse_detections
    from edge.tta import views_to_frame

    rng = np.random.RandomState(per_view_boxes)
    transforms = [view_transform(1024, 768, v, 320, 320) for v in view_plan("full")]
    per_view = random_views(rng, len(transforms), per_view_boxes, empty=3)
    expected = [detections_to_frame(d, t) for d, t in zip(per_view, transforms)]
    xyxy, score, class_id, counts = views_to_frame(per_view, transforms)
    assert counts == [len(d) for d in per_view]
    np.testing.assert_array_equal(xyxy, np.concatenate([d.xyxy for d in expected]))
    assert xyxy.dtype == np.float32
    fused = fuse_detections(expected, (1024, 768))
    got = fuse_concatenated(xyxy, score, class_id, counts, (1024, 768))
    assert got == fused and got.xyxy.dtype == fused.xyxy.dtype

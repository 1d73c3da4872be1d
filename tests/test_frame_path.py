"""The pipeline's per-frame path for several views: decoded boxes concatenated, inverted in a few array
operations, fused in one native call; the values of the per-view path, bit for bit, on both paths of edge.native.
"""
import numpy as np
import pytest

from edge.backends import FakeBackend
from edge.decode import decode_head, decode_outputs
from edge.errors import DecodeError
from edge.pipeline import Pipeline
from edge.tta import concatenated_to_frame, detections_to_frame, view_plan, view_transform
from tests.native_paths import both_paths
from tests.test_tta import random_views

kernel_path = both_paths("numpy")

TURNED_AND_FLIPPED = [{"hflip": True, "rot90": k, "scale": s} for k, s in ((1, 1.3), (2, 0.5), (3, 1.0), (0, 0.8))]


def head_output(rng, batch, num_classes, anchors=400, size=320):
    """A detect head's raw output: boxes anywhere in the input, low scores with some ties."""
    xy = rng.uniform(0, size, (batch, 2, anchors))
    wh = rng.uniform(2, size / 2, (batch, 2, anchors))
    scores = np.round(rng.uniform(0, 0.3, (batch, num_classes, anchors)) ** 2, 4)
    return np.concatenate([xy, wh, scores], axis=1).astype(np.float32)


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("batch", [1, 7])
def test_concatenated_decode_equals_the_per_image_records(multi_label, batch):
    output = head_output(np.random.default_rng(batch), batch, 5)
    per_image = decode_head(output, 5, conf_thr=0.01, iou_thr=0.5, max_det=100, multi_label=multi_label)
    xyxy, score, class_id, counts = decode_head(output, 5, conf_thr=0.01, iou_thr=0.5, max_det=100,
                                                multi_label=multi_label, concatenated=True)
    assert counts == [len(d) for d in per_image] and sum(counts) > 0
    for got, name in ((xyxy, "xyxy"), (score, "score"), (class_id, "class_id")):
        expected = np.concatenate([getattr(d, name) for d in per_image])
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected, err_msg=name)


def test_concatenated_efficient_nms_outputs():
    outputs = {"num_dets": np.array([[2], [0]]), "det_boxes": np.arange(16, dtype=np.float32).reshape(2, 2, 4),
               "det_scores": np.array([[0.9, 0.4], [0.0, 0.0]], np.float32),
               "det_classes": np.array([[1, 0], [0, 0]], np.int32)}
    xyxy, score, class_id, counts = decode_outputs(outputs, 2, conf_thr=0.1, concatenated=True)
    assert counts == [2, 0] and xyxy.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert score.tolist() == [np.float32(0.9), np.float32(0.4)] and class_id.tolist() == [1, 0]


def test_concatenated_decode_refuses_class_scores():
    with pytest.raises(DecodeError, match="concatenated"):
        decode_head(np.zeros((1, 6, 4), np.float32), 2, class_scores=True, concatenated=True)


@pytest.mark.parametrize("frame_wh", [(1024, 768), (768, 1024), (91, 37)])
@pytest.mark.parametrize("plan", ["full", "flip", TURNED_AND_FLIPPED], ids=["full", "flip", "turned-and-flipped"])
@pytest.mark.parametrize("per_view_boxes", [0, 1, 30])
def test_concatenated_to_frame_equals_detections_to_frame(frame_wh, plan, per_view_boxes):
    transforms = [view_transform(frame_wh[0], frame_wh[1], v, 320, 256) for v in view_plan(plan)]
    # min_side 0: some boxes without area, as a view cropped past the frame leaves them
    per_view = random_views(np.random.RandomState(per_view_boxes), len(transforms), per_view_boxes, empty=1,
                            min_side=0)
    xyxy, score, class_id, counts = concatenated_to_frame(
        np.concatenate([d.xyxy for d in per_view]), np.concatenate([d.score for d in per_view]),
        np.concatenate([d.class_id for d in per_view]), [len(d) for d in per_view], transforms)
    expected = np.concatenate([detections_to_frame(d, t).xyxy for d, t in zip(per_view, transforms)])
    assert xyxy.dtype == expected.dtype == np.float32 and counts == [len(d) for d in per_view]
    np.testing.assert_array_equal(xyxy.view(np.uint32), expected.view(np.uint32))  # -0.0 and 0.0 apart


class _Bundle(object):
    """What Pipeline.detect_per_model reads of a bundle."""

    def __init__(self, models, num_classes):
        self.models, self.num_classes = models, num_classes
        self.fusion = {"iou_thr": 0.55, "skip_box_thr": 0.0, "conf_type": "avg"}

    def model(self, name):
        return next(m for m in self.models if m.name == name)


class _Spec(object):
    name, path, input_size, decode_thr, iou_thr, multi_label = "m", "fake.onnx", (256, 320), 0.01, 0.5, True


@pytest.mark.parametrize("plan", ["full", TURNED_AND_FLIPPED], ids=["full", "turned-and-flipped"])
def test_pipeline_views_equal_the_per_view_path(plan, monkeypatch):
    """detect_per_model over several views against decode, detections_to_frame and fusion of the records."""
    from edge.fusion import fuse_detections

    rng = np.random.default_rng(7)
    frame = rng.integers(0, 256, (480, 640, 3)).astype(np.uint8)
    views = view_plan(plan)
    output = head_output(rng, len(views), 3, size=256)
    bundle = _Bundle([_Spec()], 3)
    pipeline = Pipeline(bundle, {"m": FakeBackend([output], input_shape=(3, 256, 320), fixed_batch=None,
                                                  max_batch=8)})
    got = pipeline.detect_per_model(frame, plan=plan)["m"]
    per_view = decode_head(output, 3, conf_thr=0.01, iou_thr=0.5, multi_label=True)
    transforms = [view_transform(640, 480, v, 320, 256) for v in views]
    expected = fuse_detections([detections_to_frame(d, t) for d, t in zip(per_view, transforms)], (640, 480),
                               iou_thr=0.55)
    assert len(got) > 0
    for name in ("xyxy", "score", "class_id"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)


@pytest.mark.parametrize("width, height", [(1024, 768), (91.5, 37.0)])
def test_clip_boxes_equals_clipping_picked_columns(width, height):
    """clip_boxes clips strided views in place: the values of np.clip on the picked x and y columns,
    -0.0, NaN and infinities included."""
    from edge.boxes import clip_boxes

    xyxy = np.random.default_rng(2).uniform(-50, 1100, (200, 4)).astype(np.float32)
    xyxy[:10], xyxy[10:20], xyxy[20:25], xyxy[25:30] = -0.0, np.nan, np.inf, -np.inf
    expected = xyxy.copy()
    expected[:, [0, 2]] = np.clip(expected[:, [0, 2]], 0, width)
    expected[:, [1, 3]] = np.clip(expected[:, [1, 3]], 0, height)
    got = clip_boxes(xyxy.astype(np.float64), width, height)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("plan", ["full", "none", TURNED_AND_FLIPPED], ids=["full", "none", "turned-and-flipped"])
def test_prepare_views_into_a_used_buffer_equals_a_new_batch(plan):
    from edge.tta import prepare_views

    frame = np.random.default_rng(5).integers(0, 256, (300, 500, 3)).astype(np.uint8)
    expected, _ = prepare_views(frame, view_plan(plan), 320, 256)
    out = np.full(expected.shape, np.nan, np.float32)  # what a previous frame left, or worse
    got, _ = prepare_views(frame, view_plan(plan), 320, 256, out=out)
    assert got is out
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("out", [np.zeros((7, 3, 256, 320), np.float64), np.zeros((6, 3, 256, 320), np.float32),
                                 np.zeros((7, 3, 320, 256), np.float32)], ids=["float64", "views", "size"])
def test_prepare_views_refuses_a_buffer_that_does_not_fit(out):
    from edge.errors import EdgeError
    from edge.tta import prepare_views

    with pytest.raises(EdgeError, match="out must"):
        prepare_views(np.zeros((300, 500, 3), np.uint8), view_plan("full"), 320, 256, out=out)


def test_pipeline_reuses_its_batch_buffer_and_each_frame_gets_its_own_views():
    """Frame after frame one buffer carries the batch; each call's batch is that frame's views."""
    from edge.tta import prepare_views

    rng = np.random.default_rng(9)
    # the same size twice (the grey stays in place), another size, then the first again
    frames = [rng.integers(0, 256, hw + (3,)).astype(np.uint8) for hw in ((240, 320), (240, 320), (300, 200),
                                                                           (240, 320))]
    seen = []

    def record(batch):
        seen.append((batch.__array_interface__["data"][0], batch.copy()))
        return head_output(np.random.default_rng(len(seen)), len(batch), 3, size=256)

    pipeline = Pipeline(_Bundle([_Spec()], 3), {"m": FakeBackend(record, input_shape=(3, 256, 320), fixed_batch=None,
                                                                  max_batch=8)})
    for frame in frames:
        pipeline.detect_per_model(frame, plan="full")
    assert len({address for address, _ in seen}) == 1
    for frame, (_, batch) in zip(frames, seen):
        np.testing.assert_array_equal(batch, prepare_views(frame, view_plan("full"), 320, 256)[0])


def test_a_batch_buffer_keeps_its_grey_only_for_the_same_placement():
    """With the views where they sat in the buffer's last batch only the images are written (the native
    path); any other placement, and the numpy path, write every value."""
    from edge import native
    from edge.tta import BatchBuffer, prepare_views

    frame = np.random.default_rng(6).integers(0, 256, (240, 320, 3)).astype(np.uint8)
    plan = view_plan("full")
    buffer = BatchBuffer((len(plan), 3, 256, 320))
    expected, _ = prepare_views(frame, plan, 320, 256)
    prepare_views(frame, plan, 320, 256, out=buffer)
    buffer.array.fill(np.nan)
    got, _ = prepare_views(frame, plan, 320, 256, out=buffer)
    grey = np.isnan(got)
    if native.active() is not None:
        assert grey.any() and np.array_equal(got[~grey], expected[~grey])  # the grey was left to the buffer
    else:
        assert not grey.any()
    buffer.array.fill(np.nan)
    got, _ = prepare_views(frame[:200], plan, 320, 256, out=buffer)  # another placement
    np.testing.assert_array_equal(got, prepare_views(frame[:200], plan, 320, 256)[0])

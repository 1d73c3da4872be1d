import numpy as np
import pytest

from benchmarks.nms import old_decode_head, synthetic_head
from edge.boxes import box_iou, nms, xywh_to_xyxy, xyxy_to_xywh
from edge.decode import decode_efficient_nms, decode_head, decode_outputs
from edge.detections import Detections
from edge.errors import DecodeError, EdgeError


def _raw_head(rng, batch, nc, anchors, objects=6, size=320):
    """A (B, 4+nc, A) head output whose anchors cluster around a few objects, as real heads do."""
    out = np.zeros((batch, 4 + nc, anchors), np.float32)
    for b in range(batch):
        centres = rng.uniform(20, size - 20, (objects, 2))
        wh = rng.uniform(10, 120, (objects, 2))
        owner = rng.integers(0, objects, anchors)
        out[b, 0:2] = (centres[owner] + rng.normal(0, 4, (anchors, 2))).T
        out[b, 2:4] = (wh[owner] * rng.uniform(0.8, 1.25, (anchors, 2))).T
        scores = rng.uniform(0, 0.3, (anchors, nc))
        hot = rng.integers(0, nc, objects)[owner]
        scores[np.arange(anchors), hot] = rng.uniform(0.1, 0.99, anchors)
        out[b, 4:] = scores.T
    return out


@pytest.mark.parametrize("seed", range(40))
def test_decode_matches_ultralytics_nms(seed):
    torch = pytest.importorskip("torch")
    from ultralytics.utils.nms import non_max_suppression

    rng = np.random.default_rng(seed)
    nc = int(rng.integers(1, 40))
    conf, iou = float(rng.uniform(0.05, 0.5)), float(rng.uniform(0.3, 0.8))
    raw = _raw_head(rng, 2, nc, int(rng.integers(50, 2100)))
    theirs = non_max_suppression(torch.from_numpy(raw), conf_thres=conf, iou_thres=iou, nc=nc, max_det=300)
    ours = decode_head(raw, nc, conf_thr=conf, iou_thr=iou, max_det=300)
    for mine, ref in zip(ours, theirs):
        ref = ref.numpy()
        assert len(mine) == len(ref)
        np.testing.assert_allclose(mine.xyxy, ref[:, :4], atol=1e-3)
        np.testing.assert_allclose(mine.score, ref[:, 4], atol=1e-6)
        np.testing.assert_array_equal(mine.class_id, ref[:, 5].astype(int))


# TTA batches shaped like a trained model's output at conf 0.001 (a few hundred to
# a few thousand candidates per view): 320 px / 7 classes and 640 px / 36 classes.
REALISTIC = [(320, 7, 8, 0.25), (640, 36, 15, 0.3)]


def _realistic(size, nc, objects, fraction, seed=0):
    return synthetic_head(np.random.default_rng(seed), size, nc, 7, objects, fraction)


@pytest.mark.parametrize("size, nc, objects, fraction", REALISTIC)
def test_decode_realistic_batch_matches_ultralytics(size, nc, objects, fraction):
    torch = pytest.importorskip("torch")
    # With torchvision imported ultralytics calls torchvision.ops.nms, which visits
    # equal scores in index order as we do (these heads have many at 0.99); its
    # fallback loop sorts unstably and gives up after its time limit.
    pytest.importorskip("torchvision")
    from ultralytics.utils.nms import non_max_suppression

    raw = _realistic(size, nc, objects, fraction)
    theirs = non_max_suppression(torch.from_numpy(raw), conf_thres=0.001, iou_thres=0.7, nc=nc, max_det=300)
    for mine, ref in zip(decode_head(raw, nc, conf_thr=0.001, iou_thr=0.7), theirs):
        ref = ref.numpy()
        np.testing.assert_array_equal(mine.xyxy, ref[:, :4])
        np.testing.assert_array_equal(mine.score, ref[:, 4])
        np.testing.assert_array_equal(mine.class_id, ref[:, 5].astype(int))


@pytest.mark.parametrize("size, nc, objects, fraction", REALISTIC)
@pytest.mark.parametrize("conf", [0.001, 0.01, 0.25])
def test_decode_realistic_batch_matches_old_decoder(size, nc, objects, fraction, conf):
    """The transposing decoder with the one-pass-per-kept-box loop, kept in benchmarks/nms.py."""
    raw = _realistic(size, nc, objects, fraction, seed=1)
    assert decode_head(raw, nc, conf_thr=conf) == old_decode_head(raw, nc, conf_thr=conf)


def _anchor_of(raw_image, xyxy):
    """Index of the anchor whose decoded box is ``xyxy`` (boxes are distinct floats)."""
    boxes = xywh_to_xyxy(raw_image[:4].T)
    return int(np.flatnonzero((boxes == xyxy).all(axis=1))[0])


def test_decode_class_scores_are_the_kept_anchors_columns():
    raw = _realistic(320, 7, 8, 0.25)[:2]
    for image, d in zip(raw, decode_head(raw, 7, conf_thr=0.001, class_scores=True)):
        anchors = [_anchor_of(image, box) for box in d.xyxy]
        np.testing.assert_array_equal(d.extras["class_scores"], image[4:, anchors].T)
        np.testing.assert_array_equal(d.extras["class_scores"].max(axis=1), d.score)


@pytest.mark.parametrize("cap", [1, 50, 400])
def test_decode_caps_candidates_before_nms(cap):
    """Only the ``cap`` best anchors take part: as if every other anchor had scored 0."""
    raw = _realistic(320, 7, 8, 0.25)[:1]
    best = raw[0, 4:].max(axis=0)
    others = np.argsort(-best, kind="stable")[cap:]
    only_top = raw.copy()
    only_top[0, 4:, others] = 0
    assert decode_head(raw, 7, conf_thr=0.001, max_candidates=cap) == decode_head(only_top, 7, conf_thr=0.001)


def test_decode_max_det_is_a_prefix():
    raw = _realistic(640, 36, 15, 0.3)[:1]
    (full,) = decode_head(raw, 36, conf_thr=0.001, max_det=100000)
    (top,) = decode_head(raw, 36, conf_thr=0.001, max_det=300)
    assert len(full) > 300 and top == full[np.arange(300)]


def test_decode_half_precision_output():
    raw = _realistic(320, 7, 8, 0.25)[:2].astype(np.float16)
    assert decode_head(raw, 7, conf_thr=0.001) == decode_head(raw.astype(np.float32), 7, conf_thr=0.001)


def test_decode_rejects_wrong_class_count():
    with pytest.raises(DecodeError, match="4 \\+ 3 classes"):
        decode_head(np.zeros((1, 9, 100), np.float32), 3)
    with pytest.raises(DecodeError):
        decode_head(np.zeros((9, 100), np.float32), 5)


def test_decode_empty_and_single():
    raw = np.zeros((1, 6, 10), np.float32)
    assert len(decode_head(raw, 2)[0]) == 0
    raw[0, :, 3] = [50, 40, 20, 10, 0.9, 0.1]
    (d,) = decode_head(raw, 2)
    np.testing.assert_allclose(d.xyxy, [[40, 35, 60, 45]])
    assert d.class_id.tolist() == [0] and d.score[0] == pytest.approx(0.9)


def test_efficient_nms_outputs():
    boxes = np.array([[[1, 2, 3, 4], [5, 6, 7, 8], [0, 0, 0, 0]]], np.float32)
    out = decode_outputs({"num_dets": np.array([[2]]), "det_boxes": boxes,
                          "det_scores": np.array([[0.9, 0.1, 0]], np.float32),
                          "det_classes": np.array([[1, 0, 0]], np.int32)}, num_classes=2, conf_thr=0.2)
    assert len(out[0]) == 1 and out[0].class_id.tolist() == [1]
    with pytest.raises(DecodeError, match="3 classes"):
        decode_efficient_nms([[1]], boxes[:, :1], [[0.5]], [[3]], num_classes=3)


def test_decode_outputs_refuses_unknown_layouts():
    with pytest.raises(DecodeError, match="outputs"):
        decode_outputs({"a": np.zeros((1, 6, 4)), "b": np.zeros(1)}, 2)


@pytest.mark.parametrize("n", [0, 1, 5])
def test_nms_small_inputs(n):
    boxes = np.tile([[0, 0, 10, 10]], (n, 1)).astype(np.float32)
    assert len(nms(boxes, np.linspace(1, 0.5, n), 0.5)) == min(n, 1)


def test_nms_class_aware():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    assert len(nms(boxes, [0.9, 0.8], 0.5, class_id=[0, 1])) == 2
    assert len(nms(boxes, [0.9, 0.8], 0.5)) == 1


def test_iou_formula():
    a, b = [[0, 0, 10, 10]], [[5, 0, 15, 10], [20, 20, 30, 30]]
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 0]])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 2)


def test_box_conversions_round_trip():
    xywh = np.array([[10, 20, 4, 6]], np.float32)
    xyxy = xywh_to_xyxy(xywh)
    np.testing.assert_allclose(xyxy, [[8, 17, 12, 23]])
    np.testing.assert_allclose(xyxy_to_xywh(xyxy), [[8, 17, 4, 6]])


def test_detections_record():
    d = Detections([[0, 0, 1, 1], [1, 1, 3, 3]], [0.2, 0.9], [1, 2], extras={"k": [5, 6]})
    assert len(d) == 2 and d.xyxy.dtype == np.float32 and d.class_id.dtype == np.int32
    top = d.sorted_by_score()
    assert top.score.tolist() == pytest.approx([0.9, 0.2]) and top.extras["k"].tolist() == [6, 5]
    assert len(d[d.score > 0.5]) == 1 and len(d[1]) == 1
    assert len(Detections.concat([d, d])) == 4 and len(Detections.concat([])) == 0
    assert d.area.tolist() == [1, 4]
    assert len(Detections.empty()) == 0 and Detections.empty().xyxy.shape == (0, 4)


@pytest.mark.parametrize("args", [([[0, 0, 1]], [1], [0]), ([[0, 0, 1, 1]], [1, 2], [0]),
                                  ([[0, 0, 1, 1]], [1], [0, 1]), ([[0, 0, 1, 1]], [1], [0.5])])
def test_detections_refuse_bad_shapes(args):
    with pytest.raises(EdgeError):
        Detections(*args)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multi_label_matches_ultralytics_validation_decoding(seed):
    """ultralytics' validation decodes with multi_label=True: one candidate per class above conf per anchor."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")  # ultralytics then calls torchvision.ops.nms (stable on ties)
    from ultralytics.utils.nms import non_max_suppression

    rng = np.random.RandomState(seed)
    nc, anchors = 5, 400
    raw = np.zeros((2, 4 + nc, anchors), np.float32)
    raw[:, 0:2] = rng.uniform(20, 300, (2, 2, anchors))
    raw[:, 2:4] = rng.uniform(8, 80, (2, 2, anchors))
    raw[:, 4:] = rng.beta(0.3, 3.0, (2, nc, anchors))
    theirs = non_max_suppression(torch.from_numpy(raw), conf_thres=0.01, iou_thres=0.7, nc=nc, max_det=300,
                                 multi_label=True)
    ours = decode_head(raw, nc, conf_thr=0.01, iou_thr=0.7, max_det=300, multi_label=True)
    for t, o in zip(theirs, ours):
        t = t.numpy()
        key_t = sorted(zip(t[:, 5].astype(int), np.round(t[:, 4], 6), np.round(t[:, 0], 3)))
        key_o = sorted(zip(o.class_id.tolist(), np.round(o.score, 6), np.round(o.xyxy[:, 0], 3)))
        assert key_t == key_o


def test_multi_label_keeps_every_class_above_the_threshold():
    raw = np.zeros((1, 4 + 3, 2), np.float32)
    raw[0, :4, 0] = [50, 50, 20, 20]
    raw[0, :4, 1] = [150, 150, 20, 20]
    raw[0, 4:, 0] = [0.6, 0.3, 0.005]  # two classes above 0.01 on one anchor
    raw[0, 4:, 1] = [0.0, 0.0, 0.2]
    single = decode_head(raw, 3, conf_thr=0.01)[0]
    multi = decode_head(raw, 3, conf_thr=0.01, multi_label=True, class_scores=True)[0]
    assert sorted(single.class_id.tolist()) == [0, 2]
    assert multi.class_id.tolist() == [0, 1, 2] and multi.score.tolist() == pytest.approx([0.6, 0.3, 0.2])
    assert multi.extras["class_scores"].shape == (3, 3)


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("conf", [0.001, 0.01, 0.25])
@pytest.mark.parametrize("shape", REALISTIC)
def test_a_batch_of_views_decodes_as_each_view_alone(multi_label, conf, shape):
    """With the native kernels a batch (the views of a frame) is decoded in one pass and one NMS call;
    the result must be each image's own decoding, bit for bit."""
    from edge import native

    if native.active() is None:
        pytest.skip("the native kernels are not built (python -m edge.native.build)")
    raw = _realistic(*shape, seed=3)
    nc = shape[1]
    together = decode_head(raw, nc, conf_thr=conf, multi_label=multi_label, class_scores=True)
    for i, mine in enumerate(together):
        alone = decode_head(raw[i:i + 1], nc, conf_thr=conf, multi_label=multi_label, class_scores=True)[0]
        assert mine == alone and np.array_equal(mine.extras["class_scores"], alone.extras["class_scores"])


def _on_each_path(monkeypatch, fn):
    """fn() on the numpy path, then on the native kernels (skipped where they are not built)."""
    from edge import native

    monkeypatch.setenv("REEFWATCH_NATIVE", "0")
    expected = fn()
    monkeypatch.setenv("REEFWATCH_NATIVE", "1")
    if native.active() is None:
        pytest.skip("the native kernels are not built (python -m edge.native.build)")
    return expected, fn()


def _same_records(expected, got):
    assert len(expected) == len(got)
    for e, g in zip(expected, got):
        assert e == g and e.xyxy.dtype == g.xyxy.dtype and e.score.dtype == g.score.dtype
        assert sorted(e.extras) == sorted(g.extras)
        for name in e.extras:
            assert e.extras[name].dtype == g.extras[name].dtype
            np.testing.assert_array_equal(g.extras[name], e.extras[name])


def _nan_and_ties_head():
    """NaN scores (the anchor is never a candidate), equal scores and -0.0 beside 0.0 at a negative threshold."""
    raw = _realistic(320, 7, 8, 0.25, seed=5)[:2].copy()
    raw[0, 6, :40] = np.nan
    raw[1, 4:, 100:300] = np.float32(0.5)
    raw[1, 5, 300:320] = -0.0
    return raw


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("kwargs", [
    dict(conf_thr=0.001), dict(conf_thr=0.25, iou_thr=0.45), dict(conf_thr=0.01, iou_thr=0.0),
    dict(conf_thr=np.float64(0.001)), dict(conf_thr=0.001, max_det=7), dict(conf_thr=0.001, max_det=0),
    dict(conf_thr=0.001, max_det=None), dict(conf_thr=0.001, max_candidates=50), dict(conf_thr=1.0),
], ids=lambda k: ",".join("%s=%r" % kv for kv in sorted(k.items())))
@pytest.mark.parametrize("make", [lambda: _realistic(320, 7, 8, 0.25, seed=2), lambda: _realistic(640, 36, 15, 0.3)[:2],
                                  _nan_and_ties_head], ids=["320px-7", "640px-36", "nan-and-ties"])
def test_native_decoding_equals_numpy_decoding(make, kwargs, multi_label, monkeypatch):
    """The C decoder (threshold, top-k, sort, NMS in one call) against the numpy path, bit for bit."""
    raw = make()
    nc = raw.shape[1] - 4
    expected, got = _on_each_path(monkeypatch, lambda: decode_head(raw, nc, multi_label=multi_label,
                                                                   class_scores=True, **kwargs))
    _same_records(expected, got)


@pytest.mark.parametrize("negative_thr", [False, True])
def test_native_decoding_of_empty_and_one_box_heads(negative_thr, monkeypatch):
    heads = [np.zeros((1, 6, 0), np.float32), np.zeros((3, 6, 10), np.float32), np.zeros((0, 6, 10), np.float32)]
    one = np.zeros((2, 6, 10), np.float32)
    one[1, :, 3] = [50, 40, 20, 10, 0.9, 0.1]
    thr = -1.0 if negative_thr else 0.25
    for raw in heads + [one]:
        expected, got = _on_each_path(monkeypatch, lambda: decode_head(raw, 2, conf_thr=thr, class_scores=True))
        _same_records(expected, got)

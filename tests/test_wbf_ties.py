"""edge.native.wbf.fuse: the one native WBF call where scores tie within a label.

rw_wbf_fuse answers tied labels with their scores; numpy's argsort of them (1.0.9's
own call) gives the order its second call follows. The result must be the general
path's (and ensemble_boxes 1.0.9's) to the bit, and the pipeline's view fusion,
which uses it, must equal fuse_concatenated.
"""
import importlib.util

import numpy as np
import pytest

from edge import native
from edge.errors import NativeError
from edge.fusion import _F32_DIVISOR, _WEAK_SCALARS, CONF_TYPES, _split_native, fuse_concatenated
from edge.native import TiedGroups
from edge.native import wbf as native_wbf
from edge.pipeline import _fuse_views
from tests.test_fusion import assert_same, ours, random_case, reference
from tests.test_native import kernels  # noqa: F401 (a fixture)

HAVE_ENSEMBLE_BOXES = importlib.util.find_spec("ensemble_boxes") is not None  # a dev extra, not on the Jetson


def resolved(kernels, boxes, scores, labels, weights=None, iou_thr=0.55, skip_box_thr=0.0, conf_type="avg",
             allows_overflow=False):
    fused = native_wbf.fuse(kernels, boxes, scores, labels, weights, iou_thr, skip_box_thr, conf_type,
                            allows_overflow, _WEAK_SCALARS, _F32_DIVISOR)
    return None if fused is None else _split_native(*fused)


def general_path(monkeypatch, *args, **kwargs):
    monkeypatch.setenv("REEFWATCH_NATIVE", "0")
    try:
        return ours(*args, **kwargs)
    finally:
        monkeypatch.setenv("REEFWATCH_NATIVE", "1")


def tied_case(rng, conf_type):
    """random_case with every score rounded to tenths: ties within each label, and no zero score
    (rw_wbf_fuse leaves zero scores to the general path)."""
    (boxes, scores, labels), kwargs = random_case(rng, conf_type)
    scores = [np.round(s * 10 + 0.5) / 10 for s in scores]
    return (boxes, scores, labels), kwargs


def count_first_answers(kernels, monkeypatch):
    answers = []
    original = kernels.wbf_fuse
    monkeypatch.setattr(kernels, "wbf_fuse", lambda *a, **k: answers.append(
        (k.get("order") is not None, original(*a, **k))) or answers[-1][1])
    return answers


@pytest.mark.parametrize("conf_type", CONF_TYPES)
def test_tied_scores_fuse_as_the_general_path_and_ensemble_boxes(conf_type, kernels, monkeypatch):
    rng = np.random.default_rng(40 + CONF_TYPES.index(conf_type))
    answers = count_first_answers(kernels, monkeypatch)
    resolved_ties = 0
    for case in range(150):
        args, kwargs = tied_case(rng, conf_type)
        del answers[:]
        got = resolved(kernels, *args, **kwargs)
        if got is None:
            continue  # what fuse declines for other reasons (weights, fixed-up values) stays with the general path
        resolved_ties += any(ordered for ordered, _ in answers)
        context = "case %d, %r" % (case, kwargs)
        assert_same(general_path(monkeypatch, *args, **kwargs), got, context)
        if HAVE_ENSEMBLE_BOXES:
            assert_same(reference(*args, **kwargs), got, context)
    assert resolved_ties > 20


def test_repeated_list_ties_every_score(kernels, monkeypatch):
    rng = np.random.default_rng(3)
    boxes = np.clip(rng.normal([0.2, 0.2, 0.6, 0.6], 0.05, (300, 4)), 0, 1)
    args = ([boxes] * 3, [rng.random(300)] * 3, [rng.integers(0, 4, 300)] * 3)
    answers = count_first_answers(kernels, monkeypatch)
    got = resolved(kernels, *args)
    assert [ordered for ordered, _ in answers] == [False, True]
    assert type(answers[0][1]) is TiedGroups and answers[0][1].bounds.tolist()[-1] == 900
    assert_same(general_path(monkeypatch, *args), got)


def test_without_ties_one_call_is_enough(kernels, monkeypatch):
    rng = np.random.default_rng(4)
    boxes = rng.uniform(0, 0.5, (50, 4))
    boxes[:, 2:] += 0.3
    args = ([boxes], [rng.random(50)], [rng.integers(0, 3, 50)])
    answers = count_first_answers(kernels, monkeypatch)
    got = resolved(kernels, *args)
    assert [ordered for ordered, _ in answers] == [False]
    assert_same(general_path(monkeypatch, *args), got)


@pytest.mark.parametrize("order", [[0, 5], [-1, 0]])
def test_an_order_outside_its_group_is_refused(order, kernels):
    boxes = np.array([[0.1, 0.1, 0.4, 0.4], [0.12, 0.1, 0.42, 0.4]])
    args = native_wbf._arguments([boxes], [np.array([0.5, 0.5])], [np.array([1, 1])], None, 0.55, 0.0, "avg",
                                 False, _WEAK_SCALARS, _F32_DIVISOR)
    assert type(kernels.wbf_fuse(*args)) is TiedGroups
    with pytest.raises(NativeError, match="rw_wbf_fuse refused"):
        kernels.wbf_fuse(*args, order=np.array(order, np.int64).tobytes())


@pytest.mark.parametrize("native_path", ["1", "0"])
@pytest.mark.parametrize("decimals", [1, 3, 7])
def test_the_pipelines_view_fusion_equals_fuse_concatenated(native_path, decimals, kernels, monkeypatch):
    """Seven views' boxes in frame pixels, some past the frame or without area, scores tied to `decimals`."""
    rng = np.random.default_rng(decimals)
    counts = rng.integers(0, 300, 7).tolist()
    n = sum(counts)
    xy = rng.uniform(-20, 1000, (n, 2))
    xyxy = np.concatenate([xy, xy + rng.uniform(0, 200, (n, 2))], axis=1)
    xyxy[: n // 20, 2] = xyxy[: n // 20, 0]
    views = (xyxy, np.round(rng.uniform(0.001, 1, n), decimals).astype(np.float32),
             rng.integers(0, 7, n).astype(np.int32), counts)
    fusion = {"iou_thr": 0.55, "skip_box_thr": 0.0, "conf_type": "avg"}
    monkeypatch.setenv("REEFWATCH_NATIVE", native_path)
    monkeypatch.setitem(native._state, "kernels", kernels)
    got = _fuse_views(views, (1024, 768), fusion)
    monkeypatch.setenv("REEFWATCH_NATIVE", "0")
    expected = fuse_concatenated(*views, (1024, 768), **fusion)
    for name in ("xyxy", "score", "class_id"):
        e, g = getattr(expected, name), getattr(got, name)
        assert e.dtype == g.dtype
        np.testing.assert_array_equal(g, e, err_msg=name)

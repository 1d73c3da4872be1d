"""edge.native: the C kernels against the Python/numpy path they stand in for, the loader, the build.

The in-tree library is used when built; else, where a C compiler exists, one is
built into a temporary folder, so that the native path is tested wherever it can run.
"""
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from edge import native
from edge.boxes import nms
from edge.fusion import CONF_TYPES, weighted_boxes_fusion
from edge.native import build as native_build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    path = native.library_path()
    if not os.path.exists(path):
        if native_build.find_compiler() is None:
            pytest.skip("no C compiler here, so no native library to test")
        path, _ = native_build.build(str(tmp_path_factory.mktemp("native") / native.LIBRARY_NAME))
    return native.load(path)


def on_both_paths(fn, kernels, monkeypatch):
    """fn() on the Python/numpy path, then on ``kernels`` (counting its calls)."""
    monkeypatch.setenv("REEFWATCH_NATIVE", "0")
    expected = fn()
    calls = []
    monkeypatch.setenv("REEFWATCH_NATIVE", "1")
    monkeypatch.setitem(native._state, "kernels", kernels)
    for name in ("wbf_fuse", "wbf_cluster", "nms"):
        original = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _f=original, _n=name, **kw: calls.append(_n) or _f(*a, **kw))
    got = fn()
    return expected, got, calls


def assert_identical(expected, got):
    for e, g in zip(expected, got):
        assert e.dtype == g.dtype and e.shape == g.shape
        np.testing.assert_array_equal(g, e)  # NaN == NaN here, every other value bit for bit


def _shapes():
    from benchmarks.fusion import crowd_lists, ensemble_lists, stage2_lists, yolo_lists
    return [
        ("yolo", lambda rng: yolo_lists(rng)),
        ("crowd", lambda rng: crowd_lists(rng)),
        # 10,000 boxes of one label packed into the frame: the grid must keep this fast.
        ("dense-10k", lambda rng: crowd_lists(rng, n_lists=4, n_boxes=2500, n_objects=400)),
        ("stage2", lambda rng: stage2_lists(rng)),
        ("ensemble", lambda rng: ensemble_lists(rng, 21, 100, 80, 6)),
        # Whole-frame boxes: windows span every cell, and centres sit on the frame edges.
        ("frame-size", lambda rng: ([np.clip(rng.normal([0, 0, 1, 1], 0.05, (200, 4)), 0, 1)] * 3,
                                    [rng.random(200)] * 3, [np.zeros(200)] * 3)),
    ]


@pytest.mark.parametrize("conf_type", CONF_TYPES)
@pytest.mark.parametrize("name, make", _shapes(), ids=[n for n, _ in _shapes()])
@pytest.mark.parametrize("iou_thr", [0.3, 0.55, 0.8])
def test_fusion_native_equals_python(name, make, conf_type, iou_thr, kernels, monkeypatch):
    lists = make(np.random.default_rng(len(name)))
    weights = np.linspace(0.5, 2.0, len(lists[0])).tolist() if conf_type != "avg" else None
    expected, got, calls = on_both_paths(
        lambda: weighted_boxes_fusion(*lists, weights=weights, iou_thr=iou_thr, conf_type=conf_type),
        kernels, monkeypatch)
    assert_identical(expected, got)
    if name == "frame-size" and weights is None:
        # One score list repeated: scores tie within a label; numpy orders them and rw_wbf_fuse runs again.
        assert calls == ["wbf_fuse", "wbf_fuse"]
    elif len(lists[0]) >= 8 and conf_type in ("box_and_model_avg", "absent_model_aware_avg"):
        # Fractional weights of 8+ lists: numpy's pairwise sums per cluster stay with the general path.
        assert calls == ["wbf_cluster"]
    else:
        assert calls == ["wbf_fuse"]


def test_random_cases_with_python_only_labels_mix_both_loops(kernels, monkeypatch):
    # Zero scores send a label through the Python loop while the others go native.
    from tests.test_fusion import random_case
    rng = np.random.default_rng(11)
    mixed = 0
    for _ in range(150):
        (boxes, scores, labels), kwargs = random_case(rng, CONF_TYPES[int(rng.integers(0, 4))])
        expected, got, calls = on_both_paths(lambda: weighted_boxes_fusion(boxes, scores, labels, **kwargs),
                                             kernels, monkeypatch)
        assert_identical(expected, got)
        mixed += "wbf_cluster" in calls and any(len(s) and np.min(s) == 0 for s in scores)
    assert mixed > 0


@pytest.mark.parametrize("f32_divisor", [True, False])
def test_clusters_equal_for_both_divisions(f32_divisor, kernels, monkeypatch):
    # numpy < 2 divides the float32 sums by float32(sum of scores), numpy 2 in float64:
    # both rules are run here, whichever numpy is installed.
    from benchmarks.fusion import yolo_lists
    from edge.fusion import _prefilter, _sort_by_label_and_score
    from edge.fusion_cluster import cluster_rows
    lists = yolo_lists(np.random.default_rng(3))
    rows, groups = _sort_by_label_and_score(_prefilter(*lists, np.ones(7), 0.0))
    expected, got, _ = on_both_paths(lambda: cluster_rows(rows, groups, 0.55, f32_divisor), kernels, monkeypatch)
    for field in ("first", "count", "merged", "values", "wsum", "row_cluster"):
        e, g = getattr(expected, field), getattr(got, field)
        assert e.dtype == g.dtype, field
        np.testing.assert_array_equal(g, e, err_msg=field)


@pytest.mark.parametrize("scores, joined", [
    # C overlaps A and B with the same IoU, 0.03125 / 0.15625 = 0.2: it joins the
    # earlier cluster, as numpy's argmax picks the first maximum.
    ((0.9, 0.8, 0.5), 0),
    ((0.9, 0.8, 0.5), 1),
])
@pytest.mark.parametrize("f32_divisor", [True, False])
def test_equal_iou_joins_the_first_cluster(scores, joined, f32_divisor, kernels, monkeypatch):
    from edge.fusion_cluster import cluster_rows
    a, b, c = [0.0, 0.0, 0.25, 0.25], [0.5, 0.0, 0.75, 0.25], [0.125, 0.0, 0.625, 0.25]
    boxes = [a, b, c] if joined == 0 else [b, a, c]
    rows = np.array([[0, s, 1.0, 0] + box for s, box in zip(scores, boxes)])
    expected, got, calls = on_both_paths(lambda: cluster_rows(rows, [(0, 3)], 0.1, f32_divisor), kernels,
                                         monkeypatch)
    assert calls == ["wbf_cluster"]
    for clusters in (expected, got):
        assert clusters.row_cluster.tolist() == [0, 1, 0] and clusters.merged.tolist() == [0]
        # 1.0.9's float32 sums, divided by float32 (numpy < 2) or float64 (numpy 2) sum of scores.
        s0, s2 = scores[0], scores[2]
        sums = np.float32(np.float32(s0 * np.array(boxes[0])) + s2 * np.array(c))
        divisor = float(np.float32(s0 + s2)) if f32_divisor else s0 + s2
        fused = np.float32(sums.astype(np.float64) / divisor)
        np.testing.assert_array_equal(clusters.values[0], np.concatenate([sums, [s0 + s2], fused]))
        assert clusters.wsum.tolist() == [2.0]


def test_nms_native_equals_numpy_on_dense_inputs(kernels, monkeypatch):
    from tests.test_boxes import CASES
    for make in CASES:
        boxes, score, cls = make(np.random.default_rng(CASES.index(make)))
        for iou_thr, max_det in ((0.7, 300), (0.45, None), (0.0, None), (1.0, 50)):
            expected, got, calls = on_both_paths(lambda: nms(boxes, score, iou_thr, cls, max_det), kernels,
                                                 monkeypatch)
            assert calls == ["nms"]
            np.testing.assert_array_equal(got, expected, err_msg="%s %r" % (make.__name__, iou_thr))


def test_empty_inputs(kernels):
    row_cluster, first, count, wsum, values = kernels.wbf_cluster(np.zeros((0, 8)), [], 0.5, True)
    assert (row_cluster.shape, first.shape, values.shape) == ((0,), (0,), (0, 9))
    assert kernels.nms(np.zeros((0, 4), np.float32), 0.5, 10).shape == (0,)
    assert kernels.nms(np.ones((3, 4), np.float32), 0.5, 0).shape == (0,)


@pytest.mark.parametrize("call, match", [
    (lambda k: k.nms(np.zeros((4, 4)), 0.5, 10), "float32"),
    (lambda k: k.nms(np.zeros((4, 8), np.float32)[:, ::2], 0.5, 10), "C-contiguous"),
    (lambda k: k.nms(np.zeros((4, 3), np.float32), 0.5, 10), "shape"),
    (lambda k: k.wbf_cluster(np.zeros((4, 8), np.float32), [0, 4], 0.5, True), "float64"),
    (lambda k: k.wbf_cluster(np.zeros((4, 8)), [0, 4], 0.0, True), "iou_thr"),
])
def test_kernels_refuse_arrays_they_cannot_take(call, match, kernels):
    with pytest.raises(native.NativeError, match=match):
        call(kernels)


def test_native_off_by_environment(kernels, monkeypatch):
    monkeypatch.setitem(native._state, "kernels", kernels)
    monkeypatch.setenv("REEFWATCH_NATIVE", "0")
    assert native.active() is None and not native.available()
    monkeypatch.setenv("REEFWATCH_NATIVE", "1")
    assert native.active() is kernels


def test_missing_library_means_python_path_logged_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setattr(native, "library_path", lambda: str(tmp_path / native.LIBRARY_NAME))
    monkeypatch.setenv("REEFWATCH_NATIVE", "1")
    with caplog.at_level(logging.DEBUG, logger="edge.native"):
        assert not native.available()
        assert native.active() is None
    assert [r.getMessage() for r in caplog.records] == [
        "edge.native: no %s (run python -m edge.native.build): numpy/Python path" % (tmp_path / native.LIBRARY_NAME)]


def test_a_file_that_is_no_library_is_refused(tmp_path):
    bad = tmp_path / native.LIBRARY_NAME
    bad.write_text("not a library")
    with pytest.raises(native.NativeError, match="cannot load .*rebuild"):
        native.load(str(bad))


def test_import_loads_and_builds_nothing():
    code = ("import os, edge.native, edge.fusion, edge.boxes; "
            "print(edge.native._state)")
    before = sorted(os.listdir(os.path.join(ROOT, "edge", "native")))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                         universal_newlines=True, check=True).stdout
    assert out.strip() == "{}"
    assert sorted(os.listdir(os.path.join(ROOT, "edge", "native"))) == before


@pytest.mark.parametrize("flag, present", [
    ("-ffp-contract=off", True),  # no FMA: aarch64 would round a * b + c once, Python rounds twice
    ("-std=c99", True),
    ("-O2", True),
    ("-ffast-math", False),
    ("-march=native", False),
])
def test_build_flags_keep_results_machine_independent(flag, present):
    assert (flag in native_build.FLAGS) == present


def test_build_without_a_compiler_exits_2(monkeypatch, capsys):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    assert native_build.main([]) == 2
    assert "no C compiler" in capsys.readouterr().err


def test_a_failing_compile_is_an_error_naming_the_source(tmp_path):
    with pytest.raises(native.NativeError, match="kernels.c failed"):
        native_build.build(str(tmp_path / "k.so"), cc="false")
    assert os.listdir(str(tmp_path)) == []  # no temporary left behind


def test_build_prints_the_command_and_makes_a_loadable_library(tmp_path, capsys):
    if native_build.find_compiler() is None:
        pytest.skip("no C compiler here")
    out = tmp_path / native.LIBRARY_NAME
    assert native_build.main(["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "-ffp-contract=off" in printed and str(out) in printed
    assert native.load(str(out)).nms(np.array([[0, 0, 1, 1]] * 2, np.float32), 0.5, 10).tolist() == [0]

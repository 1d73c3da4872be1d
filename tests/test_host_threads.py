"""A frame's views letterboxed and decoded in two halves at once give what one thread gives, bit for bit."""
import threading

import numpy as np
import pytest

from edge import native
from edge.decode import decode_head
from edge.errors import ConfigError
from edge.host_threads import HostThreads, best_split
from edge.tta import BatchBuffer, prepare_views, view_plan


def _native_or_skip():
    if native.active() is None:
        pytest.skip("the native kernels are not built (python -m edge.native.build)")


def test_halves_cover_the_range_once_and_use_a_second_thread():
    host = HostThreads(2)
    seen = []

    def work(start, end):
        seen.append((start, end, threading.current_thread().name))
        return list(range(start, end))

    try:
        parts = host.halves(work, 7)
    finally:
        host.close()
    assert sum(parts, []) == list(range(7)) and len(parts) == 2
    assert len({name for _, _, name in seen}) == 2


def test_one_thread_or_one_item_is_one_call():
    calls = []
    single = HostThreads(1)
    assert single.halves(lambda s, e: calls.append((s, e)) or "all", 7) == ["all"]
    double = HostThreads(2)
    try:
        assert double.halves(lambda s, e: calls.append((s, e)) or "one", 1) == ["one"]
    finally:
        double.close()
    assert calls == [(0, 7), (0, 1)]


def test_the_split_balances_the_cost():
    # five cheap views of one size then two of their own sizes (a resize costs two views)
    sizes = ["a"] * 5 + ["b", "c"]
    cost = lambda s, e: (e - s) + 2 * len(set(sizes[s:e]))  # noqa: E731
    assert best_split(7, cost) == 5
    assert best_split(6, lambda s, e: e - s) == 3
    assert best_split(2, lambda s, e: e - s) == 1


def test_a_failing_half_is_raised_after_both_halves_ended():
    host = HostThreads(2)
    finished = []

    def work(start, end):
        if start == 0:
            raise ValueError("first half")
        finished.append(start)
        return start

    try:
        with pytest.raises(ValueError, match="first half"):
            host.halves(work, 4)
        assert finished == [2]
        with pytest.raises(KeyError):
            host.halves(lambda s, e: {}[s] if s else None, 4)  # the helper's half fails
    finally:
        host.close()


@pytest.mark.parametrize("threads", [0, 3, "2"])
def test_host_threads_outside_one_or_two_are_refused(threads):
    with pytest.raises(ConfigError, match="host_threads must be 1 or 2"):
        HostThreads(threads)


@pytest.mark.parametrize("plan", ["full", "flip", [{"scale": 1.3}, {"hflip": True, "rot90": 1}, {"scale": 0.5}]],
                         ids=["full", "flip", "three-sizes"])
def test_views_built_in_halves_equal_one_thread(plan):
    _native_or_skip()
    frame = np.random.RandomState(3).randint(0, 256, (1024, 768, 3)).astype(np.uint8)
    expected, _ = prepare_views(frame, view_plan(plan), 320, 256)
    host = HostThreads(2)
    try:
        got, _ = prepare_views(frame, view_plan(plan), 320, 256, host=host)
        np.testing.assert_array_equal(got, expected)
        buffer = BatchBuffer(expected.shape)
        for _ in range(2):  # the second frame keeps the grey in place
            got, _ = prepare_views(frame, view_plan(plan), 320, 256, out=buffer, host=host)
            np.testing.assert_array_equal(got, expected)
        assert buffer.layout is not None
    finally:
        host.close()


@pytest.mark.parametrize("concatenated", [False, True])
def test_heads_decoded_in_halves_equal_one_thread(concatenated):
    _native_or_skip()
    rng = np.random.RandomState(5)
    head = rng.rand(7, 4 + 5, 600).astype(np.float32)
    head[:, :2] *= 320
    head[:, 2:4] = head[:, 2:4] * 60 + 2
    kwargs = dict(conf_thr=0.05, iou_thr=0.5, multi_label=True, concatenated=concatenated)
    expected = decode_head(head, 5, **kwargs)
    host = HostThreads(2)
    try:
        got = decode_head(head, 5, host=host, **kwargs)
    finally:
        host.close()
    if concatenated:
        for a, b in zip(got[:3], expected[:3]):
            np.testing.assert_array_equal(a, b)
        assert got[3] == expected[3] and sum(got[3]) > 0
    else:
        assert len(got) == len(expected) == 7
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a.xyxy, b.xyxy)
            np.testing.assert_array_equal(a.score, b.score)
            np.testing.assert_array_equal(a.class_id, b.class_id)

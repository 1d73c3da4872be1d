"""Pure helpers of `trainer specialize`: oversampling, counts, the negative pool, the background cap, rounds."""
import pytest

from trainer.stages import mining

CATEGORIES = {0: "critical", 1: "important", 2: "general", 3: "critical"}
NAMES = ["shark", "ray", "fish", "turtle"]
LABELS = {"a.jpg": [0, 2], "b.jpg": [1], "c.jpg": [], "d.jpg": [3, 3], "e.jpg": [2, 2, 1]}


@pytest.mark.parametrize("critical, times", [([0, 3], 3), ([0, 3], 1), ([1], 2), ([], 5), ([0, 1, 2, 3], 4)])
def test_oversampled_list_repeats_exactly_the_images_holding_a_critical_class(critical, times):
    paths = sorted(LABELS)
    got = mining.oversampled_list(paths, LABELS, critical, times)
    for path in paths:
        expected = times if set(LABELS[path]) & set(critical) else 1
        assert got.count(path) == expected
    assert len(got) == sum(times if set(LABELS[p]) & set(critical) else 1 for p in paths)
    assert [p for i, p in enumerate(got) if i == 0 or got[i - 1] != p] == paths  # order kept, repeats adjacent


def test_instance_counts_count_repeats_per_class_and_per_category():
    entries = mining.oversampled_list(sorted(LABELS), LABELS, mining.critical_ids(CATEGORIES), 3)
    got = mining.instance_counts(entries, LABELS, NAMES, CATEGORIES)
    assert got["images"] == len(entries)
    assert got["background_images"] == entries.count("c.jpg")
    for c, name in enumerate(NAMES):
        assert got["per_class"][name] == sum(LABELS[p].count(c) for p in entries)
    for category in ("critical", "important", "general"):
        ids = [c for c, k in CATEGORIES.items() if k == category]
        assert got["per_category"][category] == sum(LABELS[p].count(c) for p in entries for c in ids)
        assert got["images_per_category"][category] == sum(any(c in ids for c in LABELS[p]) for p in entries)
    assert got["instances"] == sum(len(LABELS[p]) for p in entries)


def test_critical_ids():
    assert mining.critical_ids(CATEGORIES) == [0, 3]
    assert mining.critical_ids({}) == []


@pytest.mark.parametrize("labelled, backgrounds, fraction", [
    (90, 0, 0.1), (90, 4, 0.1), (90, 10, 0.1), (90, 15, 0.1), (12, 0, 0.25), (7, 1, 0.3), (0, 0, 0.1),
    (100, 0, 0.0), (5, 0, 0.5), (1000, 3, 0.05),
])
def test_background_room_keeps_backgrounds_within_the_fraction(labelled, backgrounds, fraction):
    room = mining.background_room(labelled, backgrounds, fraction)
    share = lambda n: (backgrounds + n) / (labelled + backgrounds + n) if labelled + backgrounds + n else 0.0
    # the largest n >= 0 with share(n) <= fraction, found by counting up
    expected = 0
    while share(expected + 1) <= fraction + 1e-12:
        expected += 1
    assert room == expected


def test_background_room_without_limit_and_capping():
    assert mining.background_room(10, 3, 1.0) is None
    assert mining.add_capped(["x", "y", "z"], None) == ["x", "y", "z"]
    assert mining.add_capped(["x", "y", "z"], 2) == ["x", "y"]
    assert mining.add_capped(["x", "y", "z"], 0) == []


def test_a_labelled_image_with_an_unlabelled_detection_never_becomes_a_negative():
    labels = {"labelled.jpg": [2], "empty.jpg": [], "missing-label.jpg": []}
    scores = {"labelled.jpg": 0.99, "empty.jpg": 0.5, "missing-label.jpg": 0.3, "unknown.jpg": 0.4}
    got = mining.select_mined(scores, 0.25, taken=set(), labels=labels)
    assert "labelled.jpg" not in got
    assert got == ["empty.jpg", "unknown.jpg", "missing-label.jpg"]  # hardest first


@pytest.mark.parametrize("conf, taken, expected", [
    (0.25, set(), ["b", "a", "d"]),
    (0.4, set(), ["b", "a"]),
    (0.5, set(), ["b"]),            # strictly above mine_conf
    (0.0, {"b"}, ["a", "d", "e"]),  # mined before: never added twice
    (0.9, set(), []),
])
def test_select_mined(conf, taken, expected):
    scores = {"a": 0.5, "b": 0.8, "c": None, "d": 0.3, "e": 0.0001}
    assert mining.select_mined(scores, conf, taken, labels={}) == expected


@pytest.mark.parametrize("n, fraction", [(10, 0.3), (1, 0.3), (7, 0.5), (3, 0.01), (20, 1.0)])
def test_split_pool_is_deterministic_disjoint_and_sized(n, fraction):
    paths = ["f%02d.jpg" % i for i in range(n)]
    mine, held = mining.split_pool(list(reversed(paths)), fraction, seed=7)
    assert (mine, held) == mining.split_pool(paths, fraction, seed=7)
    assert sorted(mine + held) == paths and not set(mine) & set(held)
    assert len(held) == min(n, max(1, int(round(n * fraction))))
    assert mining.split_pool([], fraction, seed=7) == ([], [])


def test_split_pool_depends_on_the_seed():
    paths = ["f%02d.jpg" % i for i in range(30)]
    assert mining.split_pool(paths, 0.3, 0)[1] != mining.split_pool(paths, 0.3, 1)[1]


def _fig(fp, critical, recall=0.5):
    return {"fp_per_background_image": fp, "critical_recall": critical, "recall": recall}


@pytest.mark.parametrize("previous, current, fp_tol, rec_tol, worse", [
    (_fig(1.0, 0.8), _fig(1.0, 0.8), 0.0, 0.02, None),
    (_fig(1.0, 0.8), _fig(0.5, 0.79), 0.0, 0.02, None),
    (_fig(1.0, 0.8), _fig(1.2, 0.8), 0.0, 0.02, "FP per background image"),
    (_fig(1.0, 0.8), _fig(1.2, 0.8), 0.5, 0.02, None),
    (_fig(1.0, 0.8), _fig(0.5, 0.7), 0.0, 0.02, "critical recall"),
    (_fig(1.0, None, 0.6), _fig(1.0, None, 0.5), 0.0, 0.02, "lowered recall"),
    (_fig(None, 0.8), _fig(None, 0.8), 0.0, 0.02, None),
])
def test_regression(previous, current, fp_tol, rec_tol, worse):
    got = mining.regression(previous, current, fp_tol, rec_tol)
    assert (got is None) if worse is None else (worse in got)


def test_best_round_prefers_fewest_fp_then_recall_and_skips_rounds_not_kept():
    records = [{"round": 0, "kept": True, "figures": _fig(2.0, 0.8)},
               {"round": 1, "kept": True, "figures": _fig(1.0, 0.7)},
               {"round": 2, "kept": True, "figures": _fig(1.0, 0.75)},
               {"round": 3, "kept": False, "figures": _fig(0.1, 0.2)},
               {"round": 4, "kept": False, "figures": None}]
    index, reason = mining.best_round(records)
    assert index == 2 and "round 2" in reason and "0, 1, 2" in reason
    assert mining.best_round(records[3:]) == (None, "no round finished")
    index, reason = mining.best_round([{"round": 0, "kept": True, "figures": _fig(None, None, None)}])
    assert index == 0 and "n/a" in reason

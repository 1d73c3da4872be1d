"""The budget gate's verdict from figures and floors (pure)."""
import math

import pytest

from trainer.gate import verdict

FLOORS = {"min_critical_recall": 0.5, "min_map50": 0.3, "budget_wh_day": 20.0}


def figures(critical_recall=0.6, map50=0.4, wh_day=10.0):
    return {"critical_recall": critical_recall, "map50": map50, "wh_day": wh_day}


@pytest.mark.parametrize("given, failing", [
    (figures(), []),
    (figures(critical_recall=0.5, map50=0.3, wh_day=20.0), []),         # at the floor passes
    (figures(critical_recall=0.49), ["critical_recall"]),
    (figures(map50=0.299), ["map50"]),
    (figures(wh_day=20.01), ["wh_day"]),
    (figures(critical_recall=0.1, map50=0.1, wh_day=99.0), ["critical_recall", "map50", "wh_day"]),
    (figures(critical_recall=None), ["critical_recall"]),               # not measurable: fails a positive floor
    (figures(map50=float("nan")), ["map50"]),
    (figures(wh_day=None), ["wh_day"]),
])
def test_verdict_fails_exactly_the_figures_past_their_floors(given, failing):
    result = verdict("ensemble_full", given, FLOORS)
    assert result["passed"] is (not failing)
    assert sorted(k for k, c in result["checks"].items() if not c["passed"]) == sorted(failing)
    assert len(result["failures"]) == len(failing)
    assert result["profile"] == "ensemble_full"


@pytest.mark.parametrize("key, value, floor_key, words", [
    ("critical_recall", 0.25, "min_critical_recall", ["critical recall", "0.25", "under the floor 0.5",
                                                      "bundle.min_critical_recall"]),
    ("map50", 0.125, "min_map50", ["mAP50", "0.125", "under the floor 0.3", "bundle.min_map50"]),
    ("wh_day", 31.5, "budget_wh_day", ["Wh/day", "31.5", "over the budget 20", "bundle.budget_wh_day"]),
])
def test_failure_names_figure_value_floor_and_setting(key, value, floor_key, words):
    given = figures()
    given[key] = value
    (message,) = verdict("single", given, FLOORS)["failures"]
    assert "profile single" in message
    for word in words:
        assert word in message


def test_a_zero_floor_accepts_an_unmeasured_recall_and_the_reason_is_named():
    floors = dict(FLOORS, min_critical_recall=0.0)
    assert verdict("single", figures(critical_recall=None), floors)["passed"]
    result = verdict("single", figures(critical_recall=None, wh_day=None), FLOORS,
                     reasons={"critical_recall": "no critical box", "wh_day": "frames do not fit the day"})
    assert any("could not be measured (no critical box)" in f for f in result["failures"])
    assert any("frames do not fit the day" in f for f in result["failures"])


def test_checks_carry_value_and_floor():
    checks = verdict("single", figures(), FLOORS)["checks"]
    assert checks["map50"] == {"value": 0.4, "floor": 0.3, "passed": True}
    assert checks["wh_day"]["floor"] == 20.0 and not math.isnan(checks["wh_day"]["value"])

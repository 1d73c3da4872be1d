"""Wh/day arithmetic (edge.energy) and the governor's choices (edge.governor); cascade rule: test_profiles."""
import datetime
import time

import numpy as np
import pytest

from edge.energy import (BudgetInfeasible, DeploymentProfile, cascade_energy_j, daily_energy,
                         local_day_bounds_unix_s, parse_deployment_items)
from edge.errors import ConfigError
from edge.governor import EscalationRate, Governor, RunningMedian


def local_t(y, mo, d, h=0, mi=0, s=0):
    return time.mktime(datetime.datetime(y, mo, d, h, mi, s).timetuple())


NOON = local_t(2024, 6, 1, 12)
MIDNIGHT = local_t(2024, 6, 1)


@pytest.mark.parametrize("interval_s, powered_h, idle_w, sleep_w, e_j, lat_s", [
    (10.0, 24.0, 1.5, 0.0, 2.0, 0.5),
    (60.0, 6.0, 2.0, 0.05, 12.0, 3.0),
    (5.0, 12.0, 1.0, 0.1, 0.8, 0.2),
])
def test_daily_energy_matches_formula(interval_s, powered_h, idle_w, sleep_w, e_j, lat_s):
    d = DeploymentProfile(100.0, "total", capture_interval_s=interval_s, powered_hours_per_day=powered_h,
                          idle_power_w=idle_w, sleep_power_w=sleep_w)
    powered_s = powered_h * 3600
    frames = powered_s / interval_s
    got = daily_energy(d, e_j, lat_s)
    assert got.frames == pytest.approx(frames)
    assert got.inference_wh == pytest.approx(frames * e_j / 3600)
    assert got.idle_wh == pytest.approx(idle_w * (powered_s - frames * lat_s) / 3600)
    assert got.sleep_wh == pytest.approx(sleep_w * (86400 - powered_s) / 3600)
    assert got.total_wh == pytest.approx(got.inference_wh + got.idle_wh + got.sleep_wh)


def test_always_on_idle_is_24_to_48_wh_and_infeasible_total_budget_raises():
    for idle_w in (1.0, 2.0):
        d = DeploymentProfile(14.4, "inference", frames_per_day=0, idle_power_w=idle_w)
        assert d.baseline_wh_day == pytest.approx(24 * idle_w)
        assert "24-48 Wh/day" in d.note
    with pytest.raises(BudgetInfeasible, match="zero frames") as err:
        DeploymentProfile(14.4, "total", frames_per_day=100, idle_power_w=1.5).check_budget()
    assert "36.00 Wh/day" in str(err.value)
    # 6 powered hours at 1.5 W and 18 h off at 0.05 W: 9 + 0.9 Wh leaves room
    ok = DeploymentProfile(14.4, "total", frames_per_day=100, powered_hours_per_day=6, idle_power_w=1.5,
                           sleep_power_w=0.05).check_budget()
    assert ok.baseline_wh_day == pytest.approx(1.5 * 6 + 0.05 * 18)


@pytest.mark.parametrize("kwargs, word", [
    ({"capture_interval_s": 10, "frames_per_day": 5}, "exactly one"),
    ({}, "exactly one"),
    ({"frames_per_day": 5, "budget_scope": "daily"}, "budget_scope"),
    ({"frames_per_day": 5, "powered_hours_per_day": 25}, "powered_hours_per_day"),
    ({"capture_interval_s": 0}, "capture_interval_s"),
])
def test_profile_validation(kwargs, word):
    with pytest.raises(ConfigError, match=word):
        DeploymentProfile(10.0, **kwargs)


def test_profile_round_trips_through_dict():
    d = DeploymentProfile(20.0, "total", capture_interval_s=30, powered_hours_per_day=8, idle_power_w=1.2)
    assert DeploymentProfile.from_dict(d.to_dict()).to_dict() == d.to_dict()
    with pytest.raises(ConfigError, match="watts"):
        DeploymentProfile.from_dict(dict(d.to_dict(), watts=3))


def test_busy_beyond_powered_time_raises():
    d = DeploymentProfile(10.0, frames_per_day=86400, idle_power_w=1.0)
    with pytest.raises(ConfigError, match="busy"):
        daily_energy(d, 1.0, latency_per_frame_s=2.0)


def test_cascade_energy():
    assert cascade_energy_j(2.0, 10.0, 0.3) == pytest.approx(2.0 + 0.3 * 10.0)


def test_running_median_and_escalation_rate():
    m = RunningMedian(window=3, prior=5.0)
    assert m.value == 5.0
    for v in (1.0, 100.0, 2.0, 3.0):
        m.add(v)
    assert m.value == np.median([100.0, 2.0, 3.0])
    r = EscalationRate(prior=0.2, prior_weight=10, window=50)
    flags = [True, False, False, True, True]
    for f in flags:
        r.add(f)
    assert r.value == pytest.approx((0.2 * 10 + sum(flags)) / (10 + len(flags)))


def test_day_bounds_contain_time():
    start, end = local_day_bounds_unix_s(NOON)
    assert start == MIDNIGHT and start < NOON < end
    assert 23 * 3600 <= end - start <= 25 * 3600


PRIORS = {"single": 1.0, "ensemble": 3.0, "ensemble_flip": 6.0, "ensemble_full": 12.0}
ORDER = ("single", "ensemble", "ensemble_flip", "ensemble_full")


def inference_governor(budget_wh, frames_per_day=1000.0, priors=PRIORS, order=ORDER, clock=None):
    d = DeploymentProfile(budget_wh, "inference", frames_per_day=frames_per_day)
    return Governor(d, order, prior_energy_j=dict(priors), headroom_frac=0.0, clock=clock or (lambda: MIDNIGHT))


@pytest.mark.parametrize("profile", ORDER)
def test_choice_at_budget_edges(profile):
    # At midnight all 1000 frames are to come: a profile fits iff 1000 x E / 3600 <= budget.
    edge_wh = 1000 * PRIORS[profile] / 3600
    at_edge = inference_governor(edge_wh).plan(MIDNIGHT)
    assert at_edge.profile == profile and at_edge.frame_fraction == 1.0
    below = inference_governor(edge_wh * 0.999).plan(MIDNIGHT)
    i = ORDER.index(profile)
    if i == 0:
        assert below.profile == "single" and below.frame_fraction == pytest.approx(0.999)
        assert "over budget" in below.reason
    else:
        assert below.profile == ORDER[i - 1]


def test_spent_energy_and_elapsed_day_shape_the_choice():
    g = inference_governor(budget_wh=2.0)  # 1000 frames x 6 J = 1.667 Wh: flip fits at midnight
    assert g.plan(MIDNIGHT).profile == "ensemble_flip"
    g.restore_spent(inference_j=1.5 * 3600, t_unix_s=NOON)  # 1.5 Wh spent by noon, ~500 frames to go
    decision = g.plan(NOON)
    half = 1.0 - (NOON - MIDNIGHT) / (local_day_bounds_unix_s(NOON)[1] - MIDNIGHT)
    assert decision.frames_left == pytest.approx(1000 * half)
    expected = {p: 1.5 + 1000 * half * e / 3600 for p, e in PRIORS.items()}
    assert decision.projected_wh == pytest.approx(expected)
    assert decision.profile == max((p for p in ORDER if expected[p] <= 2.0), key=ORDER.index)
    assert decision.changed and decision.previous == "ensemble_flip"


def test_replans_when_measured_energy_rises():
    g = inference_governor(budget_wh=1000 * 6.5 / 3600)
    assert g.plan(MIDNIGHT).profile == "ensemble_flip"
    for _ in range(10):  # flip really costs 8 J, not 6: the median moves after a few frames
        g.observe("ensemble_flip", 8.0, latency_s=1.0, t_unix_s=MIDNIGHT)
    d = g.plan(MIDNIGHT)
    assert g.estimate_j("ensemble_flip") == 8.0
    assert d.profile == "ensemble" and d.changed
    assert "ensemble_flip would reach" in d.reason
    assert d.spent_wh == pytest.approx(10 * 8.0 / 3600)


def test_cascade_estimate_and_choice():
    order = ("single", "cascade", "ensemble_full")
    g = inference_governor(budget_wh=1000 * 4.0 / 3600, order=order)
    # prior escalation 0.25 smoothed with no data: cascade = 1 + 0.25 x 12 = 4 J: fits exactly
    assert g.estimate_j("cascade") == pytest.approx(1.0 + 0.25 * 12.0)
    assert g.plan(MIDNIGHT).profile == "cascade"
    for _ in range(30):
        g.observe_cascade(1.0, escalated=True, full_energy_j=12.0, t_unix_s=MIDNIGHT)
    rate = (0.25 * 10 + 30) / (10 + 30)
    assert g.escalation_rate == pytest.approx(rate)
    assert g.estimate_j("cascade") == pytest.approx(1.0 + rate * 12.0)
    assert g.plan(MIDNIGHT).profile == "single"
    with pytest.raises(ConfigError, match="full_energy_j"):
        g.observe_cascade(1.0, escalated=True)


@pytest.mark.parametrize("flags", [[], [True] * 3, [True, False, False, True], [False] * 250, [True] * 250])
def test_restored_escalations_count_like_observed_ones(flags):
    restored = inference_governor(budget_wh=100.0)
    restored.restore_escalations(flags)
    kept = flags[-200:]  # the escalation window
    assert restored.escalation_rate == pytest.approx((0.25 * 10 + sum(kept)) / (10 + len(kept)))
    observed = inference_governor(budget_wh=100.0)
    for escalated in flags:
        observed.observe_cascade(1.0, escalated, 12.0, t_unix_s=MIDNIGHT)
    assert restored.escalation_rate == pytest.approx(observed.escalation_rate)
    assert restored.spent_wh(MIDNIGHT) == 0.0  # energy comes back through restore_spent, not here


def test_unmeasured_profiles_are_not_chosen_until_measured():
    g = inference_governor(budget_wh=100.0, priors={"single": 1.0})
    assert g.unmeasured() == ["ensemble", "ensemble_flip", "ensemble_full"]
    assert g.plan(MIDNIGHT).profile == "single"
    g.observe("ensemble_full", 5.0, t_unix_s=MIDNIGHT)
    assert g.plan(MIDNIGHT).profile == "ensemble_full"
    empty = inference_governor(budget_wh=100.0, priors={})
    assert "no energy estimate" in empty.plan(MIDNIGHT).reason


def test_total_scope_counts_idle_and_sleep():
    d = DeploymentProfile(20.0, "total", frames_per_day=1000, powered_hours_per_day=12, idle_power_w=1.0,
                          sleep_power_w=0.1)
    g = Governor(d, ORDER, prior_energy_j=PRIORS, prior_latency_s={p: 2.0 for p in ORDER}, headroom_frac=0.0,
                 clock=lambda: MIDNIGHT)
    decision = g.plan(MIDNIGHT)
    for p in ORDER:
        expected = daily_energy(d, PRIORS[p], 2.0).total_wh
        assert decision.projected_wh[p] == pytest.approx(expected)
    fitting = [p for p in ORDER if daily_energy(d, PRIORS[p], 2.0).total_wh <= 20.0]
    assert decision.profile == fitting[-1]
    # modelled spend at noon: half the day's idle and sleep, no frames yet
    frac = (NOON - MIDNIGHT) / (local_day_bounds_unix_s(NOON)[1] - MIDNIGHT)
    assert g.spent_wh(NOON) == pytest.approx((1.0 * 12 * 3600 * frac + 0.1 * 12 * 3600 * frac) / 3600)
    assert g.spent_wh(NOON, spent_total_wh=7.0) == 7.0


def test_over_budget_fraction_in_total_scope_keeps_within_budget():
    d = DeploymentProfile(13.0, "total", frames_per_day=4000, powered_hours_per_day=12, idle_power_w=1.0)
    g = Governor(d, ("single",), prior_energy_j={"single": 20.0}, prior_latency_s={"single": 1.0},
                 clock=lambda: MIDNIGHT)
    decision = g.plan(MIDNIGHT)
    f = decision.frame_fraction
    assert 0.0 < f < 1.0
    frames = 4000 * f
    assert daily_energy(d, 20.0, 1.0, frames=frames).total_wh == pytest.approx(13.0)


def test_headroom_prevents_flapping_upwards():
    d = DeploymentProfile(1000 * 3.0 / 3600 * 1.01, "inference", frames_per_day=1000)
    g = Governor(d, ORDER, prior_energy_j=PRIORS, headroom_frac=0.02, clock=lambda: MIDNIGHT)
    assert g.plan(MIDNIGHT).profile == "single"  # ensemble fits by 1 %, below the 2 % headroom to move up
    g.profile = "ensemble"
    assert g.plan(MIDNIGHT).profile == "ensemble"  # but staying there is fine


def test_rollover_at_local_midnight_resets_spend(caplog):
    now = [local_t(2024, 6, 1, 23, 59)]
    budget_wh = 1000 * 12.0 / 3600
    g = inference_governor(budget_wh, clock=lambda: now[0])
    for _ in range(3):
        g.observe("single", 1.0)
    g.restore_spent(inference_j=budget_wh * 3600 - 3.0)  # 3 J left for the last minute
    frames_left = 1000 * 60.0 / (local_day_bounds_unix_s(now[0])[1] - local_day_bounds_unix_s(now[0])[0])
    late = g.plan()
    assert late.profile == [p for p in ORDER if frames_left * PRIORS[p] <= 3.0][-1] == "ensemble"
    now[0] = local_t(2024, 6, 2, 0, 0, 1)
    with caplog.at_level("INFO", logger="edge.governor"):
        decision = g.plan()
    assert g.spent_wh() == 0.0 and decision.spent_wh == 0.0
    assert decision.profile == "ensemble_full"  # a whole day's budget again
    assert g.estimate_j("single") == 1.0  # estimates survive the day
    assert any("rollover" in r.message for r in caplog.records)


def test_governor_logs_changes(caplog):
    g = inference_governor(budget_wh=100.0)
    with caplog.at_level("INFO", logger="edge.governor"):
        d = g.plan(MIDNIGHT)
    assert d.changed and d.previous == "single" and d.profile == "ensemble_full"
    assert any("single -> ensemble_full" in r.getMessage() for r in caplog.records)


def test_governor_rejects_unknown_profile_and_infeasible_budget():
    d = DeploymentProfile(10.0, frames_per_day=10)
    with pytest.raises(ConfigError, match="tta_max"):
        Governor(d, ("single", "tta_max"))
    with pytest.raises(BudgetInfeasible):
        Governor(DeploymentProfile(10.0, "total", frames_per_day=10, idle_power_w=1.0), ORDER)


BASE = DeploymentProfile(14.4, "inference", capture_interval_s=60.0, powered_hours_per_day=24.0, idle_power_w=1.5)


@pytest.mark.parametrize("changes, dropped", [
    ({"budget_wh_day": 20.0}, None),
    ({"frames_per_day": 500.0}, "capture_interval_s"),  # counting frames per day replaces the interval
    ({"capture_interval_s": 30.0}, None),
    ({"idle_power_w": 1.0, "sleep_power_w": 0.05, "powered_hours_per_day": 6.0}, None),
])
def test_replace_changes_fields_and_keeps_exactly_one_frame_count(changes, dropped):
    got = BASE.replace(**changes)
    expected = dict(BASE.to_dict(), **changes)
    if dropped:
        expected[dropped] = None
    assert got.to_dict() == expected and BASE.capture_interval_s == 60.0  # the original is unchanged
    with pytest.raises(ConfigError, match="watts"):
        BASE.replace(watts=3.0)


@pytest.mark.parametrize("text, expected", [
    ("", {}),
    ("budget_wh_day=20, capture_interval_s=30", {"budget_wh_day": 20.0, "capture_interval_s": 30.0}),
    ("frames_per_day=500,capture_interval_s=none", {"frames_per_day": 500.0, "capture_interval_s": None}),
    ("budget_scope=total,powered_hours_per_day=6", {"budget_scope": "total", "powered_hours_per_day": 6.0}),
    ("idle_power_w=1.2,sleep_power_w=0", {"idle_power_w": 1.2, "sleep_power_w": 0.0}),
])
def test_deployment_items_use_the_profile_field_names(text, expected):
    items = parse_deployment_items(text)
    assert items == expected and set(items) <= set(DeploymentProfile.FIELDS)
    assert BASE.replace(**items).to_dict() == dict(BASE.replace(**items).to_dict(), **expected)


@pytest.mark.parametrize("text, word", [
    ("interval_s=60", "interval_s=60"),  # the benchmark's old vocabulary is gone
    ("idle_w=1.5", "capture_interval_s"),
    ("budget_wh_day", "KEY=VALUE"),
    ("budget_wh_day=lots", "must be a number"),
])
def test_bad_deployment_items_name_the_item(text, word):
    with pytest.raises(ConfigError, match=word):
        parse_deployment_items(text)


def test_set_deployment_replans_against_the_new_budget_and_refuses_an_infeasible_one():
    g = Governor(DeploymentProfile(1000.0, frames_per_day=1000), profiles=("single",),
                 prior_energy_j={"single": 36.0}, clock=lambda: NOON)
    assert g.plan(NOON).frame_fraction == 1.0
    g.set_deployment(DeploymentProfile(1.0, frames_per_day=1000))  # 1000 x 36 J = 10 Wh/day >> 1 Wh
    assert g.deployment.budget_wh_day == 1.0 and g.plan(NOON).frame_fraction < 1.0
    with pytest.raises(BudgetInfeasible):
        g.set_deployment(DeploymentProfile(1.0, "total", frames_per_day=10))
    assert g.deployment.budget_wh_day == 1.0

"""Deployment profile, Wh/day arithmetic and the energy governor.

Wh/day = [frames x E_frame + P_idle x (powered s - busy s)] / 3600
         + P_sleep x (86400 - powered s) / 3600
where E_frame is the gross board energy of one frame (idle included while it
runs), busy s = frames x latency_s, and the board sleeps (or is off) for the
rest of the day.

An always-on Jetson Nano idles at about 1-2 W, i.e. 24-48 Wh/day before any
inference. A budget like 14.4 Wh/day therefore only makes sense with a
powered-off duty cycle (few powered hours a day) or as the inference share
alone: `budget_scope` is "total" or "inference" to say which.

Profile names, their order and the cascade's stages and rule live in
edge.profiles; this module only counts their energy.
"""
import collections
import datetime
import logging
import time

import numpy as np

from edge.errors import BudgetInfeasible, ConfigError  # BudgetInfeasible stays importable from here
from edge.profiles import CASCADE, CASCADE_ESCALATION, CASCADE_FIRST, DEFAULT_PROFILE_ORDER, PROFILES, STATIC_PROFILES

logger = logging.getLogger(__name__)

BUDGET_SCOPES = ("total", "inference")
SECONDS_PER_DAY = 86400.0
IDLE_NOTE = ("An always-on Jetson Nano idles at about 1-2 W, i.e. 24-48 Wh/day before any inference: "
             "a budget like 14.4 Wh/day only makes sense with a powered-off duty cycle "
             "(powered_hours_per_day well below 24, sleep_power_w near 0) or as the inference share "
             "(budget_scope='inference').")


def local_day_bounds_unix_s(t_unix_s):
    """(start, end) Unix times of the local calendar day holding `t_unix_s` (DST-aware)."""
    day = datetime.datetime.fromtimestamp(t_unix_s).date()
    start = datetime.datetime.combine(day, datetime.time())
    end = datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time())
    return time.mktime(start.timetuple()), time.mktime(end.timetuple())


class DailyEnergy(collections.namedtuple("DailyEnergy", "inference_wh idle_wh sleep_wh total_wh frames busy_s")):
    """Wh/day in parts: inference (frames x E_frame), idle, sleep, and their total."""

    __slots__ = ()


class DeploymentProfile(object):
    """How the board is deployed: frame rate, powered hours, idle/sleep power, budget.

    Give exactly one of `capture_interval_s` (one frame per interval while
    powered) or `frames_per_day`. JSON-serializable through `to_dict()`.
    """

    FIELDS = ("budget_wh_day", "budget_scope", "capture_interval_s", "frames_per_day",
              "powered_hours_per_day", "idle_power_w", "sleep_power_w")
    note = IDLE_NOTE

    def __init__(self, budget_wh_day, budget_scope="inference", capture_interval_s=None, frames_per_day=None,
                 powered_hours_per_day=24.0, idle_power_w=1.5, sleep_power_w=0.0):
        if (capture_interval_s is None) == (frames_per_day is None):
            raise ConfigError("deployment profile needs exactly one of capture_interval_s or frames_per_day, got "
                              "capture_interval_s={!r}, frames_per_day={!r}".format(capture_interval_s, frames_per_day))
        _check_number("budget_wh_day", budget_wh_day, minimum=0.0, strict=True)
        if budget_scope not in BUDGET_SCOPES:
            raise ConfigError("budget_scope={!r}; expected one of {}".format(budget_scope, BUDGET_SCOPES))
        if capture_interval_s is not None:
            _check_number("capture_interval_s", capture_interval_s, minimum=0.0, strict=True)
        if frames_per_day is not None:
            _check_number("frames_per_day", frames_per_day, minimum=0.0)
        _check_number("powered_hours_per_day", powered_hours_per_day, minimum=0.0, maximum=24.0)
        _check_number("idle_power_w", idle_power_w, minimum=0.0)
        _check_number("sleep_power_w", sleep_power_w, minimum=0.0)
        self.budget_wh_day = float(budget_wh_day)
        self.budget_scope = budget_scope
        self.capture_interval_s = None if capture_interval_s is None else float(capture_interval_s)
        self.frames_per_day = None if frames_per_day is None else float(frames_per_day)
        self.powered_hours_per_day = float(powered_hours_per_day)
        self.idle_power_w = float(idle_power_w)
        self.sleep_power_w = float(sleep_power_w)

    @property
    def powered_s(self):
        return self.powered_hours_per_day * 3600.0

    @property
    def sleep_s(self):
        return SECONDS_PER_DAY - self.powered_s

    @property
    def planned_frames_per_day(self):
        if self.frames_per_day is not None:
            return self.frames_per_day
        return self.powered_s / self.capture_interval_s

    @property
    def baseline_wh_day(self):
        """Idle while powered plus sleep: the Wh/day spent with zero frames."""
        return (self.idle_power_w * self.powered_s + self.sleep_power_w * self.sleep_s) / 3600.0

    def check_budget(self):
        """Raise BudgetInfeasible when a total budget is spent by idle and sleep alone."""
        if self.budget_scope == "total" and self.baseline_wh_day >= self.budget_wh_day:
            raise BudgetInfeasible(
                "budget_wh_day={:g} (scope total) cannot be met even with zero frames: idle {:g} W x {:g} h "
                "+ sleep {:g} W x {:g} h = {:.2f} Wh/day. {}".format(
                    self.budget_wh_day, self.idle_power_w, self.powered_hours_per_day, self.sleep_power_w,
                    24.0 - self.powered_hours_per_day, self.baseline_wh_day, IDLE_NOTE))
        return self

    def to_dict(self):
        return {name: getattr(self, name) for name in self.FIELDS}

    def replace(self, **changes):
        """A new profile with `changes` (FIELDS names); giving one of capture_interval_s or
        frames_per_day (not None) drops the other, so an override switches how frames are counted."""
        values = self.to_dict()
        for name, other in (("capture_interval_s", "frames_per_day"), ("frames_per_day", "capture_interval_s")):
            if changes.get(name) is not None and other not in changes:
                values[other] = None
        values.update(changes)
        return self.from_dict(values)

    def __eq__(self, other):
        return isinstance(other, DeploymentProfile) and self.to_dict() == other.to_dict()

    def __ne__(self, other):
        return not self == other

    __hash__ = None

    @classmethod
    def from_dict(cls, values):
        unknown = sorted(set(values) - set(cls.FIELDS))
        if unknown:
            raise ConfigError("unknown deployment profile keys {}; expected {}".format(unknown, list(cls.FIELDS)))
        return cls(**values)

    def __repr__(self):
        return "DeploymentProfile({})".format(", ".join("{}={!r}".format(k, v) for k, v in self.to_dict().items()))


def parse_deployment_items(text):
    """'budget_wh_day=20,capture_interval_s=60' -> {field: value} over DeploymentProfile.FIELDS.

    Numbers are parsed here, ranges are checked by DeploymentProfile; 'none'
    clears capture_interval_s or frames_per_day. ConfigError names a bad item.
    """
    values = {}
    for item in (p.strip() for p in str(text).split(",") if p.strip()):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key not in DeploymentProfile.FIELDS:
            raise ConfigError("deployment item {!r}: expected KEY=VALUE with KEY one of {}".format(
                item, ", ".join(DeploymentProfile.FIELDS)))
        if key == "budget_scope":
            values[key] = value
        elif key in ("capture_interval_s", "frames_per_day") and value.lower() in ("none", "null", ""):
            values[key] = None
        else:
            try:
                values[key] = float(value)
            except ValueError as e:
                raise ConfigError("deployment item {!r}: {} must be a number".format(item, key)) from e
    return values


def _check_number(name, value, minimum=None, maximum=None, strict=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if strict else value >= minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        bounds = "{} {:g}".format(">" if strict else ">=", minimum) if minimum is not None else "a number"
        if maximum is not None:
            bounds += " and <= {:g}".format(maximum)
        raise ConfigError("{}={!r}; expected a number {}".format(name, value, bounds))


def daily_energy(deployment, energy_per_frame_j, latency_per_frame_s=0.0, frames=None):
    """Wh/day in parts for a frame count (default: the deployment's planned frames)."""
    frames = deployment.planned_frames_per_day if frames is None else float(frames)
    busy_s = frames * float(latency_per_frame_s)
    if busy_s > deployment.powered_s:
        raise ConfigError("{:g} frames x {:g} s = {:g} s busy exceeds the {:g} powered s/day".format(
            frames, latency_per_frame_s, busy_s, deployment.powered_s))
    inference_wh = frames * float(energy_per_frame_j) / 3600.0
    idle_wh = deployment.idle_power_w * (deployment.powered_s - busy_s) / 3600.0
    sleep_wh = deployment.sleep_power_w * deployment.sleep_s / 3600.0
    return DailyEnergy(inference_wh, idle_wh, sleep_wh, inference_wh + idle_wh + sleep_wh, frames, busy_s)


def cascade_energy_j(single_energy_j, full_energy_j, escalation_rate):
    """Expected energy of one cascade frame: E_single + rate x E_full."""
    return float(single_energy_j) + float(escalation_rate) * float(full_energy_j)


class RunningMedian(object):
    """Median of the last `window` values, or `prior` before any value arrives."""

    def __init__(self, window=15, prior=None):
        if int(window) < 1:
            raise ConfigError("running median window={!r}; expected >= 1".format(window))
        self._values = collections.deque(maxlen=int(window))
        self.prior = None if prior is None else float(prior)

    def add(self, value):
        self._values.append(float(value))

    def __len__(self):
        return len(self._values)

    @property
    def value(self):
        if self._values:
            return float(np.median(np.asarray(self._values)))
        return self.prior


class EscalationRate(object):
    """Share of cascade frames escalated over the last `window`, smoothed toward `prior`.

    rate = (prior x prior_weight + escalations) / (prior_weight + frames)
    """

    def __init__(self, prior=0.25, prior_weight=10.0, window=200):
        self.prior, self.prior_weight = float(prior), float(prior_weight)
        self._flags = collections.deque(maxlen=int(window))

    def add(self, escalated):
        self._flags.append(bool(escalated))

    @property
    def value(self):
        return (self.prior * self.prior_weight + sum(self._flags)) / (self.prior_weight + len(self._flags))


GovernorDecision = collections.namedtuple("GovernorDecision", (
    "t_unix_s", "profile", "previous", "changed", "reason", "frame_fraction",
    "spent_wh", "budget_wh", "frames_left", "projected_wh"))


class Governor(object):
    """Picks the richest inference profile that still ends the day inside the budget.

    Feed it measurements as frames finish (`observe`, `observe_cascade`) and
    call `plan()` before each frame. Energy per frame of each profile is the
    running median of its measurements (or its prior until one arrives);
    profiles with neither are not chosen (`unmeasured()` lists them). Spent
    energy and busy time reset at local midnight of the injectable `clock`.
    """

    def __init__(self, deployment, profiles=DEFAULT_PROFILE_ORDER, prior_energy_j=None, prior_latency_s=None,
                 escalation_prior=0.25, window=15, escalation_window=200, headroom_frac=0.02, clock=time.time):
        unknown = [p for p in profiles if p not in PROFILES]
        if unknown or not profiles:
            raise ConfigError("governor profiles {!r}; expected a non-empty subset of {}".format(
                list(profiles), PROFILES))
        self.deployment = deployment.check_budget()
        self.profiles = tuple(profiles)
        self.headroom_frac = float(headroom_frac)
        self.clock = clock
        prior_energy_j, prior_latency_s = prior_energy_j or {}, prior_latency_s or {}
        measured = STATIC_PROFILES
        self._energy = {p: RunningMedian(window, prior_energy_j.get(p)) for p in measured}
        self._latency = {p: RunningMedian(window, prior_latency_s.get(p)) for p in measured}
        self._escalation = EscalationRate(escalation_prior, window=escalation_window)
        self._day = None
        self._spent_j, self._busy_s = 0.0, 0.0
        self.profile = self.profiles[0]
        self.last_decision = None

    def _roll(self, t_unix_s):
        bounds = local_day_bounds_unix_s(t_unix_s)
        if self._day is not None and bounds != self._day:
            logger.info("energy day rollover at %s: spent %.3f Wh of inference yesterday",
                        datetime.datetime.fromtimestamp(bounds[0]).isoformat(), self._spent_j / 3600.0)
            self._spent_j, self._busy_s = 0.0, 0.0
        self._day = bounds

    def _now(self, t_unix_s):
        t = self.clock() if t_unix_s is None else float(t_unix_s)
        self._roll(t)
        return t

    def observe(self, profile, energy_j, latency_s=None, t_unix_s=None):
        """One measured frame of a non-cascade profile: update its estimate and today's spend."""
        if profile not in self._energy:
            raise ConfigError("observe: profile {!r}; expected one of {} (cascade: observe_cascade)".format(
                profile, sorted(self._energy)))
        self._now(t_unix_s)
        self._energy[profile].add(energy_j)
        self._spent_j += float(energy_j)
        if latency_s is not None:
            self._latency[profile].add(latency_s)
            self._busy_s += float(latency_s)

    def observe_cascade(self, single_energy_j, escalated, full_energy_j=None, single_latency_s=None,
                        full_latency_s=None, t_unix_s=None):
        """One cascade frame: its first stage, whether it escalated, and the escalation stage."""
        if escalated and full_energy_j is None:
            raise ConfigError("observe_cascade: an escalated frame needs full_energy_j")
        self.observe(CASCADE_FIRST, single_energy_j, single_latency_s, t_unix_s)
        if escalated:
            self.observe(CASCADE_ESCALATION, full_energy_j, full_latency_s, t_unix_s)
        self._escalation.add(escalated)

    def set_deployment(self, deployment):
        """Plan against another deployment profile from now on (a reloaded bundle's); spend is kept."""
        deployment.check_budget()
        if deployment != self.deployment:
            logger.info("governor deployment now %s (was %s)", deployment, self.deployment)
        self.deployment = deployment

    def restore_spent(self, inference_j, busy_s=0.0, t_unix_s=None):
        """Set today's spend after a restart (e.g. from Store.energy_today_j)."""
        self._now(t_unix_s)
        self._spent_j, self._busy_s = float(inference_j), float(busy_s)

    def restore_escalations(self, flags):
        """Replay recent cascade outcomes after a restart (oldest first, True = escalated)."""
        for escalated in flags:
            self._escalation.add(escalated)

    @property
    def escalation_rate(self):
        return self._escalation.value

    def estimate_j(self, profile):
        """Expected energy per frame of a profile (J), None when unknown."""
        if profile == CASCADE:
            single, full = self._energy[CASCADE_FIRST].value, self._energy[CASCADE_ESCALATION].value
            return None if single is None or full is None else cascade_energy_j(single, full, self.escalation_rate)
        return self._energy[profile].value

    def estimate_latency_s(self, profile):
        """Expected latency per frame (s); 0 when unmeasured (idle then counts in full: conservative)."""
        if profile == CASCADE:
            return self.estimate_latency_s(CASCADE_FIRST) + self.escalation_rate * self.estimate_latency_s(
                CASCADE_ESCALATION)
        value = self._latency[profile].value
        return 0.0 if value is None else value

    def unmeasured(self):
        """Profiles without an energy estimate: run a frame of each to let the governor consider it."""
        return [p for p in self.profiles if self.estimate_j(p) is None]

    def spent_wh(self, t_unix_s=None, spent_total_wh=None):
        """Energy counted against the budget so far today (inference share, or modelled/measured total)."""
        t = self._now(t_unix_s)
        if self.deployment.budget_scope == "inference":
            return self._spent_j / 3600.0
        if spent_total_wh is not None:
            return float(spent_total_wh)
        d, elapsed = self.deployment, self._elapsed_frac(t)
        idle_s = max(0.0, d.powered_s * elapsed - self._busy_s)
        return (self._spent_j + d.idle_power_w * idle_s + d.sleep_power_w * d.sleep_s * elapsed) / 3600.0

    def budget_left_wh(self, t_unix_s=None, spent_total_wh=None):
        return self.deployment.budget_wh_day - self.spent_wh(t_unix_s, spent_total_wh)

    def _elapsed_frac(self, t):
        start, end = self._day
        return min(1.0, max(0.0, (t - start) / (end - start)))

    def _future_wh(self, profile, frames_left, remaining, fraction=1.0):
        d = self.deployment
        wh = fraction * frames_left * self.estimate_j(profile) / 3600.0
        if d.budget_scope == "total":
            busy_s = fraction * frames_left * self.estimate_latency_s(profile)
            wh += (d.idle_power_w * max(0.0, d.powered_s * remaining - busy_s)
                   + d.sleep_power_w * d.sleep_s * remaining) / 3600.0
        return wh

    def plan(self, t_unix_s=None, spent_total_wh=None):
        """Choose the profile for the next frames; returns a GovernorDecision (logged when it changes)."""
        t = self._now(t_unix_s)
        budget = self.deployment.budget_wh_day
        spent = self.spent_wh(t, spent_total_wh)
        remaining = 1.0 - self._elapsed_frac(t)
        frames_left = self.deployment.planned_frames_per_day * remaining
        known = [p for p in self.profiles if self.estimate_j(p) is not None]
        projected = {p: spent + self._future_wh(p, frames_left, remaining) for p in known}
        current_rank = self.profiles.index(self.profile)
        fitting = [p for p in known if projected[p] <= budget * (
            1.0 - self.headroom_frac if self.profiles.index(p) > current_rank else 1.0)]
        fraction = 1.0
        if fitting:
            chosen = fitting[-1]
            reason = "{}: projected {:.3f} Wh <= budget {:g} Wh ({} scope)".format(
                chosen, projected[chosen], budget, self.deployment.budget_scope)
            richer = [p for p in known if self.profiles.index(p) > self.profiles.index(chosen)]
            if richer:
                reason += "; {} would reach {:.3f} Wh".format(richer[0], projected[richer[0]])
        elif known:
            chosen = known[0]
            fraction = self._affordable_fraction(chosen, spent, frames_left, remaining)
            reason = "over budget: even {} projects {:.3f} Wh > {:g} Wh; process {:.0%} of frames".format(
                chosen, projected[chosen], budget, fraction)
        else:
            chosen = self.profiles[0]
            reason = "no energy estimate yet for any of {}; starting with {}".format(list(self.profiles), chosen)
        return self._decide(t, chosen, reason, fraction, spent, frames_left, projected)

    def _affordable_fraction(self, profile, spent, frames_left, remaining):
        fixed = self._future_wh(profile, frames_left, remaining, fraction=0.0)
        per_all = self._future_wh(profile, frames_left, remaining) - fixed
        if per_all <= 0.0:
            return 1.0
        return float(min(1.0, max(0.0, (self.deployment.budget_wh_day - spent - fixed) / per_all)))

    def _decide(self, t, chosen, reason, fraction, spent, frames_left, projected):
        previous = self.profile
        last = self.last_decision
        changed = chosen != previous
        decision = GovernorDecision(t, chosen, previous, changed, reason, fraction, spent,
                                    self.deployment.budget_wh_day, frames_left, projected)
        if changed or last is None or abs(last.frame_fraction - fraction) > 0.05:
            logger.info("governor: %s -> %s (%s)", previous, chosen, reason)
        self.profile = chosen
        self.last_decision = decision
        return decision

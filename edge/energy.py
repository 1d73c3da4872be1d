"""Deployment profile and the Wh/day arithmetic of a day's frames.

Wh/day = [frames x E_frame + P_idle x (powered s - busy s)] / 3600
         + P_sleep x (86400 - powered s) / 3600
where E_frame is the gross board energy of one frame (idle included while it
runs), busy s = frames x latency_s, and the board sleeps (or is off) for the
rest of the day.

An always-on Jetson Nano idles at about 1-2 W, i.e. 24-48 Wh/day before any
inference. A budget like 14.4 Wh/day therefore only makes sense with a
powered-off duty cycle (few powered hours a day) or as the inference share
alone: `budget_scope` is "total" or "inference" to say which.

The governor that spends the budget frame by frame lives in edge.governor;
profile names, their order and the cascade's stages in edge.profiles.
"""
import collections
import datetime
import time

import numpy as np

from edge.errors import BudgetInfeasible, ConfigError  # BudgetInfeasible stays importable from here

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

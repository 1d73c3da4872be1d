"""The energy governor: picks the inference profile for the next frames from running estimates.

Each profile's energy and latency per frame is the running median of its
recent measurements (RunningMedian), the cascade's escalation rate a
smoothed share (EscalationRate); the governor projects the day's Wh with
them (edge.energy's arithmetic) against the deployment profile's budget.
"""
import collections
import datetime
import logging
import time

import numpy as np

from edge.energy import cascade_energy_j, local_day_bounds_unix_s
from edge.errors import ConfigError
from edge.profiles import CASCADE, CASCADE_ESCALATION, CASCADE_FIRST, DEFAULT_PROFILE_ORDER, PROFILES, \
    STATIC_PROFILES, parse_label

logger = logging.getLogger(__name__)


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


def restore_from_store(governor, store, t_unix_s, recent_frames=1000, recent_energy=200):
    """After a restart: each profile's energy and the escalation rate from the store's recent frames (the last
    `recent_frames`, the energy of the last `recent_energy`), today's spend from its totals at `t_unix_s`."""
    recent = list(reversed(store.frame_rows(limit=recent_frames)))  # oldest first
    labelled, unknown = [], collections.Counter()
    for row in recent:
        if row["status"] != "ok":
            continue
        try:
            labelled.append(parse_label(row["profile"]) + (row,))
        except ConfigError:  # written by another version: not evidence for this governor
            unknown[row["profile"]] += 1
    if unknown:
        logger.warning("ignored stored frames with unknown profile labels: %s", dict(unknown))
    rows = [r for p, _, r in labelled if p != CASCADE and r["energy_j"] is not None][-recent_energy:]
    for row in rows:
        governor.observe(row["profile"], row["energy_j"], row["latency_s"], t_unix_s=row["t_unix_s"])
    cascade = [stage == CASCADE_ESCALATION for p, stage, _ in labelled if p == CASCADE]
    governor.restore_escalations(cascade)
    totals = store.today_totals(t_unix_s)
    governor.restore_spent(totals["energy_j"], totals["latency_s"], t_unix_s=t_unix_s)
    logger.info("restored from store: %d frames today, %.3f Wh spent, energy of %d recent frames, "
                "escalation rate %.2f over %d cascade frames", totals["frames"], totals["energy_j"] / 3600.0,
                len(rows), governor.escalation_rate, len(cascade))

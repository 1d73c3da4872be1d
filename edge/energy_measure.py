"""Energy per frame of an inference profile over one energy window, and its Wh/day for a deployment.

Moved from benchmarks/energy.py so the trainer's bundle stage measures profiles the way the
benchmark does (benchmarks/energy.py imports these back). Each profile runs inside one window
of an `edge.power.PowerSampler`, cycling the frames until the window holds at least `frames`
frames and `min_window_s` seconds (so the meter samples several times); energy per frame is
the window's gross energy over its frames. A meter that models power rather than measuring it
(the estimated one) marks the result measured=False: its figures are estimates.
"""
import collections
import statistics
import time

from edge.energy import daily_energy
from edge.errors import ConfigError
from edge.profiles import CASCADE, run_profile


def measure_profile(pipeline, sampler, images, profile, settings, frames, min_window_s, warmup=2):
    """Energy per frame, latencies and cascade outcomes of `profile` over one energy window."""
    for i in range(warmup):
        run_profile(pipeline, images[i % len(images)], profile, settings)
    latencies, escalated, kinds = [], 0, collections.Counter()
    sampler.begin_window(profile)
    start = time.perf_counter()
    while len(latencies) < frames or time.perf_counter() - start < min_window_s:
        t0 = time.perf_counter()
        run = run_profile(pipeline, images[len(latencies) % len(images)], profile, settings)
        latencies.append(time.perf_counter() - t0)
        escalated += int(run.escalated)
        if profile == CASCADE:
            kinds[run.escalation.kind] += 1
    window = sampler.end_window(profile)
    return {"frames": len(latencies), "energy_per_frame_j": window.energy_j / len(latencies),
            "mean_power_w": window.mean_power_w, "latency_median_s": statistics.median(latencies),
            "latency_mean_s": statistics.mean(latencies), "measured": window.measured, "source": window.source,
            "escalation_rate": escalated / float(len(latencies)) if profile == CASCADE else None,
            "reasons": dict(kinds) if profile == CASCADE else None}


def daily_figures(deployment, energy_per_frame_j, latency_s):
    """{inference_wh, idle_wh, total_wh, frames, within_budget} of a day of frames, or {"error"} when
    the day's frames at this latency do not fit the powered hours."""
    try:
        day = daily_energy(deployment, energy_per_frame_j, latency_s)
    except ConfigError as e:
        return {"error": str(e)}
    budgeted = day.inference_wh if deployment.budget_scope == "inference" else day.total_wh
    return {"inference_wh": day.inference_wh, "idle_wh": day.idle_wh + day.sleep_wh, "total_wh": day.total_wh,
            "frames": day.frames, "budgeted_wh": budgeted, "within_budget": budgeted <= deployment.budget_wh_day}


def add_daily(result, deployment):
    """`result` (a measure_profile dict) with its "daily" figures for `deployment`."""
    result["daily"] = daily_figures(deployment, result["energy_per_frame_j"], result["latency_mean_s"])
    return result

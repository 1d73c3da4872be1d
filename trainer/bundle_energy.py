"""Energy of each inference profile for the bundle stage: measured on this machine, and for a Jetson Nano
target the device table's estimate, each with its Wh/day for the deployment profile.

On this machine every profile runs through edge.pipeline inside an energy window of edge.power's
sampler (edge.energy_measure, the benchmark's own procedure); where no sensor exists the meter is
the CPU-utilisation estimate and every figure is labelled "estimated". For `jetson-nano` the
per-frame figures come from trainer.device_table (labelled "estimate") until benchmarks measures
the device; the cascade's expected frame is E_single + rate x E_full (edge.energy.cascade_energy_j)
with the escalation rate the pipeline showed on the validation split.
"""
import collections

from edge.energy import cascade_energy_j
from edge.energy_measure import add_daily, daily_figures, measure_profile
from edge.profiles import CASCADE, CASCADE_ESCALATION, CASCADE_FIRST, cascade_settings, profile_spec
from edge.tta import view_plan
from trainer import device_table

MIN_WINDOW_S = 1.0      # each profile's window holds at least this long, so the meter samples it several times
SAMPLER_INTERVAL_S = 0.1
MEASURED, ESTIMATED = "measured", "estimated"


def open_here_meter(meter, idle_w):
    """(opened Meter, skipped [(name, reason)]) from a meter name ('auto', 'estimated', ...) or an opened Meter."""
    from edge.power.auto import MeterOptions, open_meter

    if not isinstance(meter, str):
        return meter, []
    choice = open_meter(meter, MeterOptions(interval_s=SAMPLER_INTERVAL_S, idle_w=idle_w))
    return choice.meter, choice.skipped


def measure_here(pipeline, frames, profiles, frame_count, meter, deployment, progress=None):
    """{"profiles": {profile: measure_profile figures + daily}, "label", "meter", "skipped"} on this machine."""
    from edge.power.sampler import PowerSampler

    opened, skipped = open_here_meter(meter, deployment.idle_power_w)
    settings = cascade_settings(pipeline.bundle)
    results = collections.OrderedDict()
    try:
        with PowerSampler(opened, SAMPLER_INTERVAL_S) as sampler:
            for profile in (progress(profiles, "energy") if progress else profiles):
                results[profile] = add_daily(measure_profile(pipeline, sampler, frames, profile, settings,
                                                             frame_count, MIN_WINDOW_S), deployment)
    finally:
        if isinstance(meter, str):
            opened.close()
    label = MEASURED if all(r["measured"] for r in results.values()) else ESTIMATED
    return {"profiles": results, "label": label, "meter": opened.source,
            "skipped": [{"meter": n, "reason": r} for n, r in skipped]}


def model_sizes(bundle):
    """{model name: (size letter, imgsz)} of a bundle's ONNX models (size recognised by parameter count)."""
    return {m.name: (device_table.size_from_params(device_table.onnx_params(m.path)), max(m.input_size))
            for m in bundle.models}


def device_estimates(bundle, profiles, escalation_rate, deployment):
    """{"profiles": {profile: {latency_s, energy_per_frame_j, daily, ...}}, "label", "source"} on a Nano."""
    sizes = model_sizes(bundle)

    def static(profile):
        names, plan = profile_spec(bundle, profile)
        estimate = device_table.profile_estimate([sizes[n] for n in names], len(view_plan(plan)))
        return {"latency_s": estimate.latency_s, "energy_per_frame_j": estimate.energy_j,
                "models": {n: sizes[n][0] for n in names}, "views": len(view_plan(plan))}

    results = collections.OrderedDict()
    for profile in profiles:
        if profile == CASCADE:
            first, full = static(CASCADE_FIRST), static(CASCADE_ESCALATION)
            rate = float(escalation_rate or 0.0)
            entry = {"latency_s": first["latency_s"] + rate * full["latency_s"],
                     "energy_per_frame_j": cascade_energy_j(first["energy_per_frame_j"],
                                                            full["energy_per_frame_j"], rate),
                     "escalation_rate": rate}
        else:
            entry = static(profile)
        entry["daily"] = daily_figures(deployment, entry["energy_per_frame_j"], entry["latency_s"])
        results[profile] = entry
    return {"profiles": results, "label": device_table.LABEL, "source": device_table.SOURCE}


def budget_figures(energy):
    """{profile: (Wh/day in the budget's scope or None, why None)} from measure_here / device_estimates output."""
    out = {}
    for profile, entry in energy["profiles"].items():
        daily = entry["daily"]
        out[profile] = (daily.get("budgeted_wh"), daily.get("error"))
    return out

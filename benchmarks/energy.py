"""Energy per frame of each inference profile and the cascade, and what it means in Wh/day.

    python -m benchmarks.energy --bundle DIR --images DIR [--frames 20] [--meter auto]
        [--deployment capture_interval_s=60,powered_hours_per_day=24,idle_power_w=1.5] [--report DIR]

Each profile runs inside one energy window on the power sampler (cycling the
images until the window holds at least --frames frames and --min-window-s
seconds, so the meter takes several samples); energy per frame is the
window's gross energy over its frames. Wh/day comes from energy.daily_energy
for the deployment: the inference share, the idle (and sleep) share, and the
total. The deployment is the bundle's (its manifest), else one frame a
minute on an always-on board with a 14.4 Wh/day budget; --deployment
changes fields of it by DeploymentProfile's own names. With a meter that models power instead of measuring it (the CPU
estimate), every figure is labelled "estimated".
"""
import argparse
import collections
import os
import sys

from benchmarks.common import load_images, machine_facts, write_json
from edge.bundle import load_bundle
from edge.energy import DeploymentProfile, parse_deployment_items
from edge.energy_measure import add_daily, measure_profile
from edge.pipeline import Pipeline
from edge.power.auto import MeterOptions, meter_names, open_meter
from edge.power.sampler import PowerSampler
from edge.profiles import CASCADE, STATIC_PROFILES, cascade_settings

# Without a deployment in the bundle: one frame a minute, always on, idling at 1.5 W, 14.4 Wh/day of inference.
FALLBACK_DEPLOYMENT = DeploymentProfile(14.4, "inference", capture_interval_s=60.0)


def benchmark_deployment(bundle, overrides=""):
    """The bundle's deployment profile (else FALLBACK_DEPLOYMENT) with `overrides` ('field=value,...')."""
    base = getattr(bundle, "deployment", None) or FALLBACK_DEPLOYMENT
    return base.replace(**parse_deployment_items(overrides))


def print_table(results, deployment, label):
    est = " " + label if label else ""
    print("deployment: %s" % deployment)
    print("%-14s %6s %14s %10s %14s %12s %12s %7s" % ("profile", "frames", "J/frame" + est, "latency ms",
                                                    "infer Wh/day", "idle Wh/day", "total Wh/day", "budget"))
    for name, r in results.items():
        d = r["daily"]
        if "error" in d:
            print("%-14s %6d %14.3f %10.1f  %s" % (name, r["frames"], r["energy_per_frame_j"],
                                                  1000 * r["latency_median_s"], d["error"]))
            continue
        print("%-14s %6d %14.3f %10.1f %14.2f %12.2f %12.2f %7s" % (
            name, r["frames"], r["energy_per_frame_j"], 1000 * r["latency_median_s"], d["inference_wh"],
            d["idle_wh"], d["total_wh"], "fits" if d["within_budget"] else "over"))
    cascade = results.get(CASCADE)
    if cascade is not None:
        print("cascade escalated on %.0f%% of %d frames; reasons: %s" % (
            100 * cascade["escalation_rate"], cascade["frames"],
            ", ".join("%s %d" % kv for kv in sorted(cascade["reasons"].items())) or "none"))
    if label:
        print("all energy figures are %s: the meter models power, it does not measure it" % label)


def plot(results, label, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.bar(names, [results[n]["energy_per_frame_j"] for n in names], color="tab:blue")
    left.set_ylabel("J per frame" + (" (%s)" % label if label else ""))
    left.set_title("Energy per frame")
    ok = [n for n in names if "error" not in results[n]["daily"]]
    inference = [results[n]["daily"]["inference_wh"] for n in ok]
    idle = [results[n]["daily"]["idle_wh"] for n in ok]
    right.bar(ok, idle, label="idle + sleep", color="tab:gray")
    right.bar(ok, inference, bottom=idle, label="inference", color="tab:orange")
    right.set_ylabel("Wh/day" + (" (%s)" % label if label else ""))
    right.set_title("Daily energy for the deployment")
    right.legend()
    for axis in (left, right):
        axis.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--frames", type=int, default=20, help="at least this many frames per profile")
    parser.add_argument("--min-window-s", type=float, default=3.0, help="at least this long per profile window")
    parser.add_argument("--meter", default="auto", choices=meter_names())
    parser.add_argument("--interval", type=float, default=0.1, help="sampler interval (s)")
    parser.add_argument("--idle-seconds", type=float, default=3.0, help="measure idle power first (0: skip)")
    parser.add_argument("--deployment", default="", metavar="FIELD=VALUE,...",
                        help="change the bundle's deployment profile; fields: " + ", ".join(DeploymentProfile.FIELDS))
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--report", default=None, metavar="DIR", help="write energy.json and energy.png here")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    bundle = load_bundle(args.bundle)
    deployment = benchmark_deployment(bundle, args.deployment)
    images = load_images(args.images)
    settings = cascade_settings(bundle)
    choice = open_meter(args.meter, MeterOptions(interval_s=args.interval, idle_w=deployment.idle_power_w))
    results = collections.OrderedDict()
    try:
        with Pipeline.open(bundle, backend=args.backend) as pipeline, \
                PowerSampler(choice.meter, args.interval) as sampler:
            idle_w = sampler.measure_idle(args.idle_seconds) if args.idle_seconds > 0 else None
            for profile in STATIC_PROFILES + (CASCADE,):
                results[profile] = add_daily(measure_profile(pipeline, sampler, images, profile, settings,
                                                             args.frames, args.min_window_s), deployment)
    finally:
        choice.meter.close()
    label = "" if all(r["measured"] for r in results.values()) else "estimated"
    print("meter %s (%s); skipped: %s; %s" % (choice.meter.source, label or "measured",
                                            ", ".join(n for n, _ in choice.skipped) or "none", machine_facts()))
    if idle_w is not None:
        print("idle power over %.0f s: %.2f W%s (deployment assumes %.2f W)" % (
            args.idle_seconds, idle_w, " " + label if label else "", deployment.idle_power_w))
    print_table(results, deployment, label)
    if args.report:
        payload = {"bundle": bundle.root, "meter": choice.meter.source, "label": label or "measured",
                   "idle_power_w": idle_w, "deployment": deployment.to_dict(), "profiles": results,
                   "machine": machine_facts()}
        write_json(os.path.join(args.report, "energy.json"), payload)
        print("wrote %s and %s" % (os.path.join(args.report, "energy.json"),
                                   plot(results, label, os.path.join(args.report, "energy.png"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())

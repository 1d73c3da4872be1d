"""The serving half of `make demo`: edge's daemon on a synthetic clip for a bounded number of frames.

    python -m benchmarks.demo_serve --bundle WORK/bundle --data WORK/synth/data.yaml --out WORK/serve [--frames 24]

The clip is the validation split's sequence frames (the synthetic generator's short "videos"),
in order, or the validation images where the data has no sequences, repeated up to `frames`,
linked into a folder the daemon reads as its source. The daemon runs as `edge serve` does
(store, crops, power sampler, the governor choosing the profile of every frame) through its
public API, unpaced, with a day clock that starts at local midnight: the governor then plans
a whole day of frames, whatever the hour the demo runs at.

The budget: a bundle sized for a gate at any figure would let the governor run the richest
profile on every frame, so by default the demo serves under a budget half way between the
ensemble+flip's and the ensemble+full TTA's Wh/day as the bundle stage measured them here
(inference scope): the governor has a choice to make. `budget_wh_day`
replaces it.

Afterwards every processed frame is drawn with the detections the daemon stored (the
operating points of the profile that ran it) into OUT/annotated/.
"""
import argparse
import collections
import logging
import os
import sys
import time

from benchmarks.common import write_json

ANNOTATED = "annotated"


def clip_sources(data_yaml, split="val"):
    """Image paths of the clip: the split's sequence frames in order, else all its images."""
    from trainer.data.yolo_dataset import read_data_yaml

    paths = sorted(read_data_yaml(data_yaml)[1].get(split, []))
    if not paths:
        from edge.errors import ConfigError

        raise ConfigError("%s has no %s images to make a clip of; give a data.yaml with a %s split"
                          % (data_yaml, split, split))
    sequence = [p for p in paths if os.path.basename(p).startswith("seq")]
    return sequence or paths


def make_clip(paths, frames, dest):
    """`frames` links in `dest` named in frame order, cycling over `paths`; returns dest."""
    os.makedirs(dest, exist_ok=True)
    for name in os.listdir(dest):   # a rerun's clip: the daemon reads the whole folder
        os.remove(os.path.join(dest, name))
    for i in range(frames):
        path = paths[i % len(paths)]
        os.symlink(os.path.abspath(path), os.path.join(dest, "%06d%s" % (i, os.path.splitext(path)[1])))
    return dest


def demo_budget(bundle, below="ensemble_flip", above="ensemble_full"):
    """(Wh/day, why) half way between two profiles' inference Wh/day in the bundle's energy figures measured
    here, so the governor must pass over the richest; (None, why) when the manifest lacks them."""
    here = ((bundle.manifest.get("energy") or {}).get("here") or {}).get("profiles") or {}
    daily = {p: (here.get(p) or {}).get("daily", {}).get("inference_wh") for p in (below, above)}
    if None in daily.values():
        return None, "the bundle's energy figures lack %s or %s; its own budget applies" % (below, above)
    budget = (daily[below] + daily[above]) / 2.0
    return budget, ("%.3f Wh/day (inference): half way between %s's %.3f and %s's %.3f Wh/day measured here by "
                    "the bundle stage" % (budget, below, daily[below], above, daily[above]))


class _Progress(object):
    """A frame source wrapped in a tqdm bar: one tick per frame handed to the daemon."""

    def __init__(self, source, total):
        from tqdm import tqdm

        self.source, self.bar = source, tqdm(total=total, desc="edge serve", unit="frame")
        self.name = source.name
        if hasattr(source, "resume_from"):
            self.resume_from = source.resume_from

    def __iter__(self):
        for frame in self.source:
            self.bar.update()
            yield frame

    def close(self):
        self.bar.close()
        if hasattr(self.source, "close"):
            self.source.close()


class _Transitions(logging.Handler):
    """Keeps the governor's decisions ("governor: a -> b (reason)") as it logs them."""

    def __init__(self):
        logging.Handler.__init__(self, logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def day_clock():
    """Unix time that starts at local midnight and runs at the real rate."""
    from edge.energy import local_day_bounds_unix_s

    start, now = local_day_bounds_unix_s(time.time())[0], time.time()
    return lambda: start + (time.time() - now)


def serve_clip(bundle_dir, clip_dir, out_dir, frames, meter="estimated", budget_wh_day=None, backend="onnxruntime",
               progress=True):
    """Run the daemon over the clip; the summary dict (counters, frames, governor, energy, budget)."""
    from edge.bundle import load_bundle
    from edge.config import load_edge_config
    from edge.daemon import Daemon, source_factory_for
    from edge.daemon_reload import open_pipeline_factory
    from edge.power.auto import MeterOptions, open_meter

    bundle = load_bundle(bundle_dir)
    why = "given"
    if budget_wh_day is None:
        budget_wh_day, why = demo_budget(bundle)
    overrides = dict(bundle=bundle_dir, source=clip_dir, store_path=os.path.join(out_dir, "store.sqlite"),
                     crops_dir=os.path.join(out_dir, "crops"), http_address="", profile="auto", meter=meter)
    if budget_wh_day is not None:
        overrides.update(budget_wh_day=budget_wh_day, budget_scope="inference")
    config = load_edge_config(None, overrides)
    clock = day_clock()
    sources = source_factory_for(config, watch=False, clock=clock)
    factory = (lambda stop, wait: _Progress(sources(stop, wait), frames)) if progress else sources
    choice = open_meter(config.meter, MeterOptions(idle_w=config.idle_power_w))
    transitions = _Transitions()
    governor_log = logging.getLogger("edge.governor")
    governor_log.addHandler(transitions)
    # Kept here, not echoed through the root logger between the progress bar's updates.
    saved = governor_log.level, governor_log.propagate
    governor_log.setLevel(logging.INFO)
    governor_log.propagate = False
    try:
        daemon = Daemon(config, pipeline_factory=open_pipeline_factory(backend), source_factory=factory,
                        meter=choice.meter, meter_skipped=choice.skipped, clock=clock, pace=False,
                        sampler_interval_s=0.1)
        counters = daemon.run(max_frames=frames)
        deployment = daemon.bundles.current.deployment
        sample_measured = daemon.sampler.latest().measured
    finally:
        governor_log.removeHandler(transitions)
        governor_log.setLevel(saved[0])
        governor_log.propagate = saved[1]
        choice.meter.close()
    return {"counters": counters, "store": config.store_path, "meter": choice.meter.source,
            "energy_label": "measured" if sample_measured else "estimated", "budget_wh_day": deployment.budget_wh_day,
            "budget_scope": deployment.budget_scope, "budget_why": why, "bundle_budget_wh_day": _bundle_budget(bundle),
            "governor": transitions.messages, "profiles": profile_figures(config.store_path, deployment)}


def _bundle_budget(bundle):
    deployment = getattr(bundle, "deployment", None)
    return None if deployment is None else deployment.budget_wh_day


def profile_figures(store_path, deployment):
    """{stored label: {frames, energy_j_per_frame, latency_ms, daily}} of the processed frames in the store."""
    from edge.energy_measure import daily_figures
    from edge.store import Store

    with Store(store_path, check="quick") as store:
        rows = [r for r in store.frame_rows(limit=1000000) if r["status"] == "ok"]
    by_label = collections.OrderedDict()
    for row in sorted(rows, key=lambda r: r["id"]):
        by_label.setdefault(row["profile"], []).append(row)
    out = collections.OrderedDict()
    for label, group in by_label.items():
        energy = [r["energy_j"] for r in group if r["energy_j"] is not None]
        latency = [r["latency_s"] for r in group if r["latency_s"] is not None]
        j = sum(energy) / len(energy) if energy else None
        s = sum(latency) / len(latency) if latency else 0.0
        out[label] = {"frames": len(group), "energy_j_per_frame": j, "latency_ms": 1000.0 * s,
                      "daily": daily_figures(deployment, j, s) if j is not None else None}
    return out


def detections_by_class(store_path):
    """Counter of class names over every stored detection."""
    from edge.store import Store

    with Store(store_path, check="quick") as store:
        return collections.Counter(d["class_name"] for d in store.detections_since(limit=10 ** 9))


def draw_frames(store_path, bundle_dir, dest):
    """Each processed frame with its stored detections drawn, as dest/<clip frame>.jpg; how many were written."""
    import cv2

    from edge.bundle import load_bundle
    from edge.detect import draw_detections
    from edge.images import read_image
    from edge.store import Store

    bundle = load_bundle(bundle_dir, verify=False)
    categories = {c.id: c.category for c in bundle.classes}
    with Store(store_path, check="quick") as store:
        frames = [r for r in store.frame_rows(limit=1000000) if r["status"] == "ok" and r["origin"]]
        boxes = collections.defaultdict(list)
        for d in store.detections_since(limit=10 ** 9):
            boxes[d["frame_row"]].append((d["xyxy"], d["score"], d["class_id"]))
    os.makedirs(dest, exist_ok=True)
    for row in frames:
        image = read_image(row["origin"])
        drawn = draw_detections(image, boxes.get(row["id"], []), bundle.names, categories)
        name = os.path.splitext(os.path.basename(row["origin"]))[0] + ".jpg"
        cv2.imwrite(os.path.join(dest, name), drawn)
    return len(frames)


def run_demo_serve(bundle_dir, data_yaml, out_dir, frames=24, meter="estimated", budget_wh_day=None,
                   backend="onnxruntime", progress=True):
    """Clip, serve, draw: the summary dict (serve_clip's, plus detections per class and the folders)."""
    import shutil

    out_dir = os.path.abspath(out_dir)
    for old in ("store.sqlite", "store.sqlite-wal", "store.sqlite-shm"):   # a rerun serves afresh
        if os.path.exists(os.path.join(out_dir, old)):
            os.remove(os.path.join(out_dir, old))
    for folder in (ANNOTATED, "crops"):
        shutil.rmtree(os.path.join(out_dir, folder), ignore_errors=True)
    clip = make_clip(clip_sources(data_yaml), frames, os.path.join(out_dir, "clip"))
    summary = serve_clip(os.path.abspath(bundle_dir), clip, out_dir, frames, meter, budget_wh_day, backend, progress)
    summary["detections_by_class"] = dict(detections_by_class(summary["store"]).most_common())
    summary["annotated"] = os.path.join(out_dir, ANNOTATED)
    summary["annotated_frames"] = draw_frames(summary["store"], bundle_dir, summary["annotated"])
    summary["clip"] = clip
    write_json(os.path.join(out_dir, "serve.json"), summary)
    return summary


def summary_lines(summary):
    """The printed account of a serve: frames, detections per class, governor, J/frame and Wh/day."""
    c = summary["counters"]
    label = summary["energy_label"]
    lines = ["served %d frames of %s: %d processed (%d probes), %d skipped for budget, %d failed; %d detections"
             % (c["frames"], summary["clip"], c["processed"], c["probes"], c["skipped_budget"], c["failed"],
                c["detections"])]
    lines.append("detections per class: %s" % (", ".join("%s %d" % kv for kv in summary["detections_by_class"].items())
                                               or "none"))
    lines.append("budget: %s%s" % (summary["budget_why"] if summary["budget_why"] != "given"
                                   else "%.3f Wh/day (given)" % summary["budget_wh_day"],
                                   "; the bundle's own: %s Wh/day" % summary["bundle_budget_wh_day"]))
    lines.append("governor (probes each profile once, then picks the richest that fits the budget):")
    lines += ["  " + m for m in summary["governor"]] or ["  no decision logged"]
    lines.append("cascade escalations: %d of the frames the cascade ran" % c["escalated"])
    lines.append("energy (%s meter %s, %s):" % (label, summary["meter"],
                                                "not a measurement" if label == "estimated" else "measured"))
    lines.append("  %-24s %6s %10s %10s %14s" % ("profile (stored label)", "frames", "ms/frame", "J/frame",
                                                "Wh/day if all"))
    for name, p in summary["profiles"].items():
        daily = p["daily"] or {}
        lines.append("  %-24s %6d %10.1f %10s %14s" % (
            name, p["frames"], p["latency_ms"],
            "-" if p["energy_j_per_frame"] is None else "%.3f" % p["energy_j_per_frame"],
            "%.3f (%s)" % (daily["budgeted_wh"], label[:3] + ".") if "budgeted_wh" in daily else "-"))
    lines.append("annotated frames: %d in %s" % (summary["annotated_frames"], summary["annotated"]))
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--data", required=True, help="the data.yaml whose validation split makes the clip")
    parser.add_argument("--out", required=True)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--meter", default="estimated")
    parser.add_argument("--budget-wh-day", type=float, default=None)
    args = parser.parse_args(argv)
    summary = run_demo_serve(args.bundle, args.data, args.out, args.frames, args.meter, args.budget_wh_day)
    print("\n".join(summary_lines(summary)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

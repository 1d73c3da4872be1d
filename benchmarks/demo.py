"""`make demo`: ReefWatch end to end on the embedded defaults, on a CPU, in minutes.

    python -m benchmarks.demo [--out out/demo] [--data data.yaml] [--frames 24] [--quick] [--set section.key=value]

1. `trainer run-all --preset demo` into OUT: synthetic scenes (or --data), SSL pretraining, the
   baseline, the active-learning round (a simulated vendor on synthetic data), specialisation,
   the three-variant ensemble, ONNX export with FP16 parity, calibration per profile and the
   bundle behind its budget gate (OUT/bundle). A rerun resumes where run-all stopped.
2. edge's daemon on a synthetic clip (the validation sequences) for `--frames` frames, the
   governor choosing each frame's profile (benchmarks.demo_serve).
3. The summary, printed and written to OUT/report.md: each step's time, the bundle's figures,
   detections per class, the governor's choices, J/frame and Wh/day (labelled estimated where
   the meter is), and where the reports, the stage history and the annotated frames are.

`--quick` runs the smoke preset (tiny models, one epoch per fit) and 8 frames: a check that the
chain works, not a model that detects much. `--data` runs the same chain on a real dataset.
"""
import argparse
import json
import os
import resource
import sys
import time

from benchmarks.common import write_json
from benchmarks.demo_serve import run_demo_serve, summary_lines


def step(message):
    print("\n== %s" % message, flush=True)


class Clock(object):
    """Wall and CPU seconds (this process and its finished children) per named step."""

    def __init__(self):
        self.steps = []
        self._start = None

    @staticmethod
    def _cpu_s():
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    def start(self):
        self._start = (time.perf_counter(), self._cpu_s())

    def stop(self, name):
        wall, cpu = time.perf_counter() - self._start[0], self._cpu_s() - self._start[1]
        self.steps.append({"step": name, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1)})
        return wall


def run_all_argv(out, preset, data=None, overrides=()):
    """The `python -m trainer` argv of the demo's run-all."""
    argv = [a for o in overrides for a in ("--set", o)] + ["run-all", "--work", out, "--preset", preset]
    return argv + (["--data", data] if data else [])


def read_state(out):
    from trainer.run_state import STATE_FILE

    with open(os.path.join(out, STATE_FILE)) as fh:
        return json.load(fh)


def stage_lines(state):
    lines = ["  %-11s %-8s %8s  %s" % ("stage", "status", "seconds", "note")]
    for name, record in state.get("stages", {}).items():
        note = " ".join(str(record.get("note") or record.get("error") or "").split())
        lines.append("  %-11s %-8s %8.1f  %s" % (name, record.get("status"), record.get("duration_s") or 0.0,
                                                 note[:100]))
    return lines


def bundle_lines(manifest):
    """The bundle's accuracy per profile (edge pipeline, validation split), default profile and gate."""
    from trainer.stages.bundle_report import ladder_lines

    lines = ["  %-14s %7s %10s %16s" % ("profile", "mAP50", "mAP50-95", "critical recall")]
    for profile, acc in (manifest.get("accuracy") or {}).items():
        if isinstance(acc, dict) and "map50" in acc:
            critical = acc.get("critical_recall")
            lines.append("  %-14s %7.3f %10.3f %16s" % (profile, acc["map50"], acc.get("map50_95") or 0.0,
                                                        "-" if critical is None else "%.3f" % critical))
    lines += ["  " + line for line in ladder_lines(manifest.get("accuracy") or {})]
    gate = manifest.get("gate") or {}
    lines.append("  default profile %s; gate %s%s" % (
        manifest.get("default_profile"), "passed" if gate.get("passed") else "FAILED",
        "" if gate.get("passed") else ": " + "; ".join(gate.get("failures") or [])))
    return lines


def critical_recall_line(manifest_accuracy, ensemble_json):
    """The calibrated ensemble_full's critical recall at its operating point against the best variant alone at its
    own threshold (trainer ensemble's device figures), the check the week-6 issue asks of the demo."""
    full = (manifest_accuracy.get("ensemble_full") or {}).get("critical_recall")
    if full is None or not os.path.exists(ensemble_json):
        return []
    with open(ensemble_json) as fh:
        variants = json.load(fh).get("variants") or []
    alone = [(v["metrics"].get("device_critical_recall"), v["name"], v["threshold"]) for v in variants
             if (v.get("metrics") or {}).get("device_critical_recall") is not None]
    if not alone:
        return []
    best, name, threshold = max(alone)
    return ["  critical recall at the operating point: ensemble_full %.3f (calibrated) vs %.3f for the best variant "
            "alone (%s at its own %.2f): %s" % (full, best, name, threshold,
                                                "higher" if full > best else "NOT higher")]


def single_vs_ultralytics_line(manifest, ensemble_json):
    """The single profile's mAP50 (edge's pipeline) against ultralytics' validation of the same variant on the
    same split (trainer ensemble, at the device's NMS IoU): the pipeline must not lose what the model knows."""
    single = (manifest.get("accuracy") or {}).get("single") or {}
    models = manifest.get("models") or []
    if "map50" not in single or not models or not os.path.exists(ensemble_json):
        return []
    with open(ensemble_json) as fh:
        variants = {v["name"]: v for v in json.load(fh).get("variants") or []}
    name = "balanced" if any(m.get("name") == "balanced" for m in models) else models[0].get("name")
    theirs = ((variants.get(name) or {}).get("metrics") or {}).get("mAP50")
    if theirs is None:
        return []
    return ["  single profile mAP50 %.3f (edge pipeline) vs %.3f (ultralytics val of %s): difference %+.3f" % (
        single["map50"], theirs, name, single["map50"] - theirs)]


def where_lines(out, serve):
    paths = (("bundle", os.path.join(out, "bundle")),
             ("bundle report (accuracy, energy, gate)", os.path.join(out, "release", "report.md")),
             ("calibration report (D-ECE, reliability PNGs)", os.path.join(out, "calibrate", "report.md")),
             ("stage history", "%s, %s" % (os.path.join(out, "history.md"), os.path.join(out, "history.png"))),
             ("annotated frames", serve["annotated"]), ("daemon store", serve["store"]),
             ("this summary", os.path.join(out, "report.md")))
    return ["  %-46s %s" % (what, path) for what, path in paths]


def summary(out, clock, state, serve):
    lines = ["ReefWatch demo: %s" % out, "", "Steps (wall s / CPU s of this process and its workers):"]
    lines += ["  %-10s %8.1f %8.1f" % (s["step"], s["wall_s"], s["cpu_s"]) for s in clock.steps]
    lines += ["  %-10s %8.1f" % ("total", sum(s["wall_s"] for s in clock.steps)), "",
              "run-all stages (%s preset):" % state.get("preset")]
    lines += stage_lines(state)
    from edge.bundle import load_bundle

    manifest = load_bundle(os.path.join(out, "bundle"), verify=False).manifest
    lines += ["", "Bundle (edge pipeline on the validation split):"] + bundle_lines(manifest)
    ensemble_json = os.path.join(out, "ensemble", "ensemble.json")
    lines += single_vs_ultralytics_line(manifest, ensemble_json)
    lines += critical_recall_line(manifest.get("accuracy") or {}, ensemble_json)
    lines += ["", "edge serve:"] + ["  " + line for line in summary_lines(serve)]
    lines += ["", "Where:"] + where_lines(out, serve)
    return lines


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/demo", help="run-all's work folder; the daemon serves into OUT/serve")
    parser.add_argument("--data", default=None, help="a dataset's data.yaml instead of synthetic scenes")
    parser.add_argument("--preset", default="demo", choices=("smoke", "demo", "full"))
    parser.add_argument("--frames", type=int, default=24, help="frames the daemon serves")
    parser.add_argument("--meter", default="estimated", help="the daemon's power meter (edge serve --meter)")
    parser.add_argument("--budget-wh-day", type=float, default=None,
                        help="the daemon's budget (default: between ensemble_flip's and ensemble_full's Wh/day)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a trainer config override for run-all (repeatable)")
    parser.add_argument("--quick", action="store_true", help="the smoke preset and 8 frames")
    return parser


def main(argv=None):
    from trainer.cli import main as trainer_main

    args = build_parser().parse_args(argv)
    if args.frames < 1:
        print("demo: --frames %d: expected at least 1 frame" % args.frames, file=sys.stderr)
        return 2
    if args.quick:
        args.preset, args.frames = "smoke", min(args.frames, 8)
    out = os.path.abspath(args.out)
    # ultralytics' epoch bars: the trainer keeps it quiet unless told (trainer.yolo sets the default only)
    os.environ.setdefault("YOLO_VERBOSE", "true")
    clock = Clock()
    step("1/2 trainer run-all --preset %s --work %s%s" % (args.preset, out, " --data %s" % args.data if args.data else ""))
    clock.start()
    code = trainer_main(run_all_argv(out, args.preset, args.data, args.overrides))
    clock.stop("run-all")
    if code != 0:
        print("\ndemo: run-all ended with exit status %d (3: stopped on purpose, see above); run the same command "
              "again to continue from where it stopped" % code, file=sys.stderr)
        return code
    state = read_state(out)
    data = state["stages"]["synth"]["artifacts"]["data"]
    step("2/2 edge serve: the daemon on %d frames of the validation clip" % args.frames)
    clock.start()
    serve = run_demo_serve(os.path.join(out, "bundle"), data, os.path.join(out, "serve"), args.frames, args.meter,
                           args.budget_wh_day)
    clock.stop("serve")
    lines = summary(out, clock, state, serve)
    with open(os.path.join(out, "report.md"), "w") as fh:
        fh.write("# ReefWatch demo\n\n```\n%s\n```\n" % "\n".join(lines))
    write_json(os.path.join(out, "demo.json"), {"steps": clock.steps, "serve": serve})
    step("summary")
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

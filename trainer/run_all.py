"""`trainer run-all`: weeks 1-6 as one command, resumable through WORK/run_state.json.

    python -m trainer run-all --work DIR [--preset smoke|demo|full] [--from STAGE] [--data data.yaml] [--pool DIR]

Stages, in order, each the existing `run_<stage>` of its module (trainer.run_stages):

    synth       synthetic scenes + an unlabelled pool (without --data); with --data, the user's dataset
    ssl         MoCo v3 on the train images and the pool, for the baseline model's backbone
    baseline    supervised training from the SSL backbone
    active      select a package from the pool; STOP until `trainer active import` has merged it
    specialize  critical-species oversampling and hard-negative mining
    ensemble    the device's variants
    export      ONNX with FP16 parity
    calibrate   temperatures and thresholds per profile
    bundle      the edge bundle (WORK/bundle) and the budget gate

Each stage records its inputs (files and config sections, with digests), outputs and figures
(trainer.run_state). A rerun skips the finished stages whose inputs and outputs are unchanged,
resumes an interrupted one (its own resume logic), and redoes a changed one and every stage
after it; `--from STAGE` redoes from there. A redone stage starts from an empty folder.
After every stage WORK/history.md and history.png show mAP50, critical recall and Wh/day.

Exit status: 0 when the bundle is written, 3 when run-all stopped on purpose (waiting for the
vendor's annotations, or a stage this trainer does not have yet), 2 on an error.
"""
import os
import shutil
import sys
import time

from trainer import run_state as rs
from trainer.errors import Stopped, TrainerError  # noqa: F401 (Stopped: run_all.Stopped for callers)

STOPPED = 3


class Context:
    """What the stages share: the config, the work folder, the state and the command's choices."""

    def __init__(self, config, work, state, preset, data=None, pool=None, progress=True, force=False):
        self.config, self.work, self.state = config, os.path.abspath(work), state
        self.preset, self.data_arg, self.pool_arg, self.progress = preset, data, pool, progress
        self.force = force   # the bundle ships past a failing gate, marked failing

    def path(self, *parts):
        return os.path.join(self.work, *parts)

    def artifact(self, stage, role):
        return rs.artifact(self.state, stage, role)

    def bar(self, desc):
        """A tqdm wrapper for an iterable (None when progress is off)."""
        if not self.progress:
            return None
        from tqdm import tqdm

        return lambda items: tqdm(items, desc=desc, unit="img")


def run_all(config, work, preset="full", data=None, pool=None, start=None, stream=None, progress=True, stages=None,
            force=False):
    """Run (or resume) the chain in `work`; 0 when every stage finished, STOPPED when it stopped on purpose.

    force: ship the bundle past a failing gate, marked failing (trainer bundle --force).
    stages: the Stage list (default trainer.run_stages.STAGES; tests pass their own)."""
    from trainer import run_history, run_stages

    stages = stages or run_stages.STAGES
    stream = stream or sys.stdout
    order = [s.name for s in stages]
    first_forced = rs.from_index(order, start) if start else len(order)
    os.makedirs(work, exist_ok=True)
    state_path = os.path.join(work, rs.STATE_FILE)
    state = rs.read_state(state_path, work, order)
    state["preset"] = preset
    ctx = Context(config, work, state, preset, data, pool, progress, force)
    upstream_ran = False
    for i, stage in enumerate(stages):
        missing = stage.missing()
        if missing:
            _say(stream, "[%d/%d] %s: not available in this trainer (%s); run-all stops after %s"
                 % (i + 1, len(order), stage.name, missing, order[i - 1] if i else "nothing"))
            return _stop(state_path, state, order, work)
        paths, params = stage.inputs(ctx)
        inputs = rs.stage_inputs(paths, config, stage.sections, params)
        record = state["stages"].get(stage.name)
        outputs_now = rs.digests((record or {}).get("outputs") or {})
        action, reason = rs.decide(record, inputs, outputs_now, forced=i >= first_forced, upstream_ran=upstream_ran,
                                   resumable=stage.resumable)
        if action == "skip":
            _say(stream, "[%d/%d] %s: finished earlier, inputs unchanged; skipped" % (i + 1, len(order), stage.name))
            continue
        if action == "redo":
            for folder in stage.folders(ctx):
                if os.path.isdir(folder):
                    shutil.rmtree(folder)
            rs.forget_after(state, order, stage.name)
        upstream_ran = True
        _say(stream, "[%d/%d] %s: %s (%s)" % (i + 1, len(order), stage.name, stage.title, reason))
        outcome = _run_stage(stage, ctx, inputs, state_path, stream)
        run_history.write_history(work, state, order)
        if outcome is None:
            return STOPPED
    bundle = state["stages"].get("bundle", {}).get("artifacts", {}).get("bundle")
    _say(stream, "run-all: every stage finished; bundle %s, history %s" % (bundle, os.path.join(work, "history.md")))
    return 0


def _run_stage(stage, ctx, inputs, state_path, stream):
    """Run one stage and record it; the Outcome, or None when it stopped on purpose."""
    state, name = ctx.state, stage.name
    previous = state["stages"].get(name) or {}
    rs.start_stage(state, name, inputs)
    rs.write_state(state_path, state)
    t0 = time.perf_counter()
    try:
        outcome = stage.run(ctx)
    except Stopped as stop:
        rs.finish_stage(state, name, stop.status, time.perf_counter() - t0, artifacts=previous.get("artifacts"),
                        note=str(stop))
        rs.write_state(state_path, state)
        _say(stream, "%s: stopped\n%s" % (name, stop))
        return None
    except Exception as e:   # recorded, then raised again unchanged
        rs.finish_stage(state, name, "failed", time.perf_counter() - t0, error=" ".join(str(e).split())[:500])
        rs.write_state(state_path, state)
        raise
    seconds = time.perf_counter() - t0
    rs.finish_stage(state, name, outcome.status, seconds, outputs=outcome.outputs, artifacts=outcome.artifacts,
                    figures=outcome.figures, note=outcome.note)
    rs.write_state(state_path, state)
    _say(stream, "%s: %s in %.1f s%s" % (name, outcome.status, seconds, "; " + outcome.note if outcome.note else ""))
    return outcome


def _stop(state_path, state, order, work):
    from trainer import run_history

    rs.write_state(state_path, state)
    run_history.write_history(work, state, order)
    return STOPPED


def _say(stream, text):
    from edge.console import printable

    stream.write(printable(text) + "\n")
    stream.flush()


# ----------------------------------------------------------------------------------------
# CLI glue (trainer.cli COMMANDS["run-all"])


def add_arguments(parser):
    from trainer.cli import existing_file, existing_folder, output_folder
    from trainer.run_presets import PRESETS
    from trainer.run_stages import STAGE_NAMES

    parser.add_argument("--work", required=True, type=output_folder,
                        help="work folder: one sub-folder per stage, run_state.json, history.md, bundle/")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full",
                        help="smoke (minutes on 2 cores), demo, or full (the config as written; default)")
    parser.add_argument("--from", dest="start", choices=STAGE_NAMES, metavar="STAGE",
                        help="redo from this stage (%s)" % ", ".join(STAGE_NAMES))
    parser.add_argument("--data", type=existing_file("a dataset's data.yaml"),
                        help="your dataset's data.yaml instead of synthetic scenes")
    parser.add_argument("--pool", type=existing_folder("a folder of unlabelled images"),
                        help="unlabelled images for active learning (default: the dataset's unlabelled/images; "
                             "without one the active stage is skipped)")
    parser.add_argument("--force", action="store_true",
                        help="ship the bundle even when the budget gate refuses it, marked failing in its manifest "
                             "(as trainer bundle --force); a rerun with --force redoes only the bundle stage")


def run_command(config, args):
    """Weeks 1-6 in one resumable command: synth/data, ssl, baseline, active, ..., bundle."""
    from trainer.cli import flag_overrides
    from trainer.config import load_config
    from trainer.run_presets import preset_overrides

    if args.preset != "full":   # the preset goes under --set and the flags, over the config file
        config = load_config(getattr(args, "config", None),
                             preset_overrides(args.preset) + list(getattr(args, "overrides", [])) + flag_overrides(args))
    if args.data and os.path.abspath(args.data).startswith(os.path.abspath(args.work) + os.sep):
        raise TrainerError("--data %s lies inside --work %s; keep your dataset outside the work folder (a redo "
                           "empties stage folders)" % (args.data, args.work))
    return run_all(config, args.work, preset=args.preset, data=args.data, pool=args.pool, start=args.start,
                   force=args.force)

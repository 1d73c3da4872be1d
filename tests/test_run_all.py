"""`trainer run-all`: the orchestration on stand-in stages (skip, redo on changed inputs, --from, resume after an
interruption, the stop and its continuation, a missing stage), the active stage's annotation stop with the real
select and import, and the smoke preset end to end (slow)."""
import dataclasses
import io
import json
import os
import shlex

import pytest

from trainer import run_all, run_stages
from trainer.cli import COMMANDS, main
from trainer.config import load_config
from trainer.errors import TrainerError
from trainer.run_state import STATE_FILE

CLI = dict(COMMANDS, **{"run-all": (run_all.add_arguments, run_all.run_command)})


class Calls:
    """Stand-in stages: each writes WORK/<name>/out.txt from its input (the previous stage's file) and counts runs."""

    def __init__(self, names=("a", "b", "c"), sections=("synth", "ssl", "baseline")):
        self.runs = []
        self.fail = {}       # name -> exception to raise on the next run
        self.stages = [self.stage(i, n, s) for i, (n, s) in enumerate(zip(names, sections))]

    def stage(self, i, name, section):
        def inputs(ctx):
            return ([ctx.artifact(self.stages[i - 1].name, "file")] if i else []), {}

        def run(ctx):
            self.runs.append(name)
            folder = ctx.path(name)
            os.makedirs(folder, exist_ok=True)
            marker = os.path.join(folder, "partial")
            resumed = os.path.exists(marker)   # what a stage's own resume logic would find
            open(marker, "w").close()
            if name in self.fail:
                raise self.fail.pop(name)
            source = open(inputs(ctx)[0][0]).read() if i else getattr(ctx.config, section).__class__.__name__
            path = os.path.join(folder, "out.txt")
            with open(path, "w") as fh:
                fh.write("%s <- %s" % (name, source))
            return run_stages.Outcome([path], {"file": path}, {name: {"mAP50": 0.1 * (i + 1), "source": "test"}},
                                      note="resumed" if resumed else None)

        return run_stages.Stage(name, "stand-in " + name, (section,), inputs, run, owns=(name,))

    def go(self, work, config=None, **kw):
        stream = io.StringIO()
        code = run_all.run_all(config or load_config(), str(work), stream=stream, progress=False,
                               stages=self.stages, **kw)
        return code, stream.getvalue()


def state_of(work):
    with open(os.path.join(str(work), STATE_FILE)) as fh:
        return json.load(fh)


def test_rerun_skips_finished_stages_and_a_changed_input_redoes_it_and_what_follows(tmp_path):
    calls = Calls()
    assert calls.go(tmp_path)[0] == 0
    assert calls.runs == ["a", "b", "c"]
    code, text = calls.go(tmp_path)
    assert code == 0 and calls.runs == ["a", "b", "c"] and text.count("skipped") == 3
    # the ssl section is stage b's input: b and c run again, a does not
    code, text = calls.go(tmp_path, load_config(None, ["ssl.epochs=3"]))
    assert calls.runs[3:] == ["b", "c"] and "config section ssl changed" in text
    # a's output edited by hand: a is redone, and everything after it
    with open(tmp_path / "a" / "out.txt", "a") as fh:
        fh.write("!")
    calls.go(tmp_path, load_config(None, ["ssl.epochs=3"]))
    assert calls.runs[5:] == ["a", "b", "c"]
    assert calls.runs.count("a") == 2 and calls.runs.count("b") == 3
    state = state_of(tmp_path)
    assert [state["stages"][n]["status"] for n in "abc"] == ["done"] * 3
    history = open(tmp_path / "history.md").read()
    assert "| a | a | 0.1000 |" in history and "| c | c | 0.3000 |" in history
    assert os.path.getsize(tmp_path / "history.png") > 0


def test_from_redoes_that_stage_and_every_later_one_in_empty_folders(tmp_path):
    calls = Calls()
    calls.go(tmp_path)
    open(tmp_path / "b" / "stale", "w").close()
    code, text = calls.go(tmp_path, start="b")
    assert code == 0 and calls.runs == ["a", "b", "c", "b", "c"] and "(--from)" in text
    assert not os.path.exists(tmp_path / "b" / "stale")
    with pytest.raises(TrainerError, match="--from z: no such stage; expected one of a, b, c"):
        calls.go(tmp_path, start="z")


def test_an_interrupted_stage_resumes_in_its_folder_and_a_failed_one_is_recorded(tmp_path):
    calls = Calls()
    calls.fail["b"] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        calls.go(tmp_path)
    assert state_of(tmp_path)["stages"]["b"]["status"] == "running"
    code, text = calls.go(tmp_path)
    assert code == 0 and calls.runs == ["a", "b", "b", "c"]
    assert "interrupted (running)" in text and "b: done" in text and "resumed" in text
    calls.fail["c"] = TrainerError("c broke: disk full")
    with pytest.raises(TrainerError, match="disk full"):
        calls.go(tmp_path, start="c")
    record = state_of(tmp_path)["stages"]["c"]
    assert record["status"] == "failed" and "disk full" in record["error"]


def test_a_stop_waits_and_the_rerun_continues(tmp_path):
    calls = Calls()
    calls.fail["b"] = run_all.Stopped("send package.zip to the vendor, then run `trainer active import ...`")
    code, text = calls.go(tmp_path)
    assert code == run_all.STOPPED and "send package.zip" in text and calls.runs == ["a", "b"]
    assert state_of(tmp_path)["stages"]["b"]["status"] == "waiting"
    code, text = calls.go(tmp_path)
    assert code == 0 and calls.runs == ["a", "b", "b", "c"] and "waiting for annotations" in text


def test_a_stage_this_trainer_lacks_stops_the_run_naming_it(tmp_path):
    calls = Calls()
    missing = run_stages.Stage("export", "ONNX", ("export",), lambda ctx: ([], {}), None,
                               module="trainer.stages.no_such_stage")
    calls.stages.append(missing)
    code, text = calls.go(tmp_path)
    assert code == run_all.STOPPED and calls.runs == ["a", "b", "c"]
    assert "export: not available in this trainer (trainer/stages/no_such_stage.py is missing); " \
           "run-all stops after c" in text
    assert "| c | done |" in open(tmp_path / "history.md").read()


# ----------------------------------------------------------------------------------------
# The active stage with a human vendor: select, stop with the import command, continue once merged


@pytest.mark.slow
def test_active_stage_stops_with_the_import_command_and_continues_once_it_merged(tmp_path):
    from tests.test_baseline import make_yolo_dataset
    from tests.yolo_models import random_detector_onnx, random_frames
    from trainer.active.package import read_package
    from trainer.run_state import new_state

    data = make_yolo_dataset(str(tmp_path / "data"), n_images=3, size=64)
    pool = str(tmp_path / "pool")
    random_frames(pool, 5, sizes=((64, 64),))
    model = random_detector_onnx(str(tmp_path), 3, 64)
    work = tmp_path / "work"
    state = new_state(str(work), run_stages.STAGE_NAMES)
    state["stages"] = {"synth": {"artifacts": {"data": data, "pool": pool, "vendor": "human"}},
                       "baseline": {"artifacts": {"weights": model}}}
    config = load_config(None, ["active.k=2", "baseline.imgsz=64"])
    ctx = run_all.Context(config, str(work), state, "full", progress=False)
    with pytest.raises(run_all.Stopped) as stop:
        run_stages._active_run(ctx)
    message = str(stop.value)
    package = os.path.join(str(work), "active", "package.zip")
    assert "send %s (2 images" % package in message
    command = next(line for line in message.splitlines() if "active import" in line)
    # the vendor returns the drafts as they are; the user runs the printed command with that file
    _, coco = read_package(package)
    answer = tmp_path / "vendor.json"
    answer.write_text(json.dumps(coco))
    argv = shlex.split(command.replace("ANNOTATED.json", str(answer)))
    assert argv[:4] == ["python", "-m", "trainer", "active"]
    assert main(argv[3:]) == 0
    outcome = run_stages._active_run(ctx)
    combined = outcome.artifacts["data"]
    from trainer.data.yolo_dataset import read_data_yaml

    names, splits = read_data_yaml(combined)
    assert names == ["a", "b", "c"]
    assert len(splits["train"]) == 3 + 2 and len(splits["val"]) == 3
    assert sum("annotated" in p for p in splits["train"]) == 2


def test_force_reaches_run_bundle_and_only_a_forced_run_records_it(tmp_path, monkeypatch):
    import types

    import trainer.stages.bundle as bundle_stage

    seen = []

    def fake_run_bundle(config, export_dir, calibration_dir, data, out_dir, force=False, progress=True):
        seen.append((export_dir, calibration_dir, data, force))
        os.makedirs(out_dir)
        verdict = {"passed": False, "failures": ["mAP50 0.14 < 0.3"], "forced": force}
        return types.SimpleNamespace(bundle_dir=out_dir, verdict=verdict, accuracy={}, energy=None,
                                     default_profile="single")

    monkeypatch.setattr(bundle_stage, "run_bundle", fake_run_bundle)
    artifacts = {"export": "e.json", "export_dir": "e", "calibration": "c.json", "calibration_dir": "c", "data": "d"}
    for force in (False, True):
        ctx = types.SimpleNamespace(force=force, config=None, progress=False,
                                    artifact=lambda stage, role: artifacts[role],
                                    path=lambda *parts: os.path.join(str(tmp_path), str(force), *parts))
        assert run_stages._bundle_inputs(ctx) == (["e.json", "c.json", "d"], {"force": True} if force else {})
        outcome = run_stages._bundle_run(ctx)
        assert seen[-1] == ("e", "c", "d", force) and "FAILED (shipped, --force): mAP50 0.14 < 0.3" in outcome.note


def test_run_all_force_reaches_the_stages_and_toggling_it_redoes_what_records_it(tmp_path):
    calls = Calls()
    last = calls.stages[-1]
    calls.stages[-1] = dataclasses.replace(last, inputs=lambda ctx: ([ctx.artifact("b", "file")],
                                                                      {"force": True} if ctx.force else {}))
    assert calls.go(tmp_path)[0] == 0
    code, text = calls.go(tmp_path, force=True)
    assert code == 0 and calls.runs == ["a", "b", "c", "c"] and "inputs changed" in text
    assert state_of(tmp_path)["stages"]["c"]["inputs"]["params"] == {"force": True}
    assert calls.go(tmp_path, force=True)[0] == 0 and calls.runs == ["a", "b", "c", "c"]


def test_cli_refuses_bad_choices_and_data_inside_the_work_folder(tmp_path, capsys):
    assert main(["run-all", "--work", str(tmp_path), "--from", "bundel"], commands=CLI) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["run-all", "--work", str(tmp_path), "--preset", "huge"], commands=CLI) == 2
    inside = tmp_path / "data.yaml"
    inside.write_text("names: [a]\ntrain: images\n")
    assert main(["run-all", "--work", str(tmp_path), "--data", str(inside)], commands=CLI) == 2
    assert "lies inside --work" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / STATE_FILE)


@pytest.mark.parametrize("preset", ["smoke", "demo", "real", "full"])
def test_every_preset_is_a_valid_config(preset):
    from trainer.config import load_config
    from trainer.run_presets import preset_overrides

    config = load_config(None, preset_overrides(preset))
    if preset == "real":  # sized for a real data set on 2 CPU cores (see trainer/run_presets.py)
        assert (config.baseline.model, config.baseline.imgsz, config.general.device) == ("yolov8n.yaml", 320, "cpu")
        assert config.ssl.epochs > 1 and config.baseline.epochs > config.ensemble.epochs > 1
        assert config.ssl.temperature == 0.2 and config.export.ship_fp16   # T=1.0 leaves a CPU budget at chance


# ----------------------------------------------------------------------------------------
# The smoke preset, end to end


@pytest.mark.slow
def test_smoke_preset_end_to_end_then_a_rerun_skips_everything(tmp_path, capsys):
    work = tmp_path / "work"
    code = main(["run-all", "--work", str(work), "--preset", "smoke"], commands=CLI)
    captured = capsys.readouterr()
    out = captured.out + captured.err[-3000:]
    state = state_of(work)
    done = [n for n in run_stages.STAGE_NAMES if (state["stages"].get(n) or {}).get("status") == "done"]
    assert done[:6] == ["synth", "ssl", "baseline", "active", "specialize", "ensemble"], out[-2000:]
    assert "4 images annotated and merged" in state["stages"]["active"]["note"]
    assert sorted(state["stages"]["ensemble"]["figures"]) == ["ensemble/balanced", "ensemble/precision",
                                                             "ensemble/recall"]
    history = open(work / "history.md").read()
    assert "| baseline | baseline |" in history and "| ensemble | ensemble/recall |" in history
    if run_stages.STAGES[-1].missing() or run_stages.STAGES[-3].missing():
        assert code == run_all.STOPPED and "not available in this trainer" in out
    else:
        assert code == 0, out[-2000:]
        from edge.bundle import load_bundle

        assert main_edge(["bundle", "verify", str(work / "bundle")]) == 0
        bundle = load_bundle(str(work / "bundle"))
        assert len(bundle.models) == 3
        manifest = bundle.manifest
        assert manifest["accuracy"] and any(t != 1.0 for p in manifest["profiles"].values()
                                            for t in p["temperatures"])
        assert any(r.startswith("bundle/") for r in state["stages"]["bundle"]["figures"])
    code = main(["run-all", "--work", str(work), "--preset", "smoke"], commands=CLI)
    out = capsys.readouterr().out
    assert out.count("finished earlier, inputs unchanged; skipped") == len(done)


def main_edge(argv):
    from edge.cli import main as edge_main

    return edge_main(argv)

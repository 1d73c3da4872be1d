"""run-all's state file: digests, the skip/resume/redo decision, resume point, --from, refused state files."""
import hashlib
import json
import os

import pytest

from trainer import run_state as rs
from trainer.config import load_config
from trainer.errors import TrainerError

ORDER = ["synth", "ssl", "baseline", "active"]
INPUTS = {"files": {"/w/data.yaml": "aa"}, "config": {"baseline": "c1"}, "params": {}}
OUTPUTS = {"/w/best.pt": "bb"}


def record(status="done", inputs=INPUTS, outputs=OUTPUTS):
    return {"status": status, "inputs": inputs, "outputs": dict(outputs)}


def with_file(digest):
    return dict(INPUTS, files={"/w/data.yaml": digest})


@pytest.mark.parametrize("rec, inputs, outputs_now, kw, action, reason", [
    (None, INPUTS, {}, {}, "redo", "not run yet"),
    (record(), INPUTS, OUTPUTS, {}, "skip", "done"),
    (record("skipped"), INPUTS, OUTPUTS, {}, "skip", "skipped"),
    (record(), with_file("zz"), OUTPUTS, {}, "redo", "file /w/data.yaml changed"),
    (record(), dict(INPUTS, config={"baseline": "c2"}), OUTPUTS, {}, "redo", "config section baseline changed"),
    (record(), dict(INPUTS, params={"pool_images": 4}), OUTPUTS, {}, "redo", "setting pool_images added"),
    (record(), dict(INPUTS, files={}), OUTPUTS, {}, "redo", "file /w/data.yaml gone"),
    (record(), INPUTS, {"/w/best.pt": None}, {}, "redo", "outputs changed or missing: /w/best.pt"),
    (record(), INPUTS, {"/w/best.pt": "edited"}, {}, "redo", "outputs changed or missing"),
    (record(), INPUTS, OUTPUTS, {"forced": True}, "redo", "--from"),
    (record(), INPUTS, OUTPUTS, {"upstream_ran": True}, "redo", "an earlier stage ran again"),
    (record("running"), INPUTS, {}, {}, "resume", "interrupted (running)"),
    (record("failed"), INPUTS, {}, {}, "resume", "interrupted (failed)"),
    (record("running"), INPUTS, {}, {"resumable": False}, "redo", "interrupted"),
    (record("waiting"), INPUTS, {}, {}, "resume", "waiting for annotations"),
    # an interrupted stage whose inputs changed meanwhile starts over, it does not resume
    (record("running"), with_file("zz"), {}, {}, "redo", "inputs changed"),
])
def test_decide(rec, inputs, outputs_now, kw, action, reason):
    got_action, got_reason = rs.decide(rec, inputs, outputs_now, **kw)
    assert got_action == action
    assert reason in got_reason


@pytest.mark.parametrize("statuses, expected", [
    ({}, 0),
    ({"synth": "done"}, 1),
    ({"synth": "done", "ssl": "skipped", "baseline": "running"}, 2),
    ({"synth": "done", "ssl": "done", "baseline": "done", "active": "waiting"}, 3),
    ({name: "done" for name in ORDER}, len(ORDER)),
    ({"synth": "failed", "ssl": "done"}, 0),
])
def test_resume_point(statuses, expected):
    state = {"stages": {name: {"status": s} for name, s in statuses.items()}}
    assert rs.resume_point(state, ORDER) == expected


def test_from_index_names_the_stages():
    assert rs.from_index(ORDER, "baseline") == 2
    with pytest.raises(TrainerError, match="synth, ssl, baseline, active"):
        rs.from_index(ORDER, "bundel")


def test_digests_of_files_and_folders(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"reef" * 1000)
    assert rs.digest(str(f)) == hashlib.sha256(b"reef" * 1000).hexdigest()
    assert rs.digest(str(tmp_path / "absent")) is None
    folder = tmp_path / "ds"
    (folder / "labels").mkdir(parents=True)
    (folder / "labels" / "x.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    before = rs.digest(str(folder))
    (folder / "labels.cache").write_bytes(b"ultralytics writes this beside the data")
    assert rs.digest(str(folder)) == before        # a reader's cache is not the data
    (folder / "labels" / "y.txt").write_text("")
    added = rs.digest(str(folder))
    assert added != before
    (folder / "labels" / "x.txt").write_text("1 0.5 0.5 0.1 0.1 \n")   # one more byte
    assert rs.digest(str(folder)) != added


def test_section_digests_follow_their_section_only():
    base = load_config()
    digests = rs.section_digests(base, ["ssl", "baseline", "general"])
    changed = rs.section_digests(load_config(None, ["ssl.epochs=7"]), ["ssl", "baseline", "general"])
    assert changed["ssl"] != digests["ssl"] and changed["baseline"] == digests["baseline"]
    # where a stage runs is not what it makes: the device and worker count are left out
    moved = rs.section_digests(load_config(None, ["general.device=0", "general.num_workers=8"]), ["general"])
    assert moved["general"] == digests["general"]
    assert rs.section_digests(load_config(None, ["general.seed=3"]), ["general"])["general"] != digests["general"]


def test_stage_records_round_trip_atomically(tmp_path):
    path = str(tmp_path / rs.STATE_FILE)
    out = tmp_path / "best.pt"
    out.write_bytes(b"w")
    state = rs.read_state(path, str(tmp_path), ORDER)
    assert state["stages"] == {} and state["schema"] == rs.SCHEMA
    rs.start_stage(state, "synth", INPUTS)
    rs.finish_stage(state, "synth", "done", 1.234, outputs=[str(out)], artifacts={"weights": str(out)},
                    figures={"baseline": {"mAP50": 0.5}})
    rs.write_state(path, state)
    assert not os.path.exists(path + ".tmp")
    again = rs.read_state(path, str(tmp_path), ORDER)
    rec = again["stages"]["synth"]
    assert rec["status"] == "done" and rec["duration_s"] == 1.23
    assert rec["outputs"] == {str(out): hashlib.sha256(b"w").hexdigest()}
    assert rs.artifact(again, "synth", "weights") == str(out)
    with pytest.raises(TrainerError, match="run-all --from ssl"):
        rs.artifact(again, "ssl", "backbone")
    with pytest.raises(ValueError, match="status 'finished'"):
        rs.finish_stage(state, "synth", "finished", 0.0)


def test_forget_after_drops_every_later_record():
    state = {"stages": {name: record() for name in ORDER}}
    rs.forget_after(state, ORDER, "ssl")
    assert list(state["stages"]) == ["synth", "ssl"]


GOOD = {"schema": rs.SCHEMA, "version": rs.VERSION, "stages": {"synth": record()}}


@pytest.mark.parametrize("text, message", [
    (json.dumps(GOOD)[:40], "half-written or damaged"),
    ("", "half-written or damaged"),
    ("\xff\xfe not utf-8", "half-written or damaged"),
    (json.dumps([1, 2]), "not a run-all state file"),
    (json.dumps(dict(GOOD, schema="reefwatch-bundle")), "not a run-all state file"),
    (json.dumps(dict(GOOD, version=99)), "state version 99"),
    (json.dumps(dict(GOOD, stages=[])), "'stages' is list"),
    (json.dumps(dict(GOOD, stages={"train": record()})), "unknown stage 'train'"),
    (json.dumps(dict(GOOD, stages={"ssl": {"status": "finished", "inputs": {}, "outputs": {}}})), "malformed"),
    (json.dumps(dict(GOOD, stages={"ssl": {"status": "done", "inputs": {}}})), "malformed"),
])
def test_a_damaged_state_file_is_refused_with_the_fix(tmp_path, text, message):
    path = tmp_path / rs.STATE_FILE
    path.write_bytes(text.encode("latin-1") if text.startswith("\xff") else text.encode())
    with pytest.raises(TrainerError, match=message) as info:
        rs.read_state(str(path), str(tmp_path), ORDER)
    assert str(path) in str(info.value) and "delete it" in str(info.value)


def test_an_artifact_recorded_as_none_is_none_and_a_missing_one_is_refused():
    # --data without an unlabelled pool: synth records pool None and the later stages skip what needs one.
    state = {"stages": {"synth": {"artifacts": {"data": "/d/data.yaml", "pool": None}}}}
    assert rs.artifact(state, "synth", "pool") is None
    assert rs.artifact(state, "synth", "data") == "/d/data.yaml"
    with pytest.raises(TrainerError, match="no weights from stage baseline; run it first"):
        rs.artifact(state, "baseline", "weights")
    with pytest.raises(TrainerError, match="no vendor from stage synth"):
        rs.artifact(state, "synth", "vendor")

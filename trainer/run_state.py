"""The state file of `trainer run-all` (WORK/run_state.json): what each stage ran on and what it made.

One record per stage:

    status      running | waiting (the annotation stop) | done | skipped | failed
    inputs      {"files": {path: digest}, "config": {section: digest}, "params": {...}}
    outputs     {path: digest}: what later stages read; checked again before a stage counts as done
    artifacts   {role: path}: where the next stages find them (weights, data, ...)
    figures     key figures (mAP50, critical recall, Wh/day) for the stage history
    started, finished (ISO time), duration_s, note, error

A stage is done for good when its recorded inputs equal the current ones and its outputs
are still there, unchanged. `decide` says what to do with one stage: skip it, resume it
(interrupted: its own resume logic takes over) or redo it (never run, inputs or outputs
changed, `--from`, or an earlier stage ran again), so a change redoes that stage and
everything after it. The file is written whole through a temporary file and a rename, so
an interruption leaves the previous state; one that cannot be read is refused, never
guessed at.

Digests: a file's sha256; a folder's is the sha256 of its listing (relative path, size and
modification time of every file below it, less the label caches ultralytics writes beside the
data it reads), so adding, removing or rewriting any file shows without hashing a whole
dataset on every rerun.
"""
import dataclasses
import datetime
import hashlib
import json
import os

from edge.atomic_file import atomic_output
from edge.bundle import sha256_of
from trainer.errors import TrainerError

SCHEMA = "reefwatch-run-state"
VERSION = 1
STATE_FILE = "run_state.json"
STATUSES = ("running", "waiting", "done", "skipped", "failed")
FINISHED = ("done", "skipped")
# general keys that change where or how fast a stage runs, not what it makes
VOLATILE = {"general": ("device", "num_workers", "output_dir")}
# Files a reader writes beside the data it reads (ultralytics' label caches): not part of a folder's contents.
SIDE_FILES = (".cache",)


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------------
# Digests


def listing_digest(folder):
    """sha256 of every file's relative path, size and mtime below `folder` (sorted)."""
    rows = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(f for f in files if not f.endswith(SIDE_FILES)):
            path = os.path.join(root, name)
            st = os.stat(path)
            rows.append("%s\t%d\t%d" % (os.path.relpath(path, folder).replace(os.sep, "/"), st.st_size,
                                        st.st_mtime_ns))
    return "listing:" + hashlib.sha256("\n".join(rows).encode("utf-8", "surrogateescape")).hexdigest()


def digest(path):
    """A file's sha256, a folder's listing digest, or None when nothing is there."""
    if os.path.isdir(path):
        return listing_digest(path)
    if os.path.isfile(path):
        return sha256_of(path)
    return None


def digests(paths):
    return {os.path.abspath(str(p)): digest(str(p)) for p in paths}


def section_digests(config, sections):
    """{section: sha256 of its values} for the named sections of a Config (VOLATILE keys left out)."""
    out = {}
    for name in sections:
        values = dataclasses.asdict(getattr(config, name))
        for key in VOLATILE.get(name, ()):
            values.pop(key, None)
        text = json.dumps(values, sort_keys=True, default=str)
        out[name] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return out


def stage_inputs(files, config, sections, params=None):
    """The inputs record of a stage: digests of its input paths and config sections, plus plain params."""
    return {"files": digests(files), "config": section_digests(config, sections),
            "params": json.loads(json.dumps(params or {}, sort_keys=True, default=str))}


# ----------------------------------------------------------------------------------------
# Decisions (pure)


def changed_inputs(recorded, current):
    """Human-readable names of what differs between two inputs records ([] when equal)."""
    changes = []
    for part, label in (("files", "file"), ("config", "config section"), ("params", "setting")):
        old, new = (recorded or {}).get(part, {}), (current or {}).get(part, {})
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                what = "added" if key not in old else "gone" if key not in new else "changed"
                changes.append("%s %s %s" % (label, key, what))
    return changes


def changed_outputs(record, current):
    """Paths among a record's outputs whose digest now differs (current: {path: digest})."""
    return sorted(p for p, d in (record.get("outputs") or {}).items() if current.get(p) != d)


def decide(record, inputs, outputs_now, forced=False, upstream_ran=False, resumable=True):
    """(action, reason) for one stage: action is 'skip', 'resume' or 'redo'.

    record: the stage's state record or None; inputs: its current inputs record;
    outputs_now: {path: digest} of the recorded outputs as they are now; forced: `--from`
    names this stage or an earlier one; upstream_ran: an earlier stage ran in this run;
    resumable: the stage continues from its own partial outputs (else it starts over).
    """
    if forced:
        return "redo", "--from"
    if not record:
        return "redo", "not run yet"
    changes = changed_inputs(record.get("inputs"), inputs)
    if changes:
        return "redo", "inputs changed: " + ", ".join(changes)
    if upstream_ran:
        return "redo", "an earlier stage ran again"
    status = record.get("status")
    if status in FINISHED:
        gone = changed_outputs(record, outputs_now)
        if gone:
            return "redo", "outputs changed or missing: " + ", ".join(gone)
        return "skip", status
    if status == "waiting":
        return "resume", "waiting for annotations"
    return ("resume", "interrupted (%s)" % status) if resumable else ("redo", "interrupted (%s)" % status)


def resume_point(state, order):
    """Index of the first stage in `order` that is not finished (len(order) when all are)."""
    stages = state.get("stages", {})
    for i, name in enumerate(order):
        if (stages.get(name) or {}).get("status") not in FINISHED:
            return i
    return len(order)


def from_index(order, name):
    if name not in order:
        raise TrainerError("--from %s: no such stage; expected one of %s" % (name, ", ".join(order)))
    return order.index(name)


# ----------------------------------------------------------------------------------------
# Records


def new_state(work, order):
    return {"schema": SCHEMA, "version": VERSION, "work": os.path.abspath(work), "order": list(order),
            "stages": {}, "updated": now_iso()}


def start_stage(state, name, inputs):
    state["stages"][name] = {"status": "running", "inputs": inputs, "outputs": {}, "artifacts": {}, "figures": {},
                             "started": now_iso(), "finished": None, "duration_s": None, "note": None,
                             "error": None}
    return state["stages"][name]


def finish_stage(state, name, status, duration_s, outputs=(), artifacts=None, figures=None, note=None,
                 error=None):
    if status not in STATUSES:
        raise ValueError("status %r: expected one of %s" % (status, ", ".join(STATUSES)))
    record = state["stages"][name]
    record.update(status=status, outputs=digests(outputs), artifacts=dict(artifacts or {}),
                  figures=dict(figures or {}), finished=now_iso(), duration_s=round(float(duration_s), 2),
                  note=note, error=error)
    return record


def forget_after(state, order, name):
    """Drop the records of every stage after `name`: they will be redone on what it makes now."""
    for later in order[order.index(name) + 1:]:
        state["stages"].pop(later, None)


def artifact(state, stage, role):
    """A path an earlier stage recorded (e.g. artifact(state, 'baseline', 'weights')), or None where the
    stage recorded that it has none (synth's pool when --data comes without one)."""
    artifacts = (state["stages"].get(stage) or {}).get("artifacts") or {}
    if role not in artifacts:
        raise TrainerError("run state has no %s from stage %s; run it first (`run-all --from %s`)"
                           % (role, stage, stage))
    return artifacts[role]


def check_state(state, path, order):
    """The state dict when it is a run state of these stages; TrainerError naming the fault otherwise."""
    fix = "delete it to start over, or restore it from a backup"
    if not isinstance(state, dict) or state.get("schema") != SCHEMA:
        raise TrainerError("%s is not a run-all state file (schema %r, expected %r); %s"
                           % (path, state.get("schema") if isinstance(state, dict) else None, SCHEMA, fix))
    if state.get("version") != VERSION:
        raise TrainerError("%s has state version %r; this trainer reads version %d; %s"
                           % (path, state.get("version"), VERSION, fix))
    stages = state.get("stages")
    if not isinstance(stages, dict):
        raise TrainerError("%s: 'stages' is %s, expected a mapping of stage -> record; %s"
                           % (path, type(stages).__name__, fix))
    for name, record in stages.items():
        if name not in order:
            raise TrainerError("%s: unknown stage %r (stages: %s); %s" % (path, name, ", ".join(order), fix))
        if not isinstance(record, dict) or record.get("status") not in STATUSES or \
                not isinstance(record.get("inputs"), dict) or not isinstance(record.get("outputs"), dict):
            raise TrainerError("%s: the record of stage %s is malformed (needs status in %s, inputs and outputs); %s"
                               % (path, name, "/".join(STATUSES), fix))
    return state


def read_state(path, work, order):
    """The state in `path`, or a new one when there is none; TrainerError when it is unreadable."""
    if not os.path.exists(path):
        return new_state(work, order)
    try:
        with open(path, encoding="utf-8") as fh:
            state = json.load(fh)
    except (OSError, ValueError) as e:  # ValueError: truncated or not JSON, not UTF-8
        raise TrainerError("cannot read run state %s: %s (a half-written or damaged file); delete it to start "
                           "over" % (path, e)) from e
    return check_state(state, path, order)


def write_state(path, state):
    """Write the whole state atomically (temporary file, fsync, rename)."""
    state["updated"] = now_iso()
    with atomic_output(path, fsync=True) as fh:
        json.dump(state, fh, indent=1, sort_keys=False)
    return path

"""SQLite store: atomic frames, origins and migration, queries, crash safety under SIGKILL, bounded crops."""
import collections
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from edge.detections import Detections
from edge.energy import local_day_bounds_unix_s
from edge.crops import CropStore, crop_box
from edge.store import SCHEMA_VERSION, Store, StoreError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T0 = 1717243200.0  # 2024-06-01 12:00 UTC


def dets(n, class_id=1, score=0.5):
    xyxy = np.array([[10 * i, 10 * i, 10 * i + 5, 10 * i + 8] for i in range(n)], np.float32).reshape(-1, 4)
    return Detections(xyxy, np.full(n, score, np.float32), np.full(n, class_id, np.int32))


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "rw.sqlite"))
    yield s
    s.close()


def test_open_sets_wal_and_sync_full(tmp_path):
    path = str(tmp_path / "rw.sqlite")
    with Store(path) as s:
        assert s._writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s._writer.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert s.integrity_check() == ["ok"]
    with Store(path, synchronous="NORMAL") as s:
        assert s._writer.execute("PRAGMA synchronous").fetchone()[0] == 1


@pytest.mark.parametrize("kwargs", [{"synchronous": "OFF"}, {"check": "maybe"}])
def test_bad_options_raise(tmp_path, kwargs):
    with pytest.raises(StoreError, match=list(kwargs)[0]):
        Store(str(tmp_path / "x.sqlite"), **kwargs)


def test_record_frame_writes_frame_and_detections(store):
    d = Detections([[1, 2, 3, 4], [5, 6, 7, 8]], [0.9, 0.4], [2, 5])
    row = store.record_frame(T0, "csi:0", 7, d, profile="cascade", latency_s=0.2, energy_j=1.5,
                             model_versions={"balanced": "v3"}, class_names={2: "turtle"}, crop_paths=["a.jpg", None])
    frame = store.frame_rows()[0]
    assert (frame["id"], frame["n_detections"], frame["status"], frame["energy_j"]) == (row, 2, "ok", 1.5)
    got = store.detections_since(since_id=0)
    assert [g["class_id"] for g in got] == [2, 5]
    assert got[0]["xyxy"] == [1.0, 2.0, 3.0, 4.0]
    assert got[0]["class_name"] == "turtle" and got[1]["class_name"] == ""
    assert got[0]["score"] == pytest.approx(0.9)
    assert got[0]["model_versions"] == {"balanced": "v3"}
    assert [g["crop_path"] for g in got] == ["a.jpg", None]
    assert all(g["frame_row"] == row and g["frame_id"] == 7 and g["profile"] == "cascade" for g in got)


def test_skipped_frame_and_bad_status(store):
    store.record_frame(T0, "folder:x", 1, None, status="skipped", reason="corrupt file")
    assert store.frame_counts() == {"ok": 0, "skipped": 1, "total": 1}
    with pytest.raises(StoreError, match="status"):
        store.record_frame(T0, "s", 2, None, status="broken")


def test_crop_paths_must_match_detections(store):
    with pytest.raises(StoreError, match="crop_paths"):
        store.record_frame(T0, "s", 1, dets(2), crop_paths=[None])
    assert store.frame_counts()["total"] == 0


def test_failed_write_rolls_back_the_whole_frame(store):
    bad = dets(3)
    bad.score[1] = np.nan  # NOT NULL score: sqlite stores NaN as NULL, so the second insert fails
    with pytest.raises(StoreError, match="frame 9"):
        store.record_frame(T0, "s", 9, bad)
    assert store.frame_counts()["total"] == 0
    assert store.detections_since(since_id=0) == []
    store.record_frame(T0, "s", 10, dets(1))  # the store is still usable
    assert store.frame_counts()["total"] == 1


@pytest.mark.parametrize("since_t, since_id, limit, expected_frames", [
    (None, None, 100, [0, 1, 2, 3]),
    (T0 + 1.0, None, 100, [2, 3]),       # strictly after the time
    (None, 2, 100, [1, 2, 3]),            # ids 1, 2 are frame 0's
    (None, None, 2, [0]),
    (T0 + 10.0, None, 100, []),
])
def test_detections_since(store, since_t, since_id, limit, expected_frames):
    for k in range(4):
        store.record_frame(T0 + k, "s", k, dets(2 if k == 0 else 1))
    got = store.detections_since(since_t, since_id, limit)
    assert sorted(set(g["frame_id"] for g in got)) == expected_frames
    assert [g["id"] for g in got] == sorted(g["id"] for g in got)


def test_frame_counts_and_energy_today(store):
    start, end = local_day_bounds_unix_s(T0)
    energies = [(start - 5.0, 100.0), (start + 1.0, 2.0), (T0, 3.0), (end - 1.0, 4.0), (end + 1.0, 50.0)]
    for k, (t, e) in enumerate(energies):
        store.record_frame(t, "s", k, None, energy_j=e)
    store.record_frame(T0, "s", 99, None, status="skipped", reason="budget")  # no energy: NULL
    assert store.energy_today_j(T0) == pytest.approx(2.0 + 3.0 + 4.0)
    assert store.energy_j_between(start - 10, end + 10) == pytest.approx(sum(e for _, e in energies))
    assert store.frame_counts(since_t_unix_s=T0 - 0.5) == {"ok": 3, "skipped": 1, "total": 4}
    store.record_frame(T0, "s", 100, None, energy_j=1.0, latency_s=0.25)
    assert store.today_totals(T0) == {"frames": 5, "energy_j": pytest.approx(2.0 + 3.0 + 4.0 + 1.0),
                                      "latency_s": 0.25}


def test_origins_are_recorded_per_source(store):
    store.record_frame(T0, "folder:/in", 0, dets(1), origin="/in/a.jpg")
    store.record_frame(T0, "folder:/in", 1, None, status="skipped", reason="corrupt file", origin="/in/b.jpg")
    store.record_frame(T0, "folder:/other", 0, None, origin="/other/a.jpg")
    store.record_frame(T0, "csi:0", 0, None)  # no origin
    assert store.recorded_origins("folder:/in") == {"/in/a.jpg", "/in/b.jpg"}
    assert store.recorded_origins("csi:0") == set()
    assert [r["origin"] for r in store.frame_rows()] == ["", "/other/a.jpg", "/in/b.jpg", "/in/a.jpg"]



@pytest.mark.parametrize("origin", [
    "/in/" + os.fsdecode(b"\xff\xfe.jpg"),          # not UTF-8: a listdir name with surrogate escapes
    "/in/r\u00e9cif.jpg", "/in/plain.jpg",        # UTF-8 and ASCII: kept as readable text
])
def test_origins_round_trip_whatever_their_bytes(tmp_path, origin):
    path = str(tmp_path / "rw.sqlite")
    with Store(path) as s:
        s.record_frame(T0, "folder:/in", 0, dets(1), origin=origin)
        s.record_frame(T0, "folder:/in", 1, None, status="skipped", reason="image is 1x1", origin=origin)
    with Store(path) as s:  # after a restart the same origin comes back, so resume skips the file
        assert s.recorded_origins("folder:/in") == {origin}
        assert [r["origin"] for r in s.frame_rows()] == [origin, origin]
    raw = sqlite3.connect(path)
    stored = raw.execute("SELECT origin, typeof(origin) FROM frames LIMIT 1").fetchone()
    raw.close()
    as_bytes = os.fsencode(origin)
    try:
        text = as_bytes.decode("utf-8")
        assert stored == (text, "text")  # readable in the database, as before
    except UnicodeDecodeError:
        assert stored == (as_bytes, "blob")  # every byte kept


# The frames table as schema 1 wrote it (before the origin column).
_SCHEMA_1_FRAMES = """CREATE TABLE frames (
    id INTEGER PRIMARY KEY AUTOINCREMENT, t_unix_s REAL NOT NULL, frame_id INTEGER NOT NULL, source TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'skipped')), reason TEXT NOT NULL DEFAULT '',
    profile TEXT NOT NULL DEFAULT '', latency_s REAL, energy_j REAL, n_detections INTEGER NOT NULL,
    model_versions TEXT NOT NULL DEFAULT '{}')"""


def test_a_schema_1_store_gains_the_origin_column_and_keeps_its_frames(tmp_path):
    path = str(tmp_path / "old.sqlite")
    raw = sqlite3.connect(path)
    raw.execute(_SCHEMA_1_FRAMES)
    raw.execute("CREATE INDEX frames_t ON frames(t_unix_s)")
    raw.execute("INSERT INTO frames (t_unix_s, frame_id, source, status, n_detections, energy_j)"
                " VALUES (?, 3, 'folder:/in', 'ok', 0, 2.5)", (T0,))
    raw.execute("PRAGMA user_version=1")
    raw.commit()
    raw.close()
    with Store(path) as s:
        old = s.frame_rows()[0]
        assert (old["frame_id"], old["energy_j"], old["origin"]) == (3, 2.5, "")
        s.record_frame(T0 + 1, "folder:/in", 4, dets(1), origin="/in/x.jpg")
        assert s.recorded_origins("folder:/in") == {"/in/x.jpg"}
        assert s._writer.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    with Store(path) as s:  # opening a migrated store again changes nothing
        assert [r["origin"] for r in s.frame_rows()] == ["/in/x.jpg", ""]


def test_corrupt_file_is_refused_with_reason(tmp_path):
    path = tmp_path / "bad.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="move it aside"):
        Store(str(path))


_CHILD = r"""
import sys, numpy as np
from edge.detections import Detections
from edge.store import Store
s = Store(sys.argv[1])
k = int(sys.argv[2])
print("ready", flush=True)
while True:
    n = k % 7
    d = Detections(np.tile(np.array([[1, 2, 30, 40]], np.float32), (n, 1)), np.full(n, 0.5, np.float32),
                   np.arange(n, dtype=np.int32))
    s.record_frame(1.7e9 + k, "crash", k, d, energy_j=1.0)
    k += 1
"""


def _run_and_kill(path, start_frame, run_s):
    env = dict(os.environ, PYTHONPATH=REPO)
    child = subprocess.Popen([sys.executable, "-c", _CHILD, path, str(start_frame)], stdout=subprocess.PIPE, env=env)
    assert child.stdout.readline().strip() == b"ready"
    time.sleep(run_s)
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL


def test_sigkill_mid_write_loses_at_most_the_frame_in_flight(tmp_path):
    path = str(tmp_path / "crash.sqlite")
    next_frame = 0
    for run_s in (0.3, 0.45, 0.6):  # different kill moments
        _run_and_kill(path, next_frame, run_s)
        with Store(path) as s:  # open runs integrity_check
            assert s.integrity_check() == ["ok"]
            frames = s.frame_rows(limit=10 ** 6)
            per_frame = collections.Counter(d["frame_row"] for d in s.detections_since(since_id=0, limit=10 ** 7))
        assert frames, "the child wrote no frame before it was killed"
        for f in frames:
            assert per_frame[f["id"]] == f["n_detections"] == f["frame_id"] % 7
        ids = sorted(f["frame_id"] for f in frames)
        assert ids == list(range(ids[0], ids[0] + len(ids)))  # no hole: each commit is whole
        next_frame = ids[-1] + 1
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    raw.close()


# --- crops -----------------------------------------------------------------------------------------------

class FakeStatvfs(object):
    """statvfs whose free space is `free` minus what the crops dir holds."""

    def __init__(self, free_bytes, crops_dir):
        self.free_bytes, self.crops_dir = free_bytes, crops_dir

    def __call__(self, path):
        used = sum(os.path.getsize(os.path.join(self.crops_dir, n)) for n in os.listdir(self.crops_dir))
        return collections.namedtuple("St", "f_bavail f_frsize")((self.free_bytes - used) // 512, 512)


def noise_frame(seed=0, h=120, w=160):
    return np.random.RandomState(seed).randint(0, 255, (h, w, 3)).astype(np.uint8)


def test_crop_box_grows_and_clips():
    frame = np.zeros((100, 200, 3), np.uint8)
    assert crop_box(frame, [10, 20, 60, 40], 0.1).shape == (20 + 2 * 2, 50 + 2 * 5, 3)
    assert crop_box(frame, [190, 90, 230, 130], 0.0).shape == (10, 10, 3)
    assert crop_box(frame, [300, 300, 310, 310], 0.1) is None


def test_crops_are_bounded_oldest_pruned_first(tmp_path):
    crops_dir = str(tmp_path / "crops")
    frame = noise_frame()
    probe = CropStore(crops_dir, max_bytes=10 ** 9)
    one = os.path.getsize(probe.save(frame, [0, 0, 50, 50], T0, "s", 0, 0, 3))
    os.remove(os.path.join(crops_dir, os.listdir(crops_dir)[0]))
    store = CropStore(crops_dir, max_bytes=int(3.5 * one), margin_frac=0.0)
    paths = [store.save(frame, [0, 0, 50, 50], T0 + k, "cam 1", k, 0, 3) for k in range(6)]
    kept = sorted(os.listdir(crops_dir))
    assert kept == sorted(os.path.basename(p) for p in paths[-3:])
    assert store.used_bytes() <= store.max_bytes
    assert store.counters == {"saved": 6, "pruned": 3, "refused": 0}
    assert not any(n.endswith(".tmp") for n in kept)


def test_pruning_runs_in_batches_down_to_the_low_water_mark(tmp_path):
    crops_dir = str(tmp_path / "crops")
    frame = noise_frame()
    probe = CropStore(crops_dir, max_bytes=10 ** 9, margin_frac=0.0)
    one = os.path.getsize(probe.save(frame, [0, 0, 50, 50], T0, "s", 0, 0, 3))
    os.remove(os.path.join(crops_dir, os.listdir(crops_dir)[0]))
    store = CropStore(crops_dir, max_bytes=10 * one, margin_frac=0.0, low_water_frac=0.5)
    for k in range(11):
        store.save(frame, [0, 0, 50, 50], T0 + k, "s", k, 0, 3)
    # The 11th crop overflows 10: the oldest go until 5 x one - one is left, then it is written.
    assert store.counters["pruned"] == 10 - 4 and len(os.listdir(crops_dir)) == 5
    assert store.used_bytes() == 5 * one == sum(os.path.getsize(os.path.join(crops_dir, n))
                                                for n in os.listdir(crops_dir))


class FakeMonotonic(object):
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class CountingStatvfs(FakeStatvfs):
    calls = 0

    def __call__(self, path):
        self.calls += 1
        return FakeStatvfs.__call__(self, path)


def test_free_disk_floor_prunes_then_refuses(tmp_path):
    crops_dir = str(tmp_path / "crops")
    os.makedirs(crops_dir)
    statvfs, clock = FakeStatvfs(free_bytes=10 ** 6, crops_dir=crops_dir), FakeMonotonic()
    store = CropStore(crops_dir, max_bytes=10 ** 9, min_free_bytes=10 ** 6 - 30000, statvfs=statvfs,
                      statvfs_interval_s=10.0, monotonic=clock)
    frame = noise_frame()
    saved = [store.save(frame, [0, 0, 60, 60], T0 + k, "s", k, 0, 3) for k in range(8)]
    assert all(saved)
    assert store.free_bytes() >= store.min_free_bytes
    assert store.counters["pruned"] > 0
    statvfs.free_bytes = 10 ** 6 - 40000  # the disk filled up by others: even an empty crops dir is too little
    clock.t += 10.0  # ... which the store sees at its next statvfs
    assert store.save(frame, [0, 0, 60, 60], T0 + 9, "s", 9, 0, 3) is None
    assert store.counters["refused"] == 1
    assert os.listdir(crops_dir) == []


@pytest.mark.parametrize("every, interval_s, advance_s, saves, expected_calls", [
    (50, 10.0, 0.0, 20, 1),                    # one read, then estimates
    (5, 10.0, 0.0, 20, len(range(0, 20, 5))),  # saves 0, 5, 10, 15
    (50, 10.0, 4.0, 20, len(range(0, 20, 3))),  # 4 s a save: a read when 10 s have passed, at saves 0, 3, 6, ...
])
def test_statvfs_is_read_at_most_every_n_saves_or_seconds(tmp_path, every, interval_s, advance_s, saves,
                                                          expected_calls):
    crops_dir = str(tmp_path / "crops")
    os.makedirs(crops_dir)
    statvfs, clock = CountingStatvfs(10 ** 9, crops_dir), FakeMonotonic()
    store = CropStore(crops_dir, max_bytes=10 ** 9, min_free_bytes=10 ** 6, statvfs=statvfs, monotonic=clock,
                      statvfs_every=every, statvfs_interval_s=interval_s)
    for k in range(saves):
        assert store.save(noise_frame(), [0, 0, 30, 30], T0 + k, "s", k, 0, 3)
        clock.t += advance_s
    assert statvfs.calls == expected_calls


def test_crops_are_not_fsynced(tmp_path, monkeypatch):
    def no_fsync(fd):
        raise AssertionError("a crop was fsynced")

    monkeypatch.setattr(os, "fsync", no_fsync)
    store = CropStore(str(tmp_path / "crops"), max_bytes=10 ** 8)
    assert os.path.isfile(store.save(noise_frame(), [0, 0, 30, 30], T0, "s", 0, 0, 3))


def test_leftover_temp_files_are_removed_and_existing_crops_counted(tmp_path):
    crops_dir = tmp_path / "crops"
    crops_dir.mkdir()
    (crops_dir / "0000000000001_s_1_0_c3.jpg").write_bytes(b"x" * 100)
    (crops_dir / "0000000000002_s_2_0_c3.jpg.tmp").write_bytes(b"x" * 50)
    store = CropStore(str(crops_dir), max_bytes=1000)
    assert store.used_bytes() == 100
    assert sorted(os.listdir(str(crops_dir))) == ["0000000000001_s_1_0_c3.jpg"]


def test_save_critical_only_crops_critical_classes(tmp_path):
    store = CropStore(str(tmp_path / "crops"), max_bytes=10 ** 8)
    d = Detections([[0, 0, 20, 20], [30, 30, 60, 60], [5, 5, 10, 10]], [0.9, 0.8, 0.7], [1, 4, 4])
    paths = store.save_critical(noise_frame(), d, {4}, T0, "csi:0", 12)
    assert paths[0] is None and paths[1] and paths[2]
    assert os.path.basename(paths[1]).endswith("_csi-0_12_1_c4.jpg")
    import cv2
    assert cv2.imread(paths[1]).shape[2] == 3


@pytest.mark.parametrize("scores, classes, max_crops, expected", [
    ([0.5, 0.9, 0.7, 0.8], [4, 4, 4, 4], 2, [1, 3]),       # the two highest scores
    ([0.5, 0.9, 0.7, 0.8], [4, 1, 4, 4], 2, [2, 3]),       # among critical classes only
    ([0.5, 0.9], [4, 4], 4, [0, 1]),                       # fewer than the cap
    ([0.5, 0.9], [4, 4], 0, []),
    ([0.5, 0.9, 0.7], [4, 4, 4], None, [0, 1, 2]),         # no cap
])
def test_save_critical_caps_crops_per_frame_by_score(tmp_path, scores, classes, max_crops, expected):
    store = CropStore(str(tmp_path / "crops"), max_bytes=10 ** 8)
    boxes = [[10 * i, 10 * i, 10 * i + 20, 10 * i + 20] for i in range(len(scores))]
    paths = store.save_critical(noise_frame(), Detections(boxes, scores, classes), {4}, T0, "s", 1,
                                max_crops=max_crops)
    assert [i for i, p in enumerate(paths) if p] == expected
    crops_dir = str(tmp_path / "crops")
    assert (len(os.listdir(crops_dir)) if os.path.isdir(crops_dir) else 0) == len(expected)

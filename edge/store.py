"""Detections and frames in SQLite (WAL), plus bounded crops of critical species.

Durability: each frame and its detections are one transaction. WAL keeps the
database file consistent whatever moment the process dies (`kill -9`) or the
power goes. `synchronous=FULL` (the default here) also fsyncs the WAL at each
commit, so a power cut loses at most the frame in flight. `NORMAL` is only
safe against process crashes: after a power cut the commits since the last
checkpoint may roll back (still no corruption). One fsync per frame is cheap
at a frame every few seconds, and this store runs on battery/solar boards
where brown-outs are the common failure, hence FULL.
"""
import collections
import json
import logging
import os
import re
import sqlite3
import threading
import time

import numpy as np

from edge.energy import local_day_bounds_unix_s
from edge.errors import EdgeError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SYNCHRONOUS_MODES = ("FULL", "NORMAL")
INTEGRITY_CHECKS = ("integrity", "quick", "none")
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS frames (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        t_unix_s REAL NOT NULL,
        frame_id INTEGER NOT NULL,
        source TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('ok', 'skipped')),
        reason TEXT NOT NULL DEFAULT '',
        profile TEXT NOT NULL DEFAULT '',
        latency_s REAL,
        energy_j REAL,
        n_detections INTEGER NOT NULL,
        model_versions TEXT NOT NULL DEFAULT '{}')""",
    """CREATE TABLE IF NOT EXISTS detections (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        frame_row INTEGER NOT NULL REFERENCES frames(id),
        t_unix_s REAL NOT NULL,
        frame_id INTEGER NOT NULL,
        source TEXT NOT NULL,
        class_id INTEGER NOT NULL,
        class_name TEXT NOT NULL DEFAULT '',
        score REAL NOT NULL,
        x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
        profile TEXT NOT NULL DEFAULT '',
        model_versions TEXT NOT NULL DEFAULT '{}',
        crop_path TEXT)""",
    "CREATE INDEX IF NOT EXISTS frames_t ON frames(t_unix_s)",
    "CREATE INDEX IF NOT EXISTS detections_t ON detections(t_unix_s)",
    "CREATE INDEX IF NOT EXISTS detections_frame ON detections(frame_row)",
)
_DETECTION_COLUMNS = ("id", "frame_row", "t_unix_s", "frame_id", "source", "class_id", "class_name",
                      "score", "x1", "y1", "x2", "y2", "profile", "model_versions", "crop_path")


class StoreError(EdgeError):
    """The detection store cannot be opened, fails its integrity check, or a write is malformed."""


class Store(object):
    """The daemon's SQLite store; one writer, any number of reader threads.

    Writes go through one connection, reads through another (WAL lets readers
    run beside the writer); each connection is guarded by its own lock.
    """

    def __init__(self, path, synchronous="FULL", check="integrity", timeout_s=10.0):
        if synchronous not in SYNCHRONOUS_MODES:
            raise StoreError("synchronous={!r}; expected one of {}".format(synchronous, SYNCHRONOUS_MODES))
        if check not in INTEGRITY_CHECKS:
            raise StoreError("check={!r}; expected one of {}".format(check, INTEGRITY_CHECKS))
        self.path = str(path)
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._writer = self._connect(timeout_s)
        try:
            self._prepare(synchronous, check)
            self._reader = self._connect(timeout_s)
        except BaseException:
            self._writer.close()
            raise

    def _connect(self, timeout_s):
        try:
            # isolation_level=None: transactions are explicit BEGIN/COMMIT below.
            return sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise StoreError("cannot open store {}: {}".format(self.path, e)) from e

    def _prepare(self, synchronous, check):
        try:
            mode = self._writer.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError("store {} refused WAL mode (got {!r}); is it on a network filesystem?"
                                 .format(self.path, mode))
            self._writer.execute("PRAGMA synchronous={}".format(synchronous))
            self._writer.execute("PRAGMA foreign_keys=ON")
            if check != "none":
                self._check(check)
            self._writer.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                self._writer.execute(statement)
            self._writer.execute("PRAGMA user_version={}".format(SCHEMA_VERSION))
            self._writer.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            raise StoreError("store {} is unusable: {}; move it aside to start a new one".format(self.path, e)) from e

    def _check(self, check):
        pragma = "integrity_check" if check == "integrity" else "quick_check"
        rows = [r[0] for r in self._writer.execute("PRAGMA {}".format(pragma)).fetchall()]
        if rows != ["ok"]:
            raise StoreError("store {} fails {}: {}; move it aside to start a new one"
                             .format(self.path, pragma, "; ".join(str(r) for r in rows[:5])))

    def integrity_check(self):
        """Run PRAGMA integrity_check now; returns its rows ("ok" when sound)."""
        with self._read_lock:
            return [r[0] for r in self._reader.execute("PRAGMA integrity_check").fetchall()]

    def close(self):
        """Close both connections; safe to call twice."""
        with self._write_lock:
            self._writer.close()
        with self._read_lock:
            self._reader.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False

    def record_frame(self, t_unix_s, source, frame_id, detections=None, profile="", latency_s=None,
                     energy_j=None, status="ok", reason="", model_versions=None, class_names=None,
                     crop_paths=None):
        """Write one frame row and one row per detection in a single transaction.

        `status` is "ok" or "skipped" (then `reason` says why); `class_names`
        maps class id -> name (dict, or list indexed by id); `crop_paths` is one path or None per detection.
        Returns the frame's row id.
        """
        if status not in ("ok", "skipped"):
            raise StoreError("frame status={!r}; expected 'ok' or 'skipped'".format(status))
        n = 0 if detections is None else len(detections)
        if crop_paths is not None and len(crop_paths) != n:
            raise StoreError("crop_paths has {} entries for {} detections".format(len(crop_paths), n))
        versions = json.dumps(model_versions or {}, sort_keys=True)
        frame_values = (float(t_unix_s), int(frame_id), str(source), status, str(reason), str(profile),
                        _opt_float(latency_s), _opt_float(energy_j), n, versions)
        if isinstance(class_names, (list, tuple)):
            class_names = dict(enumerate(class_names))
        rows = _detection_rows(detections, class_names or {}, crop_paths) if n else []
        with self._write_lock:
            try:
                self._writer.execute("BEGIN IMMEDIATE")
                cur = self._writer.execute(
                    "INSERT INTO frames (t_unix_s, frame_id, source, status, reason, profile, latency_s,"
                    " energy_j, n_detections, model_versions) VALUES (?,?,?,?,?,?,?,?,?,?)", frame_values)
                frame_row = cur.lastrowid
                self._writer.executemany(
                    "INSERT INTO detections (frame_row, t_unix_s, frame_id, source, class_id, class_name, score,"
                    " x1, y1, x2, y2, profile, model_versions, crop_path) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    [(frame_row,) + frame_values[:3] + row + (str(profile), versions, crop) for row, crop in rows])
                self._writer.execute("COMMIT")
            except sqlite3.Error as e:
                _rollback(self._writer)
                raise StoreError("cannot write frame {} of {} to {}: {}".format(frame_id, source, self.path, e)) from e
        return frame_row

    def _query(self, sql, params=()):
        with self._read_lock:
            try:
                return self._reader.execute(sql, params).fetchall()
            except sqlite3.Error as e:
                raise StoreError("query on {} failed: {}".format(self.path, e)) from e

    def detections_since(self, since_t_unix_s=None, since_id=None, limit=1000):
        """Detections after a time (exclusive) or after a detection id, oldest first, as dicts."""
        where, params = "1", []
        if since_t_unix_s is not None:
            where, params = where + " AND t_unix_s > ?", params + [float(since_t_unix_s)]
        if since_id is not None:
            where, params = where + " AND id > ?", params + [int(since_id)]
        rows = self._query("SELECT {} FROM detections WHERE {} ORDER BY id LIMIT ?".format(
            ", ".join(_DETECTION_COLUMNS), where), params + [int(limit)])
        return [_detection_dict(row) for row in rows]

    def frame_counts(self, since_t_unix_s=None):
        """{"ok": n, "skipped": n, "total": n} frames, all time or after a time."""
        sql, params = "SELECT status, COUNT(*) FROM frames", ()
        if since_t_unix_s is not None:
            sql, params = sql + " WHERE t_unix_s > ?", (float(since_t_unix_s),)
        counts = {"ok": 0, "skipped": 0}
        counts.update(dict(self._query(sql + " GROUP BY status", params)))
        counts["total"] = counts["ok"] + counts["skipped"]
        return counts

    def energy_j_between(self, t0_unix_s, t1_unix_s):
        """Sum of per-frame energy (J) for frames with t0 <= t < t1."""
        rows = self._query("SELECT COALESCE(SUM(energy_j), 0) FROM frames WHERE t_unix_s >= ? AND t_unix_s < ?",
                           (float(t0_unix_s), float(t1_unix_s)))
        return float(rows[0][0])

    def energy_today_j(self, now_unix_s=None):
        """Per-frame energy (J) recorded since local midnight of `now_unix_s` (default now)."""
        start, end = local_day_bounds_unix_s(time.time() if now_unix_s is None else now_unix_s)
        return self.energy_j_between(start, end)

    def today_totals(self, now_unix_s=None):
        """{"frames", "energy_j", "latency_s"} since local midnight: restores the governor after a restart."""
        start, end = local_day_bounds_unix_s(time.time() if now_unix_s is None else now_unix_s)
        row = self._query("SELECT COUNT(*), COALESCE(SUM(energy_j), 0), COALESCE(SUM(latency_s), 0) FROM frames"
                          " WHERE t_unix_s >= ? AND t_unix_s < ?", (start, end))[0]
        return {"frames": int(row[0]), "energy_j": float(row[1]), "latency_s": float(row[2])}

    def frame_rows(self, limit=1000):
        """Latest frames, newest first, as dicts (for review and tests)."""
        cur_cols = ("id", "t_unix_s", "frame_id", "source", "status", "reason", "profile", "latency_s",
                    "energy_j", "n_detections", "model_versions")
        rows = self._query("SELECT {} FROM frames ORDER BY id DESC LIMIT ?".format(", ".join(cur_cols)), (int(limit),))
        return [dict(zip(cur_cols, row)) for row in rows]


def _opt_float(value):
    return None if value is None else float(value)


def _rollback(conn):
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error as e:  # no transaction open: the original error is what matters
        logger.debug("rollback after failed write: %s", e)


def _detection_rows(detections, class_names, crop_paths):
    xyxy = np.asarray(detections.xyxy, dtype=np.float64)
    scores = detections.score.astype(np.float64)
    crops = crop_paths if crop_paths is not None else [None] * len(detections)
    rows = []
    for i in range(len(detections)):
        cid = int(detections.class_id[i])
        box = tuple(float(v) for v in xyxy[i])
        rows.append(((cid, str(class_names.get(cid, "")), float(scores[i])) + box,
                     None if crops[i] is None else str(crops[i])))
    return rows


def _detection_dict(row):
    record = dict(zip(_DETECTION_COLUMNS, row))
    record["xyxy"] = [record.pop("x1"), record.pop("y1"), record.pop("x2"), record.pop("y2")]
    record["model_versions"] = json.loads(record["model_versions"])
    return record


class CropStore(object):
    """JPEG crops in one folder with bounded size and a floor of free disk.

    Oldest crops (by name, which starts with the time in ms) are pruned first.
    `statvfs` is injectable so tests can fake a nearly full disk.
    """

    def __init__(self, crops_dir, max_bytes, min_free_bytes=0, statvfs=os.statvfs, jpeg_quality=90,
                 margin_frac=0.1):
        if max_bytes <= 0 or min_free_bytes < 0:
            raise StoreError("crops max_bytes={} must be > 0 and min_free_bytes={} >= 0".format(
                max_bytes, min_free_bytes))
        self.crops_dir = str(crops_dir)
        self.max_bytes = int(max_bytes)
        self.min_free_bytes = int(min_free_bytes)
        self.statvfs = statvfs
        self.jpeg_quality = int(jpeg_quality)
        self.margin_frac = float(margin_frac)
        self.counters = {"saved": 0, "pruned": 0, "refused": 0}
        self._lock = threading.Lock()
        self._files = None  # [(name, size)] oldest first, loaded on first use
        self._used_bytes = 0

    def _load(self):
        if self._files is not None:
            return
        try:
            os.makedirs(self.crops_dir, exist_ok=True)
            names = sorted(os.listdir(self.crops_dir))
        except OSError as e:
            raise StoreError("cannot use crops dir {}: {}".format(self.crops_dir, e)) from e
        files = []
        for name in names:
            path = os.path.join(self.crops_dir, name)
            if name.endswith(".tmp"):  # left by a crash between write and rename
                _remove_quietly(path)
            elif name.endswith(".jpg") and os.path.isfile(path):
                files.append((name, os.path.getsize(path)))
        self._files = collections.deque(files)
        self._used_bytes = sum(size for _, size in files)

    def used_bytes(self):
        with self._lock:
            self._load()
            return self._used_bytes

    def free_bytes(self):
        st = self.statvfs(self.crops_dir)
        return st.f_bavail * st.f_frsize

    def save(self, frame_bgr, box_xyxy, t_unix_s, source, frame_id, index, class_id):
        """Save one crop; return its path, or None when disk limits refuse it (logged)."""
        import cv2

        crop = crop_box(frame_bgr, box_xyxy, self.margin_frac)
        if crop is None:
            return None
        ok, buf = cv2.imencode(".jpg", crop, [int(cv2.IMWRITE_JPEG_QUALITY), self.jpeg_quality])
        if not ok:
            raise StoreError("cv2.imencode failed for a {} crop".format(crop.shape))
        name = "{:013d}_{}_{}_{}_c{}.jpg".format(int(round(t_unix_s * 1000)), _safe(source), int(frame_id),
                                                 int(index), int(class_id))
        with self._lock:
            self._load()
            if not self._make_room(len(buf)):
                self.counters["refused"] += 1
                logger.warning("crop %s not saved: crops dir at %d/%d bytes, free disk floor %d bytes",
                               name, self._used_bytes, self.max_bytes, self.min_free_bytes)
                return None
            path = os.path.join(self.crops_dir, name)
            _write_atomically(path, buf.tobytes())
            self._files.append((name, len(buf)))
            self._used_bytes += len(buf)
            self.counters["saved"] += 1
            return path

    def _make_room(self, size):
        if size > self.max_bytes:
            return False
        while self._files and (self._used_bytes + size > self.max_bytes
                               or self.free_bytes() - size < self.min_free_bytes):
            name, old_size = self._files.popleft()
            self._used_bytes -= old_size
            _remove_quietly(os.path.join(self.crops_dir, name))
            self.counters["pruned"] += 1
        return self.free_bytes() - size >= self.min_free_bytes

    def save_critical(self, frame_bgr, detections, critical_ids, t_unix_s, source, frame_id):
        """Crops for detections whose class is in `critical_ids`: a path or None per detection."""
        critical = set(int(c) for c in critical_ids)
        paths = []
        for i in range(len(detections)):
            cid = int(detections.class_id[i])
            paths.append(self.save(frame_bgr, detections.xyxy[i], t_unix_s, source, frame_id, i, cid)
                         if cid in critical else None)
        return paths


def crop_box(frame_bgr, box_xyxy, margin_frac=0.1):
    """The frame region of a box grown by `margin_frac` of its size, clipped; None when empty."""
    h, w = frame_bgr.shape[:2]
    x1, y1, x2, y2 = [float(v) for v in box_xyxy]
    mx, my = (x2 - x1) * margin_frac, (y2 - y1) * margin_frac
    left, top = int(max(0, np.floor(x1 - mx))), int(max(0, np.floor(y1 - my)))
    right, bottom = int(min(w, np.ceil(x2 + mx))), int(min(h, np.ceil(y2 + my)))
    if right <= left or bottom <= top:
        return None
    return frame_bgr[top:bottom, left:right]


def _safe(text):
    return re.sub(r"[^A-Za-z0-9.-]+", "-", str(text)).strip("-")[:40] or "src"


def _write_atomically(path, data):
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _remove_quietly(tmp)
        raise StoreError("cannot write crop {}: {}".format(path, e)) from e


def _remove_quietly(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        logger.warning("cannot remove %s: %s", path, e)

"""Detections and frames in SQLite (WAL); crops of critical species live in edge/crops.py.

Durability: each frame and its detections are one transaction. WAL keeps the
database file consistent whatever moment the process dies (`kill -9`) or the
power goes. `synchronous=FULL` (the default here) also fsyncs the WAL at each
commit, so a power cut loses at most the frame in flight. `NORMAL` is only
safe against process crashes: after a power cut the commits since the last
checkpoint may roll back (still no corruption). One fsync per frame is cheap
at a frame every few seconds, and this store runs on battery/solar boards
where brown-outs are the common failure, hence FULL.

Each frame records its `origin` (the image file of a folder source, the
stream and frame index of a live one), so a restarted daemon can skip the
files it already stored (`recorded_origins`). Stores of schema 1, written
before that column existed, gain it on open (their frames' origin is '').
An origin is stored as its bytes (os.fsencode): as UTF-8 text when they are
UTF-8, else as a BLOB of the raw bytes, so a file name that is not UTF-8
reads back as the same str (surrogateescape) and a restart still skips it.
"""
import json
import logging
import os
import sqlite3
import threading
import time

import numpy as np

from edge.energy import local_day_bounds_unix_s
from edge.errors import StoreError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
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
        model_versions TEXT NOT NULL DEFAULT '{}',
        origin TEXT NOT NULL DEFAULT '')""",
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
)
# Columns added after schema 1: (table, column, definition) for ALTER TABLE on an older store.
_ADDED_COLUMNS = (("frames", "origin", "TEXT NOT NULL DEFAULT ''"),)
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS frames_t ON frames(t_unix_s)",
    "CREATE INDEX IF NOT EXISTS frames_origin ON frames(source, origin)",
    "CREATE INDEX IF NOT EXISTS detections_t ON detections(t_unix_s)",
    "CREATE INDEX IF NOT EXISTS detections_frame ON detections(frame_row)",
)
_FRAME_COLUMNS = ("id", "t_unix_s", "frame_id", "source", "status", "reason", "profile", "latency_s",
                  "energy_j", "n_detections", "model_versions", "origin")
_DETECTION_COLUMNS = ("id", "frame_row", "t_unix_s", "frame_id", "source", "class_id", "class_name",
                      "score", "x1", "y1", "x2", "y2", "profile", "model_versions", "crop_path")


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
            self._migrate()
            for statement in _INDEXES:
                self._writer.execute(statement)
            self._writer.execute("PRAGMA user_version={}".format(SCHEMA_VERSION))
            self._writer.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            raise StoreError("store {} is unusable: {}; move it aside to start a new one".format(self.path, e)) from e

    def _migrate(self):
        """Add the columns an older store lacks (inside _prepare's transaction)."""
        for table, column, definition in _ADDED_COLUMNS:
            have = [row[1] for row in self._writer.execute("PRAGMA table_info({})".format(table))]
            if column not in have:
                logger.info("store %s: adding column %s.%s (schema %d)", self.path, table, column, SCHEMA_VERSION)
                self._writer.execute("ALTER TABLE {} ADD COLUMN {} {}".format(table, column, definition))

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
                     crop_paths=None, origin=""):
        """Write one frame row and one row per detection in a single transaction.

        `status` is "ok" or "skipped" (then `reason` says why); `origin` is
        where the frame came from (Frame.origin); `class_names`
        maps class id -> name (dict, or list indexed by id); `crop_paths` is one path or None per detection.
        Returns the frame's row id.
        """
        if status not in ("ok", "skipped"):
            raise StoreError("frame status={!r}; expected 'ok' or 'skipped'".format(status))
        n = 0 if detections is None else len(detections)
        if crop_paths is not None and len(crop_paths) != n:
            raise StoreError("crop_paths has {} entries for {} detections".format(len(crop_paths), n))
        versions = json.dumps(model_versions or {}, sort_keys=True)
        frame_values = (float(t_unix_s), int(frame_id), _source_text(source), status, str(reason), str(profile),
                        _opt_float(latency_s), _opt_float(energy_j), n, versions)
        if isinstance(class_names, (list, tuple)):
            class_names = dict(enumerate(class_names))
        rows = _detection_rows(detections, class_names or {}, crop_paths) if n else []
        with self._write_lock:
            try:
                self._writer.execute("BEGIN IMMEDIATE")
                cur = self._writer.execute(
                    "INSERT INTO frames (t_unix_s, frame_id, source, status, reason, profile, latency_s,"
                    " energy_j, n_detections, model_versions, origin) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    frame_values + (_origin_value(origin),))
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
        """Latest frames, newest first, as dicts (for review, restoring the governor, and tests)."""
        rows = self._query("SELECT {} FROM frames ORDER BY id DESC LIMIT ?".format(", ".join(_FRAME_COLUMNS)),
                           (int(limit),))
        frames = [dict(zip(_FRAME_COLUMNS, row)) for row in rows]
        for frame in frames:
            frame["origin"] = _origin_text(frame["origin"])
        return frames

    def recorded_origins(self, source):
        """The set of frame origins of `source` already stored (ok or skipped): what a restart skips."""
        rows = self._query("SELECT DISTINCT origin FROM frames WHERE source = ? AND origin != ''",
                           (_source_text(source),))
        return set(_origin_text(row[0]) for row in rows)


def _source_text(source):
    """A source's name as SQLite text: a folder whose name is not UTF-8 keeps its bytes as \\xNN escapes,
    the same every time, so a restart finds what it stored."""
    text = str(source)
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # not from the file system: plain text with escapes for lone surrogates
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _origin_value(origin):
    """What the origin column holds for an origin (str or bytes path): UTF-8 text, else the raw bytes."""
    if isinstance(origin, bytes):
        raw = origin
    else:
        text = str(origin or "")
        try:
            raw = os.fsencode(text)
        except UnicodeEncodeError:  # a character the filesystem encoding lacks: not a listed file name
            raw = text.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # not text: keep every byte, so it reads back as the same name
        return sqlite3.Binary(raw)


def _origin_text(value):
    """The origin str of a stored value: the inverse of _origin_value (os.fsdecode of its bytes)."""
    raw = bytes(value) if isinstance(value, (bytes, memoryview)) else str(value).encode("utf-8")
    return os.fsdecode(raw)


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

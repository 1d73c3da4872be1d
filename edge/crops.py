"""JPEG crops of critical species: review aids in one folder, bounded in size, above a free-disk floor.

The SQLite store is the record; a crop only helps a reviewer look at a
detection. Crops are therefore written cheaply: a temp file renamed into
place (a reader never sees half a JPEG), with no fsync. A crop written just
before a power cut may be lost or empty after it; its detection row (with the
crop's path) is still in the store. Temp files left by a crash are removed
when the folder is first scanned.

The folder is scanned once; used bytes are then tracked in memory. Pruning
runs in batches, oldest first (names start with the time in ms): when a crop
would take the folder over `max_bytes`, the oldest crops go until it is under
`low_water_frac` x `max_bytes`. Free disk comes from `statvfs` at most every
`statvfs_interval_s` or `statvfs_every` saves, estimated in between from what
was written and pruned, and read again before anything is pruned for the
floor.
"""
import collections
import logging
import os
import re
import threading
import time

import numpy as np

from edge.atomic_file import TMP_SUFFIX, write_atomically
from edge.store import StoreError

logger = logging.getLogger(__name__)


class CropStore(object):
    """JPEG crops in one folder with bounded size and a floor of free disk; see the module docstring.

    `statvfs` and `monotonic` are injectable so tests can fake a nearly full
    disk and the passing of time.
    """

    def __init__(self, crops_dir, max_bytes, min_free_bytes=0, statvfs=os.statvfs, jpeg_quality=90,
                 margin_frac=0.1, low_water_frac=0.9, statvfs_interval_s=10.0, statvfs_every=50,
                 monotonic=time.monotonic):
        if max_bytes <= 0 or min_free_bytes < 0:
            raise StoreError("crops max_bytes={} must be > 0 and min_free_bytes={} >= 0".format(
                max_bytes, min_free_bytes))
        if not 0.0 < low_water_frac <= 1.0:
            raise StoreError("crops low_water_frac={!r}; expected 0 < fraction <= 1".format(low_water_frac))
        self.crops_dir = str(crops_dir)
        self.max_bytes = int(max_bytes)
        self.min_free_bytes = int(min_free_bytes)
        self.statvfs = statvfs
        self.jpeg_quality = int(jpeg_quality)
        self.margin_frac = float(margin_frac)
        self.low_water_frac = float(low_water_frac)
        self.statvfs_interval_s = float(statvfs_interval_s)
        self.statvfs_every = int(statvfs_every)
        self.monotonic = monotonic
        self.counters = {"saved": 0, "pruned": 0, "refused": 0}
        self._lock = threading.Lock()
        self._files = None  # deque of (name, size), oldest first, loaded on first use
        self._used_bytes = 0
        self._free = None  # (free bytes, monotonic time read, saves since): estimated between reads

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
            if name.endswith(TMP_SUFFIX):  # left by a crash between write and rename
                _remove_quietly(path)
            elif name.endswith(".jpg") and os.path.isfile(path):
                files.append((name, os.path.getsize(path)))
        self._files = collections.deque(files)
        self._used_bytes = sum(size for _, size in files)

    def used_bytes(self):
        """Bytes the crops folder holds (scans it on the first call)."""
        with self._lock:
            self._load()
            return self._used_bytes

    def free_bytes(self):
        """Free disk under the crops folder, read now."""
        st = self.statvfs(self.crops_dir)
        return st.f_bavail * st.f_frsize

    def _free_estimate(self, fresh=False):
        now = self.monotonic()
        if (fresh or self._free is None or now - self._free[1] >= self.statvfs_interval_s
                or self._free[2] >= self.statvfs_every):
            self._free = [self.free_bytes(), now, 0]
        return self._free[0]

    def _count_free(self, delta_bytes):
        if self._free is not None:
            self._free[0] += delta_bytes

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
        size = len(buf)
        with self._lock:
            self._load()
            if not self._make_room(size):
                self.counters["refused"] += 1
                logger.warning("crop %s not saved: crops dir at %d/%d bytes, free disk floor %d bytes",
                               name, self._used_bytes, self.max_bytes, self.min_free_bytes)
                return None
            path = os.path.join(self.crops_dir, name)
            _write_atomically(path, buf.tobytes())
            self._files.append((name, size))
            self._used_bytes += size
            self._count_free(-size)
            self._free[2] += 1
            self.counters["saved"] += 1
            return path

    def _make_room(self, size):
        """Prune a batch of the oldest crops when `size` more bytes break a limit; False when it still does."""
        if size > self.max_bytes:
            return False
        over_cap = self._used_bytes + size > self.max_bytes
        if not over_cap and self._free_estimate() - size >= self.min_free_bytes:
            return True
        target = self._used_bytes
        if over_cap:
            target = self.low_water_frac * self.max_bytes - size
        deficit = self.min_free_bytes + size - self._free_estimate(fresh=True)
        if deficit > 0:  # below the floor: free the deficit and a batch beyond it
            target = min(target, self._used_bytes - deficit - (1.0 - self.low_water_frac) * self._used_bytes)
        pruned = 0
        while self._files and self._used_bytes > target:
            name, old_size = self._files.popleft()
            self._used_bytes -= old_size
            self._count_free(old_size)
            _remove_quietly(os.path.join(self.crops_dir, name))
            pruned += 1
        if pruned:
            self.counters["pruned"] += pruned
            logger.info("pruned %d oldest crops; crops dir now %d/%d bytes", pruned, self._used_bytes,
                        self.max_bytes)
        return self._free_estimate() - size >= self.min_free_bytes

    def save_critical(self, frame_bgr, detections, critical_ids, t_unix_s, source, frame_id, max_crops=None):
        """Crops for detections whose class is in `critical_ids`: a path or None per detection.

        At most `max_crops` (None: no cap) per frame, highest score first.
        """
        critical = np.isin(detections.class_id, np.asarray(sorted(int(c) for c in critical_ids), np.int64))
        chosen = np.flatnonzero(critical)
        if max_crops is not None and len(chosen) > max_crops:
            order = np.argsort(-detections.score[chosen], kind="stable")
            chosen = chosen[order[:max(0, int(max_crops))]]
        paths = [None] * len(detections)
        for i in sorted(int(i) for i in chosen):
            paths[i] = self.save(frame_bgr, detections.xyxy[i], t_unix_s, source, frame_id, i,
                                 int(detections.class_id[i]))
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
    """Readers see a whole crop or none. No fsync: see the module docstring."""
    try:
        write_atomically(path, data)
    except OSError as e:
        raise StoreError("cannot write crop {}: {}".format(path, e)) from e


def _remove_quietly(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        logger.warning("cannot remove %s: %s", path, e)

"""Frame sources: CSI (nvarguscamerasrc), V4L2, RTSP, video file and a watched image folder.

Every source yields `Frame` records: (frame_id, t_unix_s, image, source,
reason, origin). `image` is a BGR uint8 array, or None with `reason` saying
why the frame was unusable (corrupt, truncated, too small or too large, not
a regular file); those are counted in the source's `counters`. Image files
are read, and every frame judged, by `edge.images` (one rule for all
readers). Live sources reconnect with capped exponential backoff.

`origin` names where a frame came from, and is stored with it: the file's
path for a folder source, "<source name>#<frame index>" for the others. A
folder source told which origins are already stored (`skip`, `resume_from`)
does not read those files again after a restart.
"""
import collections
import logging
import os
import re
import time

from edge.errors import FrameError, SourceError
from edge.images import (IMAGE_EXTENSIONS, MAX_PIXELS, MIN_SIDE_PX, TruncatedImage, display_name, file_problem,
                         frame_problem, has_image_extension, opencv_path, read_image)

logger = logging.getLogger(__name__)

ACCEPTED_FORMS = ("a camera index (0) or /dev/videoN (V4L2)", "csi://N (Jetson CSI camera via nvarguscamerasrc)",
                  "rtsp://... (RTSP stream)", "an existing video file", "an existing image folder")

Frame = collections.namedtuple("Frame", "frame_id t_unix_s image source reason origin")
Frame.__new__.__defaults__ = ("", "")


def nvargus_pipeline(sensor_id=0, width=1280, height=720, fps=30, flip_method=0, out_width=None, out_height=None):
    """GStreamer pipeline for cv2.VideoCapture(..., cv2.CAP_GSTREAMER) on a Jetson CSI camera.

    appsink keeps only the newest buffer (drop=true max-buffers=1) so a slow
    consumer reads a fresh frame instead of a queue of stale ones.
    """
    for name, value in (("sensor_id", sensor_id), ("width", width), ("height", height), ("fps", fps),
                        ("flip_method", flip_method)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise SourceError("nvargus pipeline {}={!r}; expected a non-negative integer".format(name, value))
    if not 0 <= flip_method <= 7:
        raise SourceError("nvargus pipeline flip_method={!r}; expected 0..7".format(flip_method))
    out_width = width if out_width is None else int(out_width)
    out_height = height if out_height is None else int(out_height)
    return (
        "nvarguscamerasrc sensor-id={} ! "
        "video/x-raw(memory:NVMM), width=(int){}, height=(int){}, framerate=(fraction){}/1, format=(string)NV12 ! "
        "nvvidconv flip-method={} ! video/x-raw, width=(int){}, height=(int){}, format=(string)BGRx ! "
        "videoconvert ! video/x-raw, format=(string)BGR ! appsink drop=true max-buffers=1"
    ).format(sensor_id, width, height, fps, flip_method, out_width, out_height)


class Backoff(object):
    """Delay before reconnect attempt n (0-based): min(max_s, initial_s x factor**n)."""

    def __init__(self, initial_s=1.0, factor=2.0, max_s=60.0):
        if not (initial_s > 0 and factor >= 1 and max_s >= initial_s):
            raise SourceError("backoff initial_s={!r}, factor={!r}, max_s={!r}; expected initial_s > 0, "
                              "factor >= 1, max_s >= initial_s".format(initial_s, factor, max_s))
        self.initial_s, self.factor, self.max_s = float(initial_s), float(factor), float(max_s)

    def delay_s(self, attempt):
        return min(self.max_s, self.initial_s * self.factor ** min(attempt, 64))


def check_image(image, min_side=MIN_SIDE_PX):
    """'' when `image` is a usable BGR uint8 frame, else the reason it is not (edge.images.frame_problem)."""
    return frame_problem(image, min_side)


class FrameSource(object):
    """Base of every source: iterate for Frames, read `counters`, `close()`."""

    def __init__(self, name, stop_event=None, clock=time.time, min_side=MIN_SIDE_PX):
        self.name = name
        self.stop_event = stop_event
        self.clock = clock
        self.min_side = min_side
        self.counters = {"frames": 0, "corrupt": 0, "reconnects": 0, "open_failures": 0}
        self._next_id = 0

    def _stopped(self):
        return self.stop_event is not None and self.stop_event.is_set()

    def _frame(self, image, origin="", reason=None):
        """A Frame; `reason` None means check `image` here, '' that its reader already did."""
        if reason is None:
            reason = frame_problem(image, self.min_side)
        frame_id, self._next_id = self._next_id, self._next_id + 1
        if reason:
            self.counters["corrupt"] += 1
            logger.debug("%s: frame %d skipped: %s", self.name, frame_id, reason)
            return Frame(frame_id, self.clock(), None, self.name, reason, origin)
        self.counters["frames"] += 1
        return Frame(frame_id, self.clock(), image, self.name, "", origin)

    def __iter__(self):
        raise NotImplementedError

    def close(self):
        """Release the device or stream; safe to call twice."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False


class CaptureSource(FrameSource):
    """A cv2.VideoCapture-like object from `open_capture()` (isOpened, read, release).

    Live sources (`live=True`) reopen on a failed read, sleeping
    `backoff.delay_s(attempt)` between attempts (reset after a good read);
    `max_attempts` (None = forever) bounds one outage, then SourceError.
    `sleep` defaults to the stop event's wait, so stopping cuts a backoff short.
    A file source ends at its first failed read.
    """

    def __init__(self, name, open_capture, live=True, backoff=None, sleep=None, max_attempts=None,
                 stop_event=None, clock=time.time):
        FrameSource.__init__(self, name, stop_event, clock)
        self.open_capture = open_capture
        self.live = live
        self.backoff = backoff or Backoff()
        self.sleep = sleep or (stop_event.wait if stop_event is not None else time.sleep)
        self.max_attempts = max_attempts
        self._cap = None

    def _open_once(self):
        try:
            cap = self.open_capture()
        except Exception as e:  # any failure of a driver/factory is one failed attempt, logged with its reason
            logger.warning("%s: open failed: %s", self.name, e)
            return None
        if cap is None or not cap.isOpened():
            logger.warning("%s: open failed: capture not opened", self.name)
            if cap is not None:
                cap.release()
            return None
        return cap

    def _connect(self):
        """Open the capture, retrying with backoff for live sources; None when stopped."""
        attempt = 0
        while not self._stopped():
            cap = self._open_once()
            if cap is not None:
                return cap
            self.counters["open_failures"] += 1
            if not self.live:
                raise SourceError("cannot open {}".format(self.name))
            if self.max_attempts is not None and attempt + 1 >= self.max_attempts:
                raise SourceError("{}: gave up after {} attempts to open it".format(self.name, attempt + 1))
            self.sleep(self.backoff.delay_s(attempt))
            attempt += 1
        return None

    def __iter__(self):
        first = True
        while not self._stopped():
            if self._cap is None:
                self._cap = self._connect()
                if self._cap is None:
                    return
                if not first:
                    self.counters["reconnects"] += 1
                    logger.info("%s: reconnected", self.name)
                first = False
            ok, image = self._cap.read()
            if ok:
                yield self._frame(image, origin="{}#{}".format(self.name, self._next_id))
                continue
            self._cap.release()
            self._cap = None
            if not self.live:
                return
            logger.warning("%s: read failed; reconnecting", self.name)

    def close(self):
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class FolderSource(FrameSource):
    """Images in a folder in name order, then new ones as they arrive (polling).

    A file is read once its size is non-zero and unchanged over one poll, or
    its mtime is older than `settle_s`; one that reads as truncated while
    younger than `settle_s` is read again at the next poll (still being
    written). Entries with an image name that are no regular file (a FIFO, a
    folder, a dangling link, a symlink loop) are yielded once each as
    unusable frames saying what they are, never opened. With `watch=False`
    the source ends after the files that are ready; otherwise it polls every
    `poll_interval_s` until `stop_event` is set. `wait(seconds)` is
    injectable (default: the stop event's wait, so stopping is immediate).
    `skip` (a set of paths, or a callable path -> bool) names files already
    handled, e.g. by a run before a restart (Store.recorded_origins): they
    are passed over unread and counted in `counters["already_recorded"]`.
    Files are read by `edge.images.read_image` with `max_pixels` and
    `min_side`, or by `imread(path)` (an image or None) when given.
    """

    def __init__(self, root, poll_interval_s=1.0, watch=True, stop_event=None, settle_s=2.0,
                 extensions=IMAGE_EXTENSIONS, imread=None, wait=None, clock=time.time, skip=None,
                 max_pixels=MAX_PIXELS, min_side=MIN_SIDE_PX):
        FrameSource.__init__(self, "folder:{}".format(root), stop_event, clock, min_side)
        if not os.path.isdir(root):
            raise SourceError("image folder {} does not exist".format(display_name(root)))
        self.root = root
        self.poll_interval_s = float(poll_interval_s)
        self.watch = watch
        self.settle_s = float(settle_s)
        self.extensions = tuple(e.lower() for e in extensions)
        self.imread = imread
        self.max_pixels = max_pixels
        self.wait = wait
        self._done = set()
        self._sizes = {}  # name -> (size, mtime) at the last poll, for files not yet read
        self.counters["already_recorded"] = 0
        self._skip = None
        self.resume_from(skip)

    def resume_from(self, skip):
        """Pass over the origins in `skip` (a set of paths or a callable path -> bool); before iterating."""
        if skip is None or callable(skip):
            self._skip = skip
        else:
            self._skip = frozenset(skip).__contains__

    def _skipped(self, name):
        if self._skip is None or not self._skip(os.path.join(self.root, name)):
            return False
        self._done.add(name)
        self.counters["already_recorded"] += 1
        return True

    def _ready(self, names):
        ready, now = [], time.time()
        for name in names:
            path = os.path.join(self.root, name)
            try:
                st = os.stat(path)
            except OSError:
                if os.path.lexists(path):  # a dangling link or a loop: ready to be reported as such
                    ready.append(name)
                else:  # vanished between listdir and stat
                    self._sizes.pop(name, None)
                continue
            if file_problem(path):  # not a regular file: nothing to wait for, never opened
                ready.append(name)
                continue
            seen = (st.st_size, st.st_mtime)
            # An empty file may be a writer that has not started: only age makes it ready.
            if (st.st_size > 0 and self._sizes.get(name) == seen) or now - st.st_mtime > self.settle_s:
                ready.append(name)
            self._sizes[name] = seen
        return ready

    def _pending(self):
        names = sorted(n for n in os.listdir(self.root)
                       if has_image_extension(n, self.extensions) and n not in self._done and not self._skipped(n))
        return self._ready(names)

    def _read(self, name):
        """The Frame of one file, or None when it is truncated but young: a writer may still be at it."""
        path = os.path.join(self.root, name)
        try:
            image, reason = self._decode(path), ""
        except TruncatedImage as e:
            if self._young(path):
                return None
            image, reason = None, str(e)
        except FrameError as e:
            image, reason = None, str(e)
        self._done.add(name)
        self._sizes.pop(name, None)
        frame = self._frame(image, origin=path, reason=reason)  # '' = read_image already checked it
        if frame.image is None:
            logger.warning("%s: skipped %s", self.name, frame.reason)
        return frame

    def _decode(self, path):
        if self.imread is None:
            return read_image(path, max_pixels=self.max_pixels, min_side=self.min_side)
        problem = file_problem(path)
        if problem:
            raise FrameError("image {} {}".format(display_name(path), problem))
        image = self.imread(path)
        problem = frame_problem(image, self.min_side)
        if problem:
            raise FrameError("image {}: {}".format(display_name(path), problem))
        return image

    def _young(self, path):
        try:
            return time.time() - os.stat(path).st_mtime <= self.settle_s
        except OSError:
            return False

    def _pause(self):
        if self.wait is not None:
            self.wait(self.poll_interval_s)
        elif self.stop_event is not None:
            self.stop_event.wait(self.poll_interval_s)
        else:
            time.sleep(self.poll_interval_s)

    def __iter__(self):
        while not self._stopped():
            for name in self._pending():
                if self._stopped():
                    return
                frame = self._read(name)
                if frame is not None:
                    yield frame
            if not self.watch and not self._sizes:
                return
            self._pause()


def parse_source_spec(spec):
    """Source spec -> (kind, target): ("v4l2", int | path), ("csi", int), ("rtsp", url), ("video" | "folder", path)."""
    if isinstance(spec, int) and not isinstance(spec, bool) and spec >= 0:
        return "v4l2", spec
    text = str(spec).strip()
    if re.match(r"^\d+$", text):
        return "v4l2", int(text)
    if re.match(r"^/dev/video\d+$", text):
        return "v4l2", text
    match = re.match(r"^csi://(\d+)$", text)
    if match:
        return "csi", int(match.group(1))
    if text.lower().startswith(("rtsp://", "rtsps://")):
        return "rtsp", text
    if os.path.isdir(text):
        return "folder", text
    if os.path.isfile(text):
        return "video", text
    raise SourceError("source '{}' is not usable: it is not {}; expected one of: {}".format(
        display_name(text), "an existing file or folder" if "://" not in text else "a known URL scheme",
        "; ".join(ACCEPTED_FORMS)))


def _capture_opener(factory, target, api_name, buffer_size=None):
    def open_capture():
        import cv2

        if api_name == "CAP_ANY":  # a file: its name may be one OpenCV crashes on
            with opencv_path(target) as name:
                # The backend opens the file itself, so the name may go once the capture is open.
                return (factory or cv2.VideoCapture)(name, cv2.CAP_ANY)
        cap = (factory or cv2.VideoCapture)(target, getattr(cv2, api_name))
        if buffer_size is not None and cap is not None and cap.isOpened():
            # Keep the driver queue short: a frame every few seconds must be fresh, not queued.
            cap.set(cv2.CAP_PROP_BUFFERSIZE, buffer_size)
        return cap
    return open_capture


def open_source(spec, stop_event=None, backoff=None, sleep=None, max_attempts=None, capture_factory=None,
                poll_interval_s=1.0, watch=True, csi_width=1280, csi_height=720, csi_fps=30, csi_flip_method=0,
                clock=time.time):
    """Build the source a spec names (see `parse_source_spec`); SourceError for an unknown one.

    `capture_factory(target, api)` replaces cv2.VideoCapture (tests).
    """
    kind, target = parse_source_spec(spec)
    live = dict(live=True, backoff=backoff, sleep=sleep, max_attempts=max_attempts, stop_event=stop_event,
                clock=clock)
    if kind == "folder":
        return FolderSource(target, poll_interval_s=poll_interval_s, watch=watch, stop_event=stop_event, clock=clock)
    if kind == "video":
        return CaptureSource("video:{}".format(target), _capture_opener(capture_factory, target, "CAP_ANY"),
                             live=False, stop_event=stop_event, clock=clock)
    if kind == "csi":
        pipeline = nvargus_pipeline(target, csi_width, csi_height, csi_fps, csi_flip_method)
        return CaptureSource("csi:{}".format(target), _capture_opener(capture_factory, pipeline, "CAP_GSTREAMER"),
                             **live)
    if kind == "rtsp":
        return CaptureSource("rtsp:{}".format(_redact(target)),
                             _capture_opener(capture_factory, target, "CAP_FFMPEG", 1), **live)
    return CaptureSource("v4l2:{}".format(target), _capture_opener(capture_factory, target, "CAP_V4L2", 1),
                         **live)


def _redact(url):
    """rtsp://user:password@host/... -> rtsp://user:***@host/... (names end up in logs and the store)."""
    return re.sub(r"^(\w+://[^:/@]+):[^@/]*@", r"\1:***@", url)

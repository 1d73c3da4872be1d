"""Optional C kernels (whole WBF and its clustering, greedy NMS, head decoding, view batching), loaded with ctypes.

The library is ``edge/native/lib/_reefwatch_kernels.so``, built from kernels.c by
``python -m edge.native.build`` (the Makefile and Dockerfile.l4t run it; it
needs only a C compiler, since ctypes needs no Python headers). Its results
are bit-identical to the numpy/Python code in edge.fusion_cluster and
edge.boxes, which stays the reference and the fallback: when the library is
absent, or REEFWATCH_NATIVE=0, ``active()`` is None and callers take that path.
Nothing is loaded, built or written at import; the first ``active()`` loads
the library and logs at DEBUG which path is used.
"""
import collections
import ctypes
import logging
import os

import numpy as np

from edge.errors import NativeError

logger = logging.getLogger(__name__)

LIBRARY_NAME = "_reefwatch_kernels.so"
ABI_VERSION = 6
_F64, _F32, _U8 = np.dtype(np.float64), np.dtype(np.float32), np.dtype(np.uint8)
_VALUES = 9  # per WBF cluster: 4 float32 sums, sum of scores, fused box
_FUSED = 6  # per fused box of rw_wbf_fuse: x1, y1, x2, y2, score, label
_FUSED_RECORD = np.dtype([("box", np.float64, (4,)), ("score", np.float64), ("label", np.float64)])
_WBF_FALLBACK, _WBF_TIED = -3, -4
_WBF_COUNT = (1 << 40) - 1
_WBF_FIXED, _WBF_UNSORTED = 1 << 40, 1 << 41
# rw_wbf_fuse's answer to tied scores within a label: the label groups' row offsets and weighted scores.
TiedGroups = collections.namedtuple("TiedGroups", "bounds scores")
_state = {}  # "kernels": the loaded Kernels (or None when absent); "logged", "logged_for": the path logged
_ENV_KEY = os.environ.encodekey("REEFWATCH_NATIVE") if hasattr(os.environ, "encodekey") else None


def library_path():
    # In a folder that is no package: a .so beside the modules would look like an
    # extension module to pkgutil and importlib.
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib", LIBRARY_NAME)


def enabled():
    """False when REEFWATCH_NATIVE=0 asks for the numpy/Python path (read on every call, for tests)."""
    environ = os.environ
    data = getattr(environ, "_data", None)
    if data is None or _ENV_KEY is None:
        return environ.get("REEFWATCH_NATIVE", "1").strip() != "0"
    # os.environ.get encodes the key and goes through Mapping.get: microseconds per call, as much
    # as fusing a box; its dict holds the same data.
    raw = data.get(_ENV_KEY)
    return raw is None or environ.decodevalue(raw).strip() != "0"


def active():
    """The in-tree library's Kernels, or None for the numpy/Python path."""
    if not enabled():
        if _state.get("logged_for") != "off":
            _log_once("off (REEFWATCH_NATIVE=0): numpy/Python path", "off")
        return None
    if "kernels" not in _state:
        path = library_path()
        _state["kernels"] = load(path) if os.path.exists(path) else None
    kernels = _state["kernels"]
    if _state.get("logged_for", "off") is not kernels:  # format the message only when the path changes
        _log_once("native kernels %s" % kernels.path if kernels is not None
                  else "no %s (run python -m edge.native.build): numpy/Python path" % library_path(), kernels)
    return kernels


def available():
    return active() is not None


def _log_once(what, path):
    """Log which path is used when it changes; ``path``: "off" or the Kernels (None when absent)."""
    _state["logged_for"] = path
    if _state.get("logged") != what:
        _state["logged"] = what
        logger.debug("edge.native: %s", what)


def load(path):
    """Kernels of the library at ``path``; raises NativeError when it is not a library of ours."""
    try:
        lib = ctypes.CDLL(os.path.abspath(path))
        version = lib.rw_abi_version
    except (OSError, AttributeError) as e:
        raise NativeError("cannot load %s: %s; rebuild it with python -m edge.native.build" % (path, e)) from e
    version.restype = ctypes.c_int32
    version.argtypes = []
    if version() != ABI_VERSION:
        raise NativeError("%s has ABI version %d, expected %d; rebuild it with python -m edge.native.build"
                          % (path, version(), ABI_VERSION))
    return Kernels(lib, path)


def _pointer(array, dtype, name, ndim):
    """The address of a C-contiguous array of ``dtype``; refuse anything else rather than copy silently."""
    if type(array) is not np.ndarray or array.dtype != dtype or array.ndim != ndim \
            or not array.flags.c_contiguous:
        raise NativeError("%s must be a C-contiguous %d-d %s array, got %s" % (
            name, ndim, np.dtype(dtype).name,
            "%s %s" % (array.dtype, array.shape) if isinstance(array, np.ndarray) else type(array).__name__))
    return array.__array_interface__["data"][0]


class Kernels(object):
    """Typed entry points of one loaded library."""

    def __init__(self, lib, path):
        self.path = path
        p, i64, f64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int32
        self._wbf = lib.rw_wbf_cluster
        self._wbf.restype = i64
        self._wbf.argtypes = [p, i64, p, i64, f64, i32, p, p, p, p, p]
        self._nms = lib.rw_nms
        self._nms.restype = i64
        self._nms.argtypes = [p, i64, f64, i64, p]
        self._nms_segments = lib.rw_nms_segments
        self._nms_segments.restype = i64
        self._nms_segments.argtypes = [p, p, i64, f64, i64, p, p]
        self._decode = lib.rw_decode_head
        self._decode.restype = i64
        self._decode.argtypes = [p, i64, i64, i64, f64, i32, i32, i64, f64, i64, ctypes.c_float, p, p, p, p, p]
        self._fuse = lib.rw_wbf_fuse
        self._fuse.restype = i64
        # No argtypes: ctypes passes bytes and its own arrays as pointers without a from_param call
        # per argument (half a microsecond a call, a tenth of fusing one box); wbf_fuse checks the types.
        self._fuse.argtypes = None
        self._views = lib.rw_views_to_batch
        self._views.restype = i64
        self._views.argtypes = [p, i64, i64, i64, i32, i32, p]

    def wbf_cluster(self, rows, bounds, iou_thr, f32_divisor):
        """1.0.9's clustering of each row range of ``rows`` (edge.fusion's
        (N, 8) float64 table, each range one label sorted by descending score, scores > 0).

        ``bounds``: the ranges as a flat sequence [start0, end0, start1, ...].
        Returns (row_cluster (N,), first, count, wsum, values (n, 9)) over the clusters
        of these ranges, in creation order; rows outside the ranges get -1.
        """
        n = len(rows)
        if rows.ndim != 2 or rows.shape[1] != 8:
            raise NativeError("rows must have shape (N, 8), got %s" % (rows.shape,))
        g = len(bounds)
        # One buffer for every output (and the bounds): each array address costs a
        # microsecond or more through numpy, as much as clustering a few boxes.
        buf = np.empty(g + 3 * n + (1 + _VALUES) * n)
        ints = buf[:g + 3 * n].view(np.int64)
        ints[:g] = bounds
        row_cluster, first, count = ints[g:g + n], ints[g + n:g + 2 * n], ints[g + 2 * n:]
        row_cluster.fill(-1)
        wsum = buf[g + 3 * n:g + 4 * n]
        values = buf[g + 4 * n:].reshape(n, _VALUES)
        base = buf.__array_interface__["data"][0]
        got = self._wbf(_pointer(rows, _F64, "rows", 2), n, base, g // 2, float(iou_thr),
                        int(bool(f32_divisor)), base + 8 * g, base + 8 * (g + n), base + 8 * (g + 2 * n),
                        base + 8 * (g + 3 * n), base + 8 * (g + 4 * n))
        _check_status(got, "rw_wbf_cluster", "iou_thr=%r" % (iou_thr,))
        return row_cluster, first[:got], count[:got], wsum[:got], values[:got]

    def wbf_fuse(self, boxes, scores, labels, params, n_rows, order=None):
        """The whole of ensemble_boxes 1.0.9's WBF in one call (see rw_wbf_fuse in kernels.c).

        ``boxes``, ``scores``, ``labels``: the lists' values as bytes, one list after the other;
        ``params``: bytes of rw_wbf_fuse's float64 parameters; ``n_rows``: the number of boxes;
        ``order``: None, or bytes of int64: the visiting order of each label group's rows.
        Returns None for input the general path must take; TiedGroups(bounds, scores) when scores
        tie within a label and no ``order`` was given: each group's row offsets and weighted scores,
        what 1.0.9 argsorts; else (fused, fixes, ordered): fused,
        (k,) records of float64 fields box (4,), score and label, by descending score when
        ``ordered`` (else scores tie and the caller sorts); fixes, rw_wbf_fuse's five counts or None.
        """
        if not type(boxes) is type(scores) is type(labels) is type(params) is bytes \
                or order is not None and type(order) is not bytes:
            raise NativeError("wbf_fuse takes bytes, got %s" % ", ".join(
                type(v).__name__ for v in (boxes, scores, labels, params, order)))
        out = (ctypes.c_double * (_FUSED * (n_rows + 1)))()
        got = self._fuse(boxes, scores, labels, params, out, order)
        if got < 0:
            if got == _WBF_FALLBACK:
                return None
            if got == _WBF_TIED:
                n_groups = int(out[0])
                bounds = np.frombuffer(out, np.float64, n_groups + 1, 8).astype(np.int64)
                return TiedGroups(bounds, np.frombuffer(out, np.float64, int(bounds[-1]), 8 * (n_groups + 2)))
            _check_status(got, "rw_wbf_fuse", "n_rows=%r" % (n_rows,))
        # Fields of a record array: the cheapest way to three float64 views (1.0.9 returns views too).
        fused = np.frombuffer(out, _FUSED_RECORD, got & _WBF_COUNT)
        fixes = out[_FUSED * n_rows:_FUSED * n_rows + 5] if got & _WBF_FIXED else None
        return fused, fixes, not got & _WBF_UNSORTED

    def nms(self, boxes, iou_thr, limit):
        """Ranks kept by greedy NMS of ``boxes`` ((n, 4) float32, in visiting order, class-shifted)."""
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise NativeError("boxes must have shape (n, 4), got %s" % (boxes.shape,))
        n = len(boxes)
        keep = np.empty(n, dtype=np.int64)
        got = self._nms(_pointer(boxes, _F32, "boxes", 2), n, float(iou_thr), int(limit), keep.__array_interface__["data"][0])
        _check_status(got, "rw_nms", "iou_thr=%r" % (iou_thr,))
        return keep[:got]

    def nms_segments(self, boxes, bounds, iou_thr, limit):
        """`nms` of each segment boxes[bounds[s]:bounds[s + 1]] on its own, in one call.

        Returns (kept ranks, absolute and ascending within each segment, kept count per segment).
        """
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise NativeError("boxes must have shape (n, 4), got %s" % (boxes.shape,))
        bounds = np.ascontiguousarray(bounds, dtype=np.int64)
        if bounds.ndim != 1 or len(bounds) < 1 or bounds[0] != 0 or bounds[-1] != len(boxes) or np.any(
                np.diff(bounds) < 0):
            raise NativeError("bounds must rise from 0 to %d, got %s" % (len(boxes), bounds.tolist()))
        keep = np.empty(len(boxes), dtype=np.int64)
        counts = np.zeros(len(bounds) - 1, dtype=np.int64)
        got = self._nms_segments(_pointer(boxes, _F32, "boxes", 2), bounds.__array_interface__["data"][0],
                                 len(bounds) - 1, float(iou_thr), int(limit), keep.__array_interface__["data"][0],
                                 counts.__array_interface__["data"][0])
        _check_status(got, "rw_nms_segments", "iou_thr=%r" % (iou_thr,))
        return keep[:got], counts


    def decode_head(self, output, thr, thr_f32, multi_label, max_candidates, iou_thr, max_det, class_offset):
        """Every image of a (B, 4 + nc, A) float32 head decoded and NMSed (see rw_decode_head).

        ``thr_f32``: compare scores with thr in float32 (else float64), as numpy would.
        Returns (xyxy (K, 4) float32, score (K,) float32, class_id (K,), anchor (K,), counts (B,)),
        the images' kept boxes one image after the other.
        """
        if output.ndim != 3 or output.shape[1] < 5:
            raise NativeError("output must have shape (B, 4 + nc, A), got %s" % (output.shape,))
        batch, rows, anchors = output.shape
        per_image = min(int(max_det), anchors * (rows - 4 if multi_label else 1))
        # One buffer for every output: each array address costs a microsecond or more through numpy.
        buf = np.empty(5 * batch * per_image + batch)
        base = buf.__array_interface__["data"][0]
        n = batch * per_image
        got = self._decode(_pointer(output, _F32, "output", 3), batch, rows, anchors, float(thr), int(bool(thr_f32)),
                           int(bool(multi_label)), int(max_candidates), float(iou_thr), int(max_det),
                           float(class_offset), base, base + 16 * n, base + 24 * n, base + 32 * n, base + 40 * n)
        _check_status(got, "rw_decode_head", "iou_thr=%r, max_det=%r, max_candidates=%r" % (
            iou_thr, max_det, max_candidates))
        xyxy = buf[:2 * n].view(np.float32).reshape(n, 4)[:got]
        score = buf[2 * n:3 * n].view(np.float32)[:got]  # the first half of the score block
        class_id, anchor = buf[3 * n:4 * n].view(np.int64)[:got], buf[4 * n:5 * n].view(np.int64)[:got]
        return xyxy, score, class_id, anchor, buf[5 * n:5 * n + batch].view(np.int64)

    def views_to_batch(self, views, in_h, in_w, pad, out=None, pad_in_place=False):
        """(N, 3, in_h, in_w) float32 RGB / 255 of views [(image, hflip, rot90, left, top)], each image
        a C-contiguous (h, w, 3) uint8 BGR array (see rw_views_to_batch); written into ``out`` when given
        (a C-contiguous float32 array of that shape), else into a new array. ``pad_in_place``: ``out``
        already holds the grey of exactly these views' placement (only the images are written)."""
        params = np.empty((len(views), 7), dtype=np.int64)
        for row, (image, hflip, rot90, left, top) in zip(params, views):
            if image.ndim != 3 or image.shape[2] != 3:
                raise NativeError("each view's image must have shape (h, w, 3), got %s" % (image.shape,))
            row[:] = (_pointer(image, _U8, "image", 3), image.shape[0], image.shape[1], bool(hflip), rot90, left, top)
        shape = (len(views), 3, in_h, in_w)
        batch = np.empty(shape, dtype=np.float32) if out is None else out
        address = _pointer(batch, _F32, "out", 4)
        if batch.shape != shape:
            raise NativeError("out must have shape %s, got %s" % (shape, batch.shape))
        got = self._views(params.__array_interface__["data"][0], len(views), in_h, in_w, int(pad),
                          int(bool(pad_in_place and out is not None)), address)
        _check_status(got, "rw_views_to_batch", "in_h=%r, in_w=%r, pad=%r" % (in_h, in_w, pad))
        return batch


def _check_status(got, function, arguments):
    if got == -1:
        raise MemoryError("%s could not allocate its working memory" % function)
    if got < 0:
        raise NativeError("%s refused its arguments (%s)" % (function, arguments))

"""Letterbox preprocessing and test-time-augmentation views with exact box inverses.

A view is data: a horizontal flip, a rotation by k x 90 degrees counter-clockwise
(applied after the flip) and a scale of the letterboxed content. Every view maps
frame pixels to network-input pixels by an axis-aligned affine map, so boxes
come back exactly. Scales above 1 crop the edges of the letterboxed frame; the
boxes still invert exactly and are clipped to the frame afterwards.
"""
import collections

import cv2
import numpy as np

from edge import native
from edge.boxes import clip_boxes
from edge.detections import Detections
from edge.errors import ConfigError, EdgeError, FrameError
from edge.images import frame_problem

View = collections.namedtuple("View", "name hflip rot90 scale")
# Letterbox placement of the oriented frame in the network input.
Geometry = collections.namedtuple("Geometry", "gain_x gain_y left top new_w new_h in_w in_h")
# Everything needed to bring one view's boxes back to the frame.
ViewTransform = collections.namedtuple("ViewTransform", "view frame_w frame_h geometry")

PAD_VALUE = 114  # ultralytics' letterbox grey, so models see what they were trained on

VIEWS = collections.OrderedDict((v.name, v) for v in (
    View("identity", False, 0, 1.0),
    View("hflip", True, 0, 1.0),
    View("rot90", False, 1, 1.0),
    View("rot180", False, 2, 1.0),
    View("rot270", False, 3, 1.0),
    View("scale0.9", False, 0, 0.9),
    View("scale1.1", False, 0, 1.1),
))
PRESETS = {
    "none": ("identity",),
    "flip": ("identity", "hflip"),
    "full": tuple(VIEWS),
}

_CV2_ROTATIONS = {1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_CLOCKWISE}


def view_from_spec(spec):
    """A View from a name in VIEWS or a dict {name?, hflip, rot90, scale}."""
    if isinstance(spec, View):
        return spec
    if isinstance(spec, str):
        if spec not in VIEWS:
            raise ConfigError("unknown TTA view %r; expected one of %s or a dict {hflip, rot90, scale}"
                              % (spec, ", ".join(VIEWS)))
        return VIEWS[spec]
    if isinstance(spec, dict):
        unknown = set(spec) - {"name", "hflip", "rot90", "scale"}
        if unknown:
            raise ConfigError("TTA view %r has unknown keys %s" % (spec, sorted(unknown)))
        rot90, scale = int(spec.get("rot90", 0)), float(spec.get("scale", 1.0))
        if rot90 not in (0, 1, 2, 3) or not 0.25 <= scale <= 4.0:
            raise ConfigError("TTA view %r: rot90 must be 0-3 and scale within 0.25-4" % (spec,))
        hflip = bool(spec.get("hflip", False))
        name = spec.get("name") or "hflip%d_rot%d_scale%g" % (hflip, rot90 * 90, scale)
        return View(str(name), hflip, rot90, scale)
    raise ConfigError("TTA view must be a name or a dict, got %r" % (spec,))


def view_plan(spec):
    """A tuple of Views from a preset name, a comma-separated list of names, or a list of specs."""
    if isinstance(spec, str):
        names = PRESETS.get(spec) or tuple(s.strip() for s in spec.split(",") if s.strip())
        spec = list(names)
    plan = tuple(view_from_spec(s) for s in spec)
    if not plan:
        raise ConfigError("a TTA plan needs at least one view; presets: %s" % ", ".join(sorted(PRESETS)))
    return plan


def plan_to_json(plan):
    return [{"name": v.name, "hflip": v.hflip, "rot90": v.rot90, "scale": v.scale} for v in plan]


def letterbox_geometry(frame_h, frame_w, in_h, in_w, scale=1.0):
    """Placement of a frame_h x frame_w image in the input, rounded as ultralytics rounds."""
    r = min(float(in_h) / frame_h, float(in_w) / frame_w) * scale
    new_w, new_h = max(int(round(frame_w * r)), 1), max(int(round(frame_h * r)), 1)
    left = int(round((in_w - new_w) / 2.0 - 0.1))
    top = int(round((in_h - new_h) / 2.0 - 0.1))
    return Geometry(float(new_w) / frame_w, float(new_h) / frame_h, left, top, new_w, new_h, in_w, in_h)


def orient_image(frame, view):
    if view.hflip:
        frame = cv2.flip(frame, 1)
    if view.rot90:
        frame = cv2.rotate(frame, _CV2_ROTATIONS[view.rot90])
    return frame


def letterbox_image(image, geometry):
    """Resize into the input canvas; content beyond the canvas (scale > 1) is cropped."""
    g = geometry
    if (image.shape[1], image.shape[0]) != (g.new_w, g.new_h):
        image = cv2.resize(image, (g.new_w, g.new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((g.in_h, g.in_w, 3), PAD_VALUE, dtype=np.uint8)
    _paste(canvas, image, g)
    return canvas


def _paste(canvas, resized, g):
    """Place an image already resized to (new_w, new_h) into the canvas at the geometry's offset, cropping."""
    x0, y0 = max(g.left, 0), max(g.top, 0)
    x1, y1 = min(g.left + g.new_w, g.in_w), min(g.top + g.new_h, g.in_h)
    canvas[y0:y1, x0:x1] = resized[y0 - g.top:y1 - g.top, x0 - g.left:x1 - g.left]


def _rotate_boxes_ccw(xyxy, k, w, h):
    """Boxes of a w x h image rotated k x 90 degrees counter-clockwise (as cv2/np.rot90)."""
    x1, y1, x2, y2 = xyxy[:, 0], xyxy[:, 1], xyxy[:, 2], xyxy[:, 3]
    if k == 1:
        return np.stack([y1, w - x2, y2, w - x1], axis=1)
    if k == 2:
        return np.stack([w - x2, h - y2, w - x1, h - y1], axis=1)
    if k == 3:
        return np.stack([h - y2, x1, h - y1, x2], axis=1)
    return xyxy


def _hflip_boxes(xyxy, w):
    return np.stack([w - xyxy[:, 2], xyxy[:, 1], w - xyxy[:, 0], xyxy[:, 3]], axis=1)


def view_transform(frame_w, frame_h, view, in_w, in_h):
    oriented_w, oriented_h = (frame_h, frame_w) if view.rot90 % 2 else (frame_w, frame_h)
    return ViewTransform(view, frame_w, frame_h, letterbox_geometry(oriented_h, oriented_w, in_h, in_w, view.scale))


def boxes_to_input(xyxy, transform):
    """Frame-pixel boxes to network-input pixels for this view (the forward map)."""
    t, g = transform, transform.geometry
    out = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    if t.view.hflip:
        out = _hflip_boxes(out, t.frame_w)
    out = _rotate_boxes_ccw(out, t.view.rot90, t.frame_w, t.frame_h)
    return out * [g.gain_x, g.gain_y, g.gain_x, g.gain_y] + [g.left, g.top, g.left, g.top]


def boxes_to_frame(xyxy, transform):
    """Network-input boxes back to frame pixels: the exact inverse of boxes_to_input."""
    t, g = transform, transform.geometry
    out = (np.asarray(xyxy, dtype=np.float64).reshape(-1, 4) - [g.left, g.top, g.left, g.top]) \
        / [g.gain_x, g.gain_y, g.gain_x, g.gain_y]
    k = t.view.rot90
    if k:
        rotated_w, rotated_h = (t.frame_h, t.frame_w) if k % 2 else (t.frame_w, t.frame_h)
        out = _rotate_boxes_ccw(out, (4 - k) % 4, rotated_w, rotated_h)
    if t.view.hflip:
        out = _hflip_boxes(out, t.frame_w)
    return out


def detections_to_frame(detections, transform):
    """A view's Detections in input pixels -> frame pixels, clipped to the frame."""
    xyxy = clip_boxes(boxes_to_frame(detections.xyxy, transform), transform.frame_w, transform.frame_h)
    return Detections(xyxy, detections.score, detections.class_id, detections.extras)


def views_to_frame(per_view, transforms):
    """Every view's Detections (input pixels) in frame pixels, clipped, as one (xyxy, score, class_id)
    and the per-view counts: the values of detections_to_frame view by view, in a few array operations."""
    return concatenated_to_frame(np.concatenate([d.xyxy for d in per_view]), np.concatenate([d.score for d in per_view]),
                                 np.concatenate([d.class_id for d in per_view]), [len(d) for d in per_view], transforms)


def concatenated_to_frame(xyxy, score, class_id, counts, transforms):
    """views_to_frame of the views' boxes given one view after the other (edge.decode's concatenated=True)."""
    # One row per box, repeated per view: cheaper than picking columns of one geometry array.
    offset = np.repeat(np.array([[t.geometry.left, t.geometry.top] * 2 for t in transforms], dtype=np.float64),
                       counts, axis=0).reshape(-1, 4)
    gain = np.repeat(np.array([[t.geometry.gain_x, t.geometry.gain_y] * 2 for t in transforms], dtype=np.float64),
                     counts, axis=0).reshape(-1, 4)
    out = (np.asarray(xyxy, dtype=np.float64) - offset) / gain
    start = 0
    for t, count in zip(transforms, counts):
        k, end = t.view.rot90, start + count
        if k:
            rotated_w, rotated_h = (t.frame_h, t.frame_w) if k % 2 else (t.frame_w, t.frame_h)
            out[start:end] = _rotate_boxes_ccw(out[start:end], (4 - k) % 4, rotated_w, rotated_h)
        if t.view.hflip:
            out[start:end] = _hflip_boxes(out[start:end], t.frame_w)
        start = end
    return clip_boxes(out, transforms[0].frame_w, transforms[0].frame_h), score, class_id, list(counts)


def check_frame(frame, name="frame"):
    """FrameError unless `frame` is a usable BGR uint8 frame, by the one rule of edge.images."""
    problem = frame_problem(frame)
    if problem:
        raise FrameError("%s: %s" % (name, problem))


class BatchBuffer(object):
    """A batch array reused across frames, and the placement of the views whose grey it holds."""

    __slots__ = ("array", "layout")

    def __init__(self, shape):
        self.array = np.empty(shape, np.float32)
        self.layout = None  # the geometries of the views last written, or None


def prepare_views(frame, plan, in_w, in_h, out=None, host=None):
    """All views of one BGR frame as one NCHW float32 RGB batch in 0..1, plus their transforms.

    ``out``: a C-contiguous (len(plan), 3, in_h, in_w) float32 array to fill and return (the pipeline
    reuses one across frames: a fresh 8 MB batch can cost its page faults, milliseconds), or a
    BatchBuffer, whose grey is left in place when the views sit where they sat in its last batch
    (the same plan on a frame of the same size), else a new array. ``host``: an
    edge.host_threads.HostThreads that builds the views in two halves at once (the same batch).
    """
    check_frame(frame)
    frame_h, frame_w = frame.shape[:2]
    transforms = [view_transform(frame_w, frame_h, v, in_w, in_h) for v in plan]
    kernels = native.active()
    if kernels is not None:
        buffer = out if isinstance(out, BatchBuffer) else None
        batch = np.empty((len(plan), 3, in_h, in_w), np.float32) if out is None else (
            buffer.array if buffer is not None else out)
        pad_in_place = False
        if buffer is not None:
            layout = (PAD_VALUE,) + tuple(t.geometry for t in transforms)
            pad_in_place, buffer.layout = layout == buffer.layout, None  # unknown until the batch is whole
        sizes = [_unturned_size(t) for t in transforms]

        def build(start, end):
            # One pass from the resized images to the float batch: no canvases, turned copies or transposes.
            resized = _resized_once(frame, sizes[start:end])
            views = [(resized[size], t.view.hflip, t.view.rot90, t.geometry.left, t.geometry.top)
                     for size, t in zip(sizes[start:end], transforms[start:end])]
            return kernels.views_to_batch(views, in_h, in_w, PAD_VALUE, batch[start:end], pad_in_place=pad_in_place)

        if host is None:
            build(0, len(plan))
        else:
            # A resize of the frame costs about two views' letterboxing: balance the halves on both.
            host.halves(build, len(plan), lambda s, e: (e - s) + 2 * len(set(sizes[s:e]) - {(frame_w, frame_h)}))
        if buffer is not None:
            buffer.layout = layout
        return batch, transforms
    # Resize the frame once per size and orient the small image: flips and quarter turns commute with
    # a bilinear resize to the swapped size, and turning a 1024 px frame costs more than the resize.
    resized = _resized_once(frame, [_unturned_size(t) for t in transforms])
    canvases = np.full((len(transforms), in_h, in_w, 3), PAD_VALUE, dtype=np.uint8)
    for canvas, t in zip(canvases, transforms):
        _paste(canvas, orient_image(resized[_unturned_size(t)], t.view), t.geometry)
    if not isinstance(out, BatchBuffer):
        return images_to_batch(canvases, out), transforms
    out.layout = None
    batch = images_to_batch(canvases, out.array)
    out.layout = (PAD_VALUE,) + tuple(t.geometry for t in transforms)
    return batch, transforms


def _resized_once(frame, sizes):
    """{(width, height): the frame resized (bilinear) to it, C-contiguous} for each distinct size."""
    frame_h, frame_w = frame.shape[:2]
    resized = {}
    for size in sizes:
        if size not in resized:
            resized[size] = np.ascontiguousarray(frame) if size == (frame_w, frame_h) else cv2.resize(
                frame, size, interpolation=cv2.INTER_LINEAR)
    return resized


def _unturned_size(transform):
    """(width, height) of the view's resized frame before its quarter turns."""
    g = transform.geometry
    return (g.new_h, g.new_w) if transform.view.rot90 % 2 else (g.new_w, g.new_h)


def images_to_batch(canvases, out=None):
    """(N, H, W, 3) BGR uint8 -> (N, 3, H, W) RGB float32 in 0..1, as YOLO is fed (into ``out`` if given)."""
    # Reorder while still uint8 (a quarter of the bytes), then convert contiguous memory: 4x faster.
    planar = np.ascontiguousarray(canvases[..., ::-1].transpose(0, 3, 1, 2))
    if out is None:
        batch = planar.astype(np.float32)
    else:
        if out.shape != planar.shape or out.dtype != np.float32:
            raise EdgeError("out must be a float32 array of shape %s, got %s %s" % (planar.shape, out.dtype, out.shape))
        batch = out
        batch[...] = planar
    batch /= np.float32(255.0)
    return batch

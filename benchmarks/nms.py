"""Time decode_head (candidate selection + class-aware NMS) and nms alone: native, numpy, old greedy loop.

    python -m benchmarks.nms [--repeats N] [--seed S] [--conf C]

Each case is one TTA batch of synthetic YOLOv8 head outputs (views, 4+nc,
anchors) shaped like a trained model's at a low threshold: a few objects per
view, each lighting up the anchors near its centre on all three strides with
jittered copies of its box, and background anchors whose per-class scores are
log-normal, so that a set fraction of anchors passes conf 0.001 with
anchor-sized boxes of a random class. The new decoding, on the native NMS
(edge.native, "-" when the library is not built) and on the numpy one
(REEFWATCH_NATIVE=0), is checked to give exactly the old one's boxes before
anything is timed. Figures are medians of interleaved runs.
"""
import argparse
import os
import sys
import time

import numpy as np

from edge import native
from edge.boxes import box_iou, nms, xywh_to_xyxy
from edge.decode import decode_head
from edge.detections import Detections

STRIDES = (8, 16, 32)
# (name, input px, classes, views, objects per view, fraction of background anchors above 0.001)
CASES = (
    ("320 px, 7 classes, 7 views", 320, 7, 7, 8, 0.25),
    ("640 px, 36 classes, 7 views", 640, 36, 7, 15, 0.30),
)


def synthetic_head(rng, size, num_classes, views, objects, background_fraction):
    """A (views, 4+nc, anchors) float32 head output; see the module docstring."""
    centres = np.concatenate([_anchor_centres(size, s) for s in STRIDES])
    stride = np.concatenate([np.full((size // s) ** 2, s, np.float32) for s in STRIDES])
    anchors = len(centres)
    # Per-class log10 scores ~ N(mu, 0.6), mu set so that the best of nc classes
    # clears 1e-3 on about background_fraction of the anchors.
    per_class = 1.0 - (1.0 - background_fraction) ** (1.0 / num_classes)
    mu = -3.0 - 0.6 * _normal_quantile(1.0 - per_class)
    out = np.empty((views, 4 + num_classes, anchors), np.float32)
    for v in range(views):
        scores = 10.0 ** rng.normal(mu, 0.6, (anchors, num_classes))
        xy = centres + rng.normal(0, 0.3, (anchors, 2)) * stride[:, None]
        wh = stride[:, None] * np.exp(rng.normal(np.log(3.0), 0.5, (anchors, 2)))
        obj_xy = rng.uniform(0.1 * size, 0.9 * size, (objects, 2))
        obj_wh = rng.uniform(0.05 * size, 0.4 * size, (objects, 2))
        obj_cls = rng.integers(0, num_classes, objects)
        for k in range(objects):
            # Anchors within half the object's size of its centre predict it,
            # more confidently near the centre, with 5% jitter on the box.
            reach = np.abs(centres - obj_xy[k]) / (obj_wh[k] / 2)
            near = np.flatnonzero(reach.max(axis=1) < 1.0)
            xy[near] = obj_xy[k] + rng.normal(0, 0.05, (len(near), 2)) * obj_wh[k]
            wh[near] = obj_wh[k] * np.exp(rng.normal(0, 0.05, (len(near), 2)))
            scores[near, obj_cls[k]] = np.clip(0.95 - 0.9 * reach[near].max(axis=1)
                                               + rng.normal(0, 0.05, len(near)), 1e-4, 0.99)
        out[v, :2], out[v, 2:4], out[v, 4:] = xy.T, wh.T, scores.T
    return out


def _anchor_centres(size, stride):
    grid = (np.arange(size // stride, dtype=np.float32) + 0.5) * stride
    gx, gy = np.meshgrid(grid, grid)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def _normal_quantile(p):
    """Inverse standard normal CDF by bisection (numpy only, no scipy)."""
    from math import erf, sqrt
    lo, hi = -10.0, 10.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.5 * (1 + erf(mid / sqrt(2))) < p else (lo, mid)
    return (lo + hi) / 2


def old_decode_head(output, num_classes, conf_thr, iou_thr=0.7, max_det=300, max_candidates=30000):
    """decode_head as it was before the sparse NMS: whole-array transpose, one IoU pass per kept box."""
    results = []
    for rows in np.asarray(output):
        rows = rows.T.astype(np.float32)
        class_id = rows[:, 4:].argmax(axis=1)
        score = rows[np.arange(len(rows)), 4 + class_id]
        candidate = score > conf_thr
        rows, score, class_id = rows[candidate], score[candidate], class_id[candidate]
        if len(score) > max_candidates:
            top = np.argsort(-score, kind="stable")[:max_candidates]
            rows, score, class_id = rows[top], score[top], class_id[top]
        xyxy = xywh_to_xyxy(rows[:, :4])
        keep = old_greedy_nms(xyxy, score, iou_thr, class_id, max_det)
        results.append(Detections(xyxy[keep], score[keep], class_id[keep]))
    return results


def old_greedy_nms(xyxy, score, iou_thr, class_id, max_det):
    xyxy = xyxy + np.asarray(class_id, dtype=np.float32).reshape(-1, 1) * np.float32(7680.0)
    order = np.argsort(-score, kind="stable")
    keep = []
    while order.size and len(keep) < max_det:
        best = order[0]
        keep.append(best)
        rest = order[1:]
        if not rest.size:
            break
        order = rest[box_iou(xyxy[best], xyxy[rest])[0] <= iou_thr]
    return np.asarray(keep, dtype=np.int64)


def median_times_s(functions, repeats):
    """Median wall time of each function, runs interleaved so load on the host hits all alike.
    A function may be a (setup, fn) pair: setup runs untimed before each run."""
    times = [[] for _ in functions]
    for _ in range(repeats):
        for slot, fn in zip(times, functions):
            setup, fn = fn if isinstance(fn, tuple) else (None, fn)
            if setup is not None:
                setup()
            start = time.perf_counter()
            fn()
            slot.append(time.perf_counter() - start)
    return [float(np.median(t)) for t in times]


def use_native(on):
    def setup():
        os.environ["REEFWATCH_NATIVE"] = "1" if on else "0"
    return setup


def nms_inputs(head, num_classes, conf_thr):
    """Per view, the (xyxy, score, class_id) decode_head hands to nms."""
    out = []
    for image in head:
        best = image[4:].max(axis=0)
        picked = image[:, best > conf_thr]
        out.append((xywh_to_xyxy(picked[:4].T), best[best > conf_thr], picked[4:].argmax(axis=0)))
    return out


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--conf", type=float, default=0.001)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    rng = np.random.default_rng(args.seed)
    os.environ["REEFWATCH_NATIVE"] = "1"
    built = native.available()
    paths = [True, False] if built else [False]
    print("native kernels: %s" % (native.library_path() if built else "not built (python -m edge.native.build)"))
    print("decode_head at conf %g, iou 0.7, max_det 300 (median of %d, per TTA batch)" % (args.conf, args.repeats))
    for name, size, nc, views, objects, fraction in CASES:
        head = synthetic_head(rng, size, nc, views, objects, fraction)
        old = old_decode_head(head, nc, conf_thr=args.conf)
        for on in paths:
            use_native(on)()
            if decode_head(head, nc, conf_thr=args.conf) != old:
                print("%s: new decoding (%s) differs from the old one; not timed"
                      % (name, "native" if on else "numpy"))
                return 1
        new = decode_head(head, nc, conf_thr=args.conf)
        candidates = (head[:, 4:].max(axis=1) > args.conf).sum(axis=1)
        print("%s: candidates per view %d-%d, kept per view %d-%d" % (
            name, candidates.min(), candidates.max(), min(map(len, new)), max(map(len, new))))
        views_in = nms_inputs(head, nc, args.conf)

        def nms_all():
            for xyxy, score, cls in views_in:
                nms(xyxy, score, 0.7, class_id=cls, max_det=300)

        def old_nms_all():
            for xyxy, score, cls in views_in:
                old_greedy_nms(xyxy, score, 0.7, cls, 300)

        timed = median_times_s(
            [lambda: old_decode_head(head, nc, args.conf), old_nms_all]
            + [(use_native(on), lambda: decode_head(head, nc, conf_thr=args.conf)) for on in paths]
            + [(use_native(on), nms_all) for on in paths], args.repeats)
        old_decode_s, old_nms_s = timed[:2]
        decode_s = dict(zip(paths, timed[2:2 + len(paths)]))
        nms_s = dict(zip(paths, timed[2 + len(paths):]))
        for what, old_s, ours in (("decode_head", old_decode_s, decode_s), ("nms alone", old_nms_s, nms_s)):
            print("  %-11s old greedy %8.2f ms   numpy %7.2f ms (x%.1f)   native %s" % (
                what, 1e3 * old_s, 1e3 * ours[False], old_s / ours[False],
                "%7.2f ms (x%.1f, %.3f ms per view)" % (1e3 * ours[True], old_s / ours[True], 1e3 * ours[True] / views)
                if built else "-"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time decode_head (candidate selection + class-aware NMS) against the greedy loop it replaced.

    python -m benchmarks.nms [--repeats N] [--seed S] [--conf C]

Each case is one TTA batch of synthetic YOLOv8 head outputs (views, 4+nc,
anchors) shaped like a trained model's at a low threshold: a few objects per
view, each lighting up the anchors near its centre on all three strides with
jittered copies of its box, and background anchors whose per-class scores are
log-normal, so that a set fraction of anchors passes conf 0.001 with
anchor-sized boxes of a random class. The new decoding is checked to give
exactly the old one's boxes before anything is timed.
"""
import argparse
import sys
import time

import numpy as np

from edge.boxes import box_iou, xywh_to_xyxy
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
    """Median wall time of each function, runs interleaved so load on the host hits all alike."""
    times = [[] for _ in functions]
    for _ in range(repeats):
        for slot, fn in zip(times, functions):
            start = time.perf_counter()
            fn()
            slot.append(time.perf_counter() - start)
    return [float(np.median(t)) for t in times]


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--conf", type=float, default=0.001)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    rng = np.random.default_rng(args.seed)
    print("decode_head at conf %g, iou 0.7, max_det 300 (median of %d, per TTA batch)" % (args.conf, args.repeats))
    for name, size, nc, views, objects, fraction in CASES:
        head = synthetic_head(rng, size, nc, views, objects, fraction)
        new = decode_head(head, nc, conf_thr=args.conf)
        old = old_decode_head(head, nc, conf_thr=args.conf)
        if new != old:
            print("%s: new decoding differs from the old one; not timed" % name)
            return 1
        candidates = (head[:, 4:].max(axis=1) > args.conf).sum(axis=1)
        old_s, new_s = median_times_s([lambda: old_decode_head(head, nc, args.conf),
                                       lambda: decode_head(head, nc, conf_thr=args.conf)], args.repeats)
        print("%s: candidates per view %d-%d, kept per view %d-%d" % (
            name, candidates.min(), candidates.max(), min(map(len, new)), max(map(len, new))))
        print("  old greedy %8.2f ms   new %7.2f ms   speed-up x%.1f   (new: %.3f ms per view)" % (
            1e3 * old_s, 1e3 * new_s, old_s / new_s, 1e3 * new_s / views))
    return 0


if __name__ == "__main__":
    sys.exit(main())

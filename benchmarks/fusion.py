"""Time edge.fusion.weighted_boxes_fusion (native and pure Python) against ensemble_boxes 1.0.9.

    python -m benchmarks.fusion [--repeats N] [--seed S] [--conf-types ...] [--target X]

Shapes (all synthetic and deterministic for a seed):
- "yolo": one frame of a YOLO decoded at conf 0.001 over TTA views (7 lists
  x ~270 boxes x 7 classes): 20-40 objects of 1%-60% of the frame found in
  most lists with small jitter, several boxes per object and list at lower
  scores, other classes' boxes on the same object, the rest low-score clutter
  of which half sits on or near objects;
- "crowd": a crowded scene, hundreds of boxes of one label densely overlapping;
- "stage2": the second stage, 3 lists of fused model outputs (few boxes each);
- "small": 1 to 10 boxes, where per-call cost dominates;
- "ensemble": the earlier shapes (21 lists x 100 boxes, 72 lists x 24 boxes).
Outputs of both paths are checked to be bit-identical to ensemble_boxes before
anything is timed. The last line gives Python's per-call floor on one box
(see ``print_floor``): what 20x of 1.0.9 leaves against what any call costs. Each line gives the median of interleaved runs of 1.0.9, our
pure Python/numpy path (REEFWATCH_NATIVE=0) and our native path (edge.native,
"-" when the library is not built), and PASS or MISS of the path edge.fusion
uses (native where built) against --target.
"""
import argparse
import logging
import os
import sys
import time
import warnings

import numpy as np

from edge import native
from edge.fusion import weighted_boxes_fusion

CONF_TYPES = ("avg", "max", "box_and_model_avg", "absent_model_aware_avg")
RECALL = 0.9


def yolo_lists(rng, n_lists=7, n_boxes=270, n_labels=7):
    """Per-list (boxes, scores float32, labels) as a YOLO at conf 0.001 gives them after per-class NMS."""
    n_objects = int(rng.integers(20, 41))
    centre = rng.uniform(0.1, 0.9, (n_objects, 2))
    side = np.exp(rng.uniform(np.log(0.01), np.log(0.6), (n_objects, 1)))
    size = np.minimum(side * rng.uniform(0.6, 1.4, (n_objects, 2)), 0.6)
    label = rng.integers(0, n_labels, n_objects)
    boxes_list, scores_list, labels_list = [], [], []
    for _ in range(n_lists):
        parts = [_object_boxes(rng, centre[k], size[k], label[k], n_labels)
                 for k in np.flatnonzero(rng.random(n_objects) < RECALL)]
        n_clutter = max(n_boxes - sum(len(p[2]) for p in parts), 0)
        near = rng.random(n_clutter) < 0.5
        k = rng.integers(0, n_objects, n_clutter)
        c = np.where(near[:, None], centre[k] + rng.normal(0, 0.5, (n_clutter, 2)) * size[k],
                     rng.uniform(0, 1, (n_clutter, 2)))
        wh = np.where(near[:, None], size[k] * np.exp(rng.normal(0, 0.5, (n_clutter, 2))),
                      np.exp(rng.uniform(np.log(0.01), np.log(0.3), (n_clutter, 2))))
        parts.append((c, wh, rng.uniform(0.001, 0.05, n_clutter), rng.integers(0, n_labels, n_clutter)))
        c, wh, s, lab = (np.concatenate(column) for column in zip(*parts))
        order = np.argsort(-s, kind="stable")  # a decoder emits boxes by score
        boxes_list.append(np.clip(np.concatenate([c - wh / 2, c + wh / 2], axis=1), 0, 1)[order])
        scores_list.append(s[order].astype(np.float32))
        labels_list.append(lab[order])
    return boxes_list, scores_list, labels_list


def _object_boxes(rng, centre, size, label, n_labels):
    """One object in one view: a good box, 0-3 looser ones of its class, 0-2 of other classes."""
    n = int(rng.integers(1, 5))
    jitter = np.concatenate([[0.02], rng.uniform(0.05, 0.25, n - 1)])[:, None]
    c = centre + rng.normal(0, 1, (n, 2)) * jitter * size
    wh = size * np.exp(rng.normal(0, 1, (n, 2)) * jitter)
    s = np.concatenate([rng.uniform(0.4, 0.95, 1), rng.uniform(0.001, 0.3, n - 1)])
    m = int(rng.integers(0, 3))
    c_other = centre + rng.normal(0, 0.05, (m, 2)) * size
    wh_other = size * np.exp(rng.normal(0, 0.05, (m, 2)))
    return (np.concatenate([c, c_other]), np.concatenate([wh, wh_other]),
            np.concatenate([s, rng.uniform(0.001, 0.08, m)]),
            np.concatenate([np.full(n, label), rng.integers(0, n_labels, m)]))


def crowd_lists(rng, n_lists=3, n_boxes=300, n_objects=120):
    """A crowded scene: n_objects of one label packed into the middle of the frame, each list
    holding n_boxes jittered boxes of them at any score."""
    centre = rng.uniform(0.2, 0.8, (n_objects, 2))
    size = rng.uniform(0.04, 0.12, (n_objects, 2))
    boxes_list, scores_list, labels_list = [], [], []
    for _ in range(n_lists):
        k = rng.integers(0, n_objects, n_boxes)
        c = centre[k] + rng.normal(0, 0.08, (n_boxes, 2)) * size[k]
        wh = size[k] * np.exp(rng.normal(0, 0.08, (n_boxes, 2)))
        boxes_list.append(np.clip(np.concatenate([c - wh / 2, c + wh / 2], axis=1), 0, 1))
        scores_list.append(rng.uniform(0.001, 1.0, n_boxes))
        labels_list.append(np.zeros(n_boxes, dtype=np.int64))
    return boxes_list, scores_list, labels_list


def ensemble_lists(rng, n_lists, n_boxes, n_objects, n_labels):
    """The earlier benchmark's lists: about one jittered box per object and list (found with
    probability RECALL, label confused 5% of the time), filled up with low-score false positives."""
    corner = rng.uniform(0.0, 0.85, (n_objects, 2))
    size = rng.uniform(0.03, 0.15, (n_objects, 2))
    label = rng.integers(0, n_labels, n_objects)
    boxes_list, scores_list, labels_list = [], [], []
    for _ in range(n_lists):
        found = np.flatnonzero(rng.random(n_objects) < RECALL)[:n_boxes]
        xy = corner[found] + rng.normal(0.0, 0.05, (len(found), 2)) * size[found]
        wh = size[found] * rng.normal(1.0, 0.05, (len(found), 2))
        n_false = n_boxes - len(found)
        false_xy = rng.uniform(0.0, 0.9, (n_false, 2))
        false_wh = rng.uniform(0.02, 0.1, (n_false, 2))
        boxes = np.concatenate([np.concatenate([xy, xy + wh], axis=1),
                                np.concatenate([false_xy, false_xy + false_wh], axis=1)])
        scores = np.concatenate([rng.uniform(0.3, 1.0, len(found)), rng.uniform(0.0, 0.3, n_false)])
        labels = np.concatenate([np.where(rng.random(len(found)) < 0.95, label[found],
                                          rng.integers(0, n_labels, len(found))),
                                 rng.integers(0, n_labels, n_false)])
        boxes_list.append(np.clip(boxes, 0.0, 1.0))
        scores_list.append(scores)
        labels_list.append(labels)
    return boxes_list, scores_list, labels_list


def stage2_lists(rng, n_lists=3, n_objects=25, n_labels=7):
    """Three fused model outputs of one frame: each finds most objects once, with small
    jitter, plus a few leftovers, at float64 scores already rescaled by the first stage."""
    boxes_list, scores_list, labels_list = ensemble_lists(rng, n_lists, n_objects + 5, n_objects, n_labels)
    return boxes_list, [s * 0.9 for s in scores_list], labels_list


def few_lists(rng, n_lists, n_boxes):
    """n_lists lists of n_boxes jittered boxes around the same few objects."""
    return ensemble_lists(rng, n_lists, n_boxes, max(n_boxes, 1), 2)


def cases(rng):
    """(name, lists, keyword arguments) of every timed shape."""
    return [
        ("yolo 7x270, 7 labels", yolo_lists(rng), {"weights": [2, 1, 1, 1, 1, 1, 1]}),
        ("crowd 3x300, 1 label", crowd_lists(rng), {}),
        ("stage2 3x30", stage2_lists(rng), {"weights": [1.0, 0.8, 1.2]}),
        ("small 1x1", few_lists(rng, 1, 1), {}),
        ("small 3x1", few_lists(rng, 3, 1), {}),
        ("small 3x3", few_lists(rng, 3, 3), {}),
        ("small 1x10", few_lists(rng, 1, 10), {}),
        ("ensemble 21x100", ensemble_lists(rng, 21, 100, 80, 6), {}),
        ("ensemble 72x24", ensemble_lists(rng, 72, 24, 20, 4), {}),
    ]


def median_times_s(functions, repeats, min_s=0.02, setups=None):
    """Median wall time of each function, runs interleaved so load on the host hits all alike;
    a run of a fast function repeats it until it takes min_s. ``setups[i]()`` runs
    before each run of function i, untimed."""
    setups = setups or [lambda: None] * len(functions)
    loops = []
    for fn, setup in zip(functions, setups):
        setup()
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < min_s or n == 0:
            fn()
            n += 1
        loops.append(n)
    times = [[] for _ in functions]
    for _ in range(repeats):
        for fn, setup, n, runs in zip(functions, setups, loops, times):
            setup()
            start = time.perf_counter()
            for _ in range(n):
                fn()
            runs.append((time.perf_counter() - start) / n)
    return [float(np.median(runs)) for runs in times]


def use_native(on):
    """A setup that switches edge's kernels on or off for the runs that follow."""
    def setup():
        os.environ["REEFWATCH_NATIVE"] = "1" if on else "0"
    return setup


def same_output(a, b):
    return all(x.shape == y.shape and np.array_equal(np.asarray(x, np.float64), y, equal_nan=True)
               for x, y in zip(a, b))


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fusion", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="timed runs per case (median is reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--conf-types", nargs="+", default=["avg"], choices=CONF_TYPES)
    parser.add_argument("--target", type=float, default=20.0, help="speed-up a case must reach for PASS")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        from ensemble_boxes import weighted_boxes_fusion as reference
    except ImportError as e:
        print("ensemble_boxes is needed as the reference: %s" % e, file=sys.stderr)
        return 2
    warnings.simplefilter("ignore")  # 1.0.9 warns once per clipped box
    logging.getLogger("edge.fusion").disabled = True  # and we once per call (zero-area boxes after clipping)
    rng = np.random.default_rng(args.seed)
    os.environ["REEFWATCH_NATIVE"] = "1"
    built = native.available()
    print("native kernels: %s" % (native.library_path() if built else "not built (python -m edge.native.build)"))
    print("%-22s %-22s %6s %12s %10s %10s %8s %8s" % ("case", "conf_type", "boxes", "ensemble ms", "python ms",
                                                      "native ms", "python", "native"))
    misses = 0
    paths = [True, False] if built else [False]
    for name, lists, kwargs in cases(rng):
        for conf_type in args.conf_types:
            call = dict(kwargs, conf_type=conf_type)
            expected = reference(*lists, **call)
            for on in paths:
                use_native(on)()
                if not same_output(expected, weighted_boxes_fusion(*lists, **call)):
                    print("%s, %s: %s output differs from ensemble_boxes" % (name, conf_type,
                          "native" if on else "python"), file=sys.stderr)
                    return 1
            ours = lambda: weighted_boxes_fusion(*lists, **call)  # noqa: E731
            timed = median_times_s([lambda: reference(*lists, **call)] + [ours] * len(paths), args.repeats,
                                   setups=[lambda: None] + [use_native(on) for on in paths])
            ref_s, our = timed[0], dict(zip(paths, timed[1:]))
            ratio = ref_s / our[built]
            misses += ratio < args.target
            print("%-22s %-22s %6d %12.3f %10.3f %10s %7.1fx %8s %s"
                  % (name, conf_type, sum(len(b) for b in lists[0]), ref_s * 1e3, our[False] * 1e3,
                     "%.3f" % (our[True] * 1e3) if built else "-", ref_s / our[False],
                     "%.1fx" % ratio if built else "-", "PASS" if ratio >= args.target else "MISS"))
    print("%d case(s) below %.0fx (%s path)" % (misses, args.target, "native" if built else "python"))
    print_floor(reference, args.repeats, built)
    return 0


def print_floor(reference, repeats, built):
    """Python's per-call floor on one box: a function that only returns three ready arrays, and one
    that makes them as any fusion must, against 1.0.9 (what 20x would leave per call)."""
    lists = few_lists(np.random.default_rng(0), 1, 1)
    ready = (np.zeros((1, 4)), np.zeros(1), np.zeros(1))
    use_native(built)()

    def returns_ready(boxes_list, scores_list, labels_list, weights=None, iou_thr=0.55, skip_box_thr=0.0,
                      conf_type="avg", allows_overflow=False):
        return ready

    def makes_three(boxes_list, scores_list, labels_list, weights=None, iou_thr=0.55, skip_box_thr=0.0,
                    conf_type="avg", allows_overflow=False):
        out = np.empty((1, 6))
        return out[:, :4], out[:, 4], out[:, 5]

    ref_s, ready_s, three_s, ours_s = median_times_s(
        [lambda: reference(*lists), lambda: returns_ready(*lists), lambda: makes_three(*lists),
         lambda: weighted_boxes_fusion(*lists)], repeats)
    print("per-call floor, 1 box: 1.0.9 %.2f us (20x: %.2f us); a function returning 3 ready arrays %.2f us; "
          "one making 3 arrays %.2f us; edge.fusion %.2f us (%.1fx)"
          % (ref_s * 1e6, ref_s * 1e6 / 20, ready_s * 1e6, three_s * 1e6, ours_s * 1e6, ref_s / ours_s))


if __name__ == "__main__":
    sys.exit(main())

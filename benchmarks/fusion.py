"""Time edge.fusion.weighted_boxes_fusion against ensemble_boxes 1.0.9 on ensemble-sized inputs.

    python -m benchmarks.fusion [--repeats N] [--seed S]

Each case is one frame's worth of lists (models x TTA views): each list holds
about one jittered box per ground-truth object (several labels) and is filled
up with low-scoring false positives.
The outputs are checked to be identical before anything is timed.
"""
import argparse
import sys
import time

import numpy as np

from edge.fusion import weighted_boxes_fusion

# (name, lists, boxes per list, ground-truth objects, labels)
CASES = (
    ("21 lists x 100 boxes", 21, 100, 80, 6),
    ("72 lists x 24 boxes", 72, 24, 20, 4),
)
CONF_TYPES = ("avg", "max", "box_and_model_avg", "absent_model_aware_avg")
RECALL = 0.9


def make_lists(rng, n_lists, n_boxes, n_objects, n_labels):
    """Per-list normalized boxes, scores and labels, as one model x view after NMS gives them.

    Each list finds each object with probability RECALL (one box, corners
    jittered by ~5% of its size, label confused 5% of the time) and fills up
    to n_boxes with low-scoring false positives anywhere, of any label.
    """
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


def median_times_s(functions, repeats):
    """Median wall time of each function, runs interleaved so load on the host hits all alike."""
    times = [[] for _ in functions]
    for _ in range(repeats):
        for fn, runs in zip(functions, times):
            start = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - start)
    return [float(np.median(runs)) for runs in times]


def same_output(a, b):
    return all(x.shape == y.shape and np.allclose(x, y, rtol=0, atol=1e-5) for x, y in zip(a, b))


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fusion", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per case (median is reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--conf-types", nargs="+", default=["avg"], choices=CONF_TYPES)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        from ensemble_boxes import weighted_boxes_fusion as reference
    except ImportError as e:
        print("ensemble_boxes is needed as the reference: %s" % e, file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    print("%-24s %-24s %12s %10s %8s" % ("case", "conf_type", "ensemble ms", "ours ms", "speed-up"))
    for name, n_lists, n_boxes, n_objects, n_labels in CASES:
        lists = make_lists(rng, n_lists, n_boxes, n_objects, n_labels)
        for conf_type in args.conf_types:
            ref_out = reference(*lists, conf_type=conf_type)
            our_out = weighted_boxes_fusion(*lists, conf_type=conf_type)
            if not same_output(ref_out, our_out):
                print("%s, %s: output differs from ensemble_boxes" % (name, conf_type), file=sys.stderr)
                return 1
            ref_s, our_s = median_times_s([lambda: reference(*lists, conf_type=conf_type),
                                           lambda: weighted_boxes_fusion(*lists, conf_type=conf_type)],
                                          args.repeats)
            print("%-24s %-24s %12.2f %10.2f %7.1fx"
                  % (name, conf_type, ref_s * 1e3, our_s * 1e3, ref_s / our_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())

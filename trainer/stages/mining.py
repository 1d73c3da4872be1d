"""Pure helpers of `trainer specialize`: oversampled lists, instance counts, the negative pool, mining rounds.

Lists are lists of image paths; a path listed twice is trained on twice (ultralytics keeps
repeats in a .txt list). Labels come in as {path: class ids}; a path with no ids is a
background frame. Nothing here reads images or runs a model.
"""
import math

import numpy as np

from trainer.stages.training import CATEGORIES

# Float slack in the background cap, so 0.1 * 90 / 0.9 counts as 10, not 9.999...
_EPS = 1e-9


def critical_ids(categories):
    """Sorted class ids whose category is critical."""
    return sorted(int(c) for c, category in categories.items() if category == "critical")


def oversampled_list(paths, labels, critical, times):
    """Each path once, or `times` times in a row when its labels hold a critical class."""
    critical = set(int(c) for c in critical)
    out = []
    for path in paths:
        holds = bool(critical.intersection(int(c) for c in labels.get(path, ())))
        out.extend([path] * (int(times) if holds else 1))
    return out


def instance_counts(entries, labels, names, categories):
    """Images, backgrounds and instances per class and per category of a training list (repeats count)."""
    per_class = {str(n): 0 for n in names}
    per_category = {c: 0 for c in CATEGORIES}
    images_per_category = {c: 0 for c in CATEGORIES}
    backgrounds = 0
    for path in entries:
        ids = [int(c) for c in labels.get(path, ())]
        backgrounds += not ids
        for c in ids:
            per_class[str(names[c])] += 1
            if categories.get(c) in per_category:
                per_category[categories[c]] += 1
        for category in set(categories.get(c) for c in ids) & set(CATEGORIES):
            images_per_category[category] += 1
    return {"images": len(entries), "background_images": backgrounds, "instances": sum(per_class.values()),
            "per_class": per_class, "per_category": per_category, "images_per_category": images_per_category}


def is_background(labels, path):
    """True for a frame with no labelled box (a missing or empty label file)."""
    return len(labels.get(path, ())) == 0


def split_pool(paths, holdout_fraction, seed):
    """(mining part, holdout part) of a negative pool, both sorted; the same for the same paths and seed.

    The holdout gets round(n * fraction) frames, at least one when the pool has any: it measures false
    positives per background image and is never mined.
    """
    paths = sorted(set(paths))
    if not paths:
        return [], []
    n_holdout = min(len(paths), max(1, int(round(len(paths) * float(holdout_fraction)))))
    order = np.random.default_rng(int(seed)).permutation(len(paths))
    held = set(int(i) for i in order[:n_holdout])
    return ([p for i, p in enumerate(paths) if i not in held], [p for i, p in enumerate(paths) if i in held])


def background_room(labelled_entries, backgrounds, fraction):
    """How many background entries may still be added so backgrounds stay <= fraction of the whole list.

    (backgrounds + n) / (labelled_entries + backgrounds + n) <= fraction  <=>
    backgrounds + n <= fraction * labelled_entries / (1 - fraction). None means no limit (fraction 1).
    """
    fraction = float(fraction)
    if fraction >= 1.0:
        return None
    allowed = math.floor(fraction * int(labelled_entries) / (1.0 - fraction) + _EPS)
    return max(0, allowed - int(backgrounds))


def select_mined(pool_scores, mine_conf, taken, labels):
    """Frames whose highest box score is above mine_conf, hardest first (ties by path).

    Never a frame in `taken` (mined before, or already in the list) and never a labelled one: an
    unlabelled detection on a labelled image may be an animal nobody tagged, not a false positive.
    """
    taken = set(taken)
    chosen = [(float(s), p) for p, s in pool_scores.items()
              if s is not None and float(s) > float(mine_conf) and p not in taken and is_background(labels, p)]
    return [p for _, p in sorted(chosen, key=lambda t: (-t[0], t[1]))]


def add_capped(mined, room):
    """The mined frames that fit in `room` (None: all of them)."""
    return list(mined) if room is None else list(mined)[:max(0, int(room))]


def guarded_recall(figures):
    """The recall the stop rule watches: critical recall, or overall recall when no critical class is in val."""
    critical = figures.get("critical_recall")
    return critical if critical is not None else figures.get("recall")


def regression(previous, current, fp_tolerance, recall_tolerance):
    """Why `current` is worse than `previous` beyond the tolerances, or None when it is acceptable."""
    fp_before, fp_now = previous.get("fp_per_background_image"), current.get("fp_per_background_image")
    if fp_before is not None and fp_now is not None and fp_now - fp_before > float(fp_tolerance) + _EPS:
        return ("raised FP per background image %.4f -> %.4f (more than fp_tolerance %g)"
                % (fp_before, fp_now, fp_tolerance))
    rec_before, rec_now = guarded_recall(previous), guarded_recall(current)
    if rec_before is not None and rec_now is not None and rec_before - rec_now > float(recall_tolerance) + _EPS:
        which = "critical recall" if current.get("critical_recall") is not None else "recall"
        return ("lowered %s %.4f -> %.4f (more than recall_tolerance %g)"
                % (which, rec_before, rec_now, recall_tolerance))
    return None


def best_round(records):
    """(index into records, reason) of the kept round with the fewest FP per background image, then the
    highest guarded recall, then the earliest. Records without figures or not kept are not candidates."""
    kept = [(i, r) for i, r in enumerate(records) if r.get("kept") and r.get("figures")]
    if not kept:
        return None, "no round finished"

    def key(item):
        figures = item[1]["figures"]
        fp = figures.get("fp_per_background_image")
        recall = guarded_recall(figures)
        return (math.inf if fp is None else fp, -(recall if recall is not None else -1.0), item[0])

    index, record = min(kept, key=key)
    figures = record["figures"]
    fp, recall = figures.get("fp_per_background_image"), guarded_recall(figures)
    rounds = ", ".join(str(r["round"]) for _, r in kept)
    reason = "round %d: fewest FP per background image (%s) among kept rounds %s, then highest recall (%s)" % (
        record["round"], "n/a" if fp is None else "%.4f" % fp, rounds, "n/a" if recall is None else "%.4f" % recall)
    return index, reason

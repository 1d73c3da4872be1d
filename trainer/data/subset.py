"""A data.yaml over an even subset of a large data set's train and val splits (run-all --data).

A schedule measured on a few hundred training images (`run-all --preset real`: 30
epochs of ~450 images at 320 px on 2 cores) takes ten times as long on a data set ten
times the size. Video data sets like DeepFish are mostly near-duplicate neighbouring
frames, so an evenly spread subset keeps nearly all of what there is to learn: the paths
are sorted by name (`<video>_..._f<frame>`: by video, then by frame) and every k-th one
kept, so every video and every stretch of it stays represented. The frames left out of
the training split are still pictures of the same habitat: they are listed for MoCo v3,
which needs no labels.

The subset's data.yaml lists each split as a text file of absolute image paths (the
label files stay where they are, beside their images), with the source's names and
`categories:`.
"""
import os

import numpy as np
import yaml

from edge.atomic_file import write_atomically
from trainer.data.yolo_dataset import load_yaml_file, read_data_yaml

SPLITS = ("train", "val", "test")


def spread(paths, limit):
    """`limit` of the paths evenly spread over their name order (all of them when there are no more)."""
    ordered = sorted(set(paths))
    if limit is None or len(ordered) <= limit:
        return ordered
    picks = np.unique(np.round(np.linspace(0, len(ordered) - 1, int(limit))).astype(int))
    return [ordered[i] for i in picks]


def write_subset(data_yaml, out_dir, max_train=None, max_val=None):
    """(subset data.yaml, list file of the train frames left out or None, {split: (kept, of)}); None, None, {}
    when no split is over its limit (the source data.yaml serves as it is)."""
    _, splits = read_data_yaml(data_yaml)
    limits = {"train": max_train, "val": max_val}
    if not any(limit is not None and len(set(splits.get(split, []))) > limit for split, limit in limits.items()):
        return None, None, {}
    os.makedirs(out_dir, exist_ok=True)
    raw = dict(load_yaml_file(data_yaml))
    raw["path"] = os.path.abspath(out_dir)
    counts, kept_train = {}, []
    for split in SPLITS:
        raw.pop(split, None)
        if split not in splits:
            continue
        kept = spread(splits[split], limits.get(split))
        counts[split] = (len(kept), len(set(splits[split])))
        write_atomically(os.path.join(out_dir, split + ".txt"), "".join(os.path.abspath(p) + "\n" for p in kept))
        raw[split] = split + ".txt"
        kept_train = kept if split == "train" else kept_train
    left_out = None
    if counts.get("train", (0, 0))[0] < counts.get("train", (0, 0))[1]:
        rest = sorted(set(splits["train"]) - set(kept_train))
        left_out = os.path.join(out_dir, "train_left_out.txt")
        write_atomically(left_out, "".join(os.path.abspath(p) + "\n" for p in rest))
    subset_yaml = os.path.join(out_dir, "data.yaml")
    write_atomically(subset_yaml, yaml.safe_dump(raw, sort_keys=False))
    return subset_yaml, left_out, counts

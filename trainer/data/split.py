"""Grouped, category-stratified train/val/test split.

Frames of one video are near-duplicates, so whole groups are assigned to a
split. Groups are taken largest first (ties in seeded random order) and each
goes to the split whose targets it fills best: the split that most reduces the
squared shortfall of images, of images per category (critical, important,
general) and of backgrounds, with a bonus for giving a split its first image
of a category when the group fits there.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import re

import numpy as np

from trainer.data import yolo_dataset as yd
from trainer.data.taxonomy import CATEGORIES
from trainer.errors import DataError

SPLITS = ("train", "val", "test")
DIMS = ("images",) + CATEGORIES + ("background",)

_ROBOFLOW = re.compile(r"(_(jpe?g|png|bmp|tiff?|webp))?\.rf\.[0-9a-f]+$", re.I)
_EXT_WORD = re.compile(r"_(jpe?g|png|bmp|tiff?|webp)$", re.I)
_FRAME = re.compile(r"[_-](f|frame|frm)\d+$", re.I)


def default_group_key(file_name):
    """Video/sequence key from a file name: Roboflow `_jpg.rf.<hash>` and a `_f000123` frame suffix go.

    `7117_Caranx_sexfasciatus_juvenile_f000004_jpg.rf.ab12.jpg` -> `7117_Caranx_sexfasciatus_juvenile`;
    a name without a frame suffix is its own group.
    """
    stem = os.path.splitext(os.path.basename(file_name))[0]
    stem = _EXT_WORD.sub("", _ROBOFLOW.sub("", stem))
    return _FRAME.sub("", stem) or stem


def pattern_group_key(pattern):
    """Key function from a regex searched in the file name: named group 'group', else group 1, else the match."""
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise DataError("--group-pattern %r is not a valid regular expression: %s" % (pattern, e)) from e

    def key(file_name):
        m = regex.search(os.path.basename(file_name))
        if m is None:
            return None
        if "group" in regex.groupindex:
            return m.group("group")
        return m.group(1) if regex.groups else m.group(0)

    return key


def assign_groups(group_counts, ratios=(0.7, 0.15, 0.15), seed=0):
    """{group: split index} for {group: counts vector over DIMS}; deterministic by seed."""
    ratios = np.asarray(ratios, np.float64)
    if ratios.ndim != 1 or len(ratios) < 2 or (ratios < 0).any() or not np.isclose(ratios.sum(), 1.0, atol=1e-3):
        raise DataError("split ratios %s must be 2 or 3 non-negative numbers summing to 1, e.g. 0.7 0.15 0.15"
                        % ratios.tolist())
    keys = sorted(group_counts)
    random.Random(seed).shuffle(keys)
    keys.sort(key=lambda k: -group_counts[k][0])  # stable: equal sizes keep the seeded order
    vec = {k: np.asarray(group_counts[k], np.float64) for k in keys}
    total = np.sum([vec[k] for k in keys], axis=0) if keys else np.zeros(len(DIMS))
    scale = np.where(total > 0, total, 1.0)
    target = ratios[:, None] * total[None, :]
    current = np.zeros_like(target)
    out = {}
    for k in keys:
        g = vec[k]
        before = ((current - target) / scale) ** 2
        after = ((current + g - target) / scale) ** 2
        score = (before - after).sum(axis=1)
        fits = current[:, 0] + g[0] <= target[:, 0] * 1.1 + 1
        first = ((current[:, 1:] == 0) & (g[1:] > 0) & (target[:, 1:] > 0)).sum(axis=1)
        score = score + fits * first * 1.0 - (ratios == 0) * 1e9
        s = int(np.argmax(score))
        current[s] += g
        out[k] = s
    return out


@dataclasses.dataclass
class SplitReport:
    dataset: str
    out: str
    ratios: tuple
    seed: int
    group_source: str
    groups: int = 0
    images: dict = dataclasses.field(default_factory=dict)       # split -> images
    group_counts: dict = dataclasses.field(default_factory=dict)  # split -> groups
    categories: dict = dataclasses.field(default_factory=dict)    # split -> {category: images, background}
    straddling_groups: list = dataclasses.field(default_factory=list)
    files: list = dataclasses.field(default_factory=list)

    def to_dict(self):
        return dataclasses.asdict(self)


def image_vector(class_ids, taxonomy):
    """Counts over DIMS for one image: 1 image, 1 per category present, 1 if background."""
    v = np.zeros(len(DIMS), np.int64)
    v[0] = 1
    cats = {taxonomy.category(i) for i in class_ids}
    for c in cats:
        v[1 + CATEGORIES.index(c)] = 1
    v[-1] = int(not cats)
    return v


def split_dataset(path, out, taxonomy, ratios=(0.7, 0.15, 0.15), group_pattern=None, seed=0):
    """Write out/{train,val,test}.txt and out/data.yaml for a dataset; returns a SplitReport."""
    images = yd.dataset_images(path)
    if not images:
        raise DataError("dataset %s has no images to split" % path)
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) == 2:
        ratios = ratios + (0.0,)
    meta = yd.read_meta(path)
    key_fn = pattern_group_key(group_pattern) if group_pattern else None
    group_of, sources = {}, set()
    for img in images:
        name = os.path.basename(img)
        key = key_fn(name) if key_fn else None
        sources.add("pattern" if key is not None else "metadata" if meta.get(name, {}).get("group") else "file name")
        if key is None:
            key = meta.get(name, {}).get("group") or default_group_key(name)
        group_of[img] = key
    counts = {}
    for img in images:
        lp = yd.label_path_for(img)
        ids = yd.read_yolo_labels(lp)[0] if os.path.exists(lp) else ()
        counts[group_of[img]] = counts.get(group_of[img], 0) + image_vector(ids, taxonomy)
    assignment = assign_groups(counts, ratios[:3], seed)
    report = SplitReport(dataset=os.path.abspath(path), out=os.path.abspath(out), ratios=ratios, seed=seed,
                         group_source="+".join(sorted(sources)), groups=len(counts))
    lists = {s: [] for s in SPLITS}
    for img in images:
        lists[SPLITS[assignment[group_of[img]]]].append(img)
    report.straddling_groups = straddling(lists, group_of)
    for i, s in enumerate(SPLITS):
        report.images[s] = len(lists[s])
        report.group_counts[s] = sum(1 for k, v in assignment.items() if v == i)
        total = np.sum([counts[k] for k, v in assignment.items() if v == i], axis=0) if report.group_counts[s] \
            else np.zeros(len(DIMS), np.int64)
        report.categories[s] = {d: int(total[j]) for j, d in enumerate(DIMS[1:], 1)}
    _write_split(out, lists, taxonomy, report)
    return report


def straddling(lists, group_of):
    """Groups whose images appear in more than one split (should be none)."""
    where = {}
    for s, imgs in lists.items():
        for img in imgs:
            where.setdefault(group_of[img], set()).add(s)
    return sorted(k for k, v in where.items() if len(v) > 1)


def _list_entry(img, out):
    rel = os.path.relpath(os.path.abspath(img), os.path.abspath(out))
    # Ultralytics expands a leading './' to the list's folder; anything else must be absolute.
    return "./" + rel.replace(os.sep, "/") if not rel.startswith("..") else os.path.abspath(img)


def _write_split(out, lists, taxonomy, report):
    os.makedirs(out, exist_ok=True)
    for s, imgs in lists.items():
        path = os.path.join(out, s + ".txt")
        yd._atomic_write(path, "".join(_list_entry(i, out) + "\n" for i in imgs))
        report.files.append(path)
    test = "test.txt" if lists["test"] else None
    report.files.append(yd.write_data_yaml(out, taxonomy, train="train.txt", val="val.txt", test=test))
    split_json = os.path.join(out, "split.json")
    yd._atomic_write(split_json, json.dumps(report.to_dict(), indent=1, default=str))
    report.files.append(split_json)

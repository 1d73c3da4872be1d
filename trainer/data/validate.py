"""Dataset checks: boxes, class ids, images, duplicates; bad records are quarantined.

A box that pokes out of the image by at most `clip_tol` (a fraction of the
image side) is clipped and counted as 'clipped'; further out, or with zero or
negative size, the whole record is bad. Bad records are never half-kept.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import json
import logging
import os
import shutil

import numpy as np

from trainer.data import yolo_dataset as yd
from trainer.data.taxonomy import CATEGORIES
from trainer.errors import DataError

logger = logging.getLogger(__name__)

CLIP_TOL = 0.02      # fraction of the image side a box may stick out and still be clipped
MIN_SIZE_PX = 1.0    # smaller than this after clipping: degenerate
EPS = 1e-5           # label files keep 6 decimals: rounding is not clipping


def check_boxes(class_ids, xywhn, nc, width=None, height=None, clip_tol=CLIP_TOL):
    """(class_ids, clipped xywhn, n_clipped, problems) for one image's boxes.

    Pure and vectorized; `problems` lists human-readable reasons, one per kind.
    Width/height (pixels) make the minimum size check exact; without them a box
    needs a normalised side above 1e-4.
    """
    ids = np.asarray(class_ids, np.int64).reshape(-1)
    b = np.asarray(xywhn, np.float64).reshape(-1, 4)
    problems = []
    if len(ids) == 0:
        return ids.astype(np.int32), b.astype(np.float32), 0, problems
    unknown = (ids < 0) | (ids >= nc)
    if unknown.any():
        problems.append("unknown class id %s (expected 0..%d)" % (sorted(set(ids[unknown].tolist())), nc - 1))
    x0, y0 = b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2
    x1, y1 = b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2
    if ((b[:, 2] <= 0) | (b[:, 3] <= 0) | ~np.isfinite(b).all(axis=1)).any():
        problems.append("degenerate box (zero or negative size)")
    far = (x0 < -clip_tol) | (y0 < -clip_tol) | (x1 > 1 + clip_tol) | (y1 > 1 + clip_tol)
    if far.any():
        problems.append("box far outside the image (%d boxes beyond %.0f%%)" % (int(far.sum()), clip_tol * 100))
    out = (x0 < -EPS) | (y0 < -EPS) | (x1 > 1 + EPS) | (y1 > 1 + EPS)
    cx0, cy0, cx1, cy1 = (np.clip(v, 0, 1) for v in (x0, y0, x1, y1))
    clipped = np.stack([(cx0 + cx1) / 2, (cy0 + cy1) / 2, cx1 - cx0, cy1 - cy0], axis=1)
    min_w = (MIN_SIZE_PX / width if width else 1e-4) - EPS
    min_h = (MIN_SIZE_PX / height if height else 1e-4) - EPS
    if not problems and ((clipped[:, 2] < min_w) | (clipped[:, 3] < min_h)).any():
        problems.append("degenerate box (under %g px after clipping)" % MIN_SIZE_PX)
    return ids.astype(np.int32), clipped.astype(np.float32), int(out.sum()), problems


def xyxy_abs_to_xywhn(xyxy, width, height):
    """Absolute [x0,y0,x1,y1] -> normalised [cx,cy,w,h] (unclipped, so checks can see it)."""
    b = np.asarray(xyxy, np.float64).reshape(-1, 4)
    w, h = float(width), float(height)
    return np.stack([(b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h,
                     (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h], axis=1).astype(np.float32)


def inspect_image(path):
    """(width, height, sha1 of the bytes); raises DataError when missing or undecodable.

    Decodes with JPEG draft mode (1/8 scale), which reads every byte at a
    fraction of the cost of a full decode.
    """
    from PIL import Image

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError("cannot read image %s: %s" % (path, e)) from e
    try:
        with Image.open(io.BytesIO(data)) as im:
            size = im.size
            im.draft("L", (max(1, size[0] // 8), max(1, size[1] // 8)))
            im.load()
    except Exception as e:  # PIL raises many types for a corrupt file
        raise DataError("unreadable image %s: %s" % (path, e)) from e
    return size[0], size[1], hashlib.sha1(data).hexdigest()


@dataclasses.dataclass
class ValidationReport:
    dataset: str
    images: int = 0
    boxes: int = 0
    backgrounds: int = 0
    clipped_boxes: int = 0
    unlabelled_images: int = 0
    class_counts: dict = dataclasses.field(default_factory=dict)      # class name -> boxes
    category_counts: dict = dataclasses.field(default_factory=dict)   # category -> {boxes, images}
    bad: list = dataclasses.field(default_factory=list)               # {name, reasons}
    duplicates: list = dataclasses.field(default_factory=list)        # {name, duplicate_of}
    missing_images: list = dataclasses.field(default_factory=list)    # label files without an image
    quarantined: int = 0

    @property
    def ok(self):
        return not self.bad and not self.duplicates and not self.missing_images

    def to_dict(self):
        return dataclasses.asdict(self)


def category_table(class_ids_per_image, taxonomy):
    """({class name: boxes}, {category: {boxes, images}}) over lists of class-id arrays."""
    boxes = collections.Counter()
    cat_images = collections.Counter()
    for ids in class_ids_per_image:
        boxes.update(int(i) for i in ids)
        cat_images.update({taxonomy.category(i) for i in ids})
    class_counts = {taxonomy.names[i]: boxes[i] for i in sorted(boxes)}
    category_counts = {}
    for cat in CATEGORIES:
        ids = taxonomy.ids_in(cat)
        category_counts[cat] = {"classes": len(ids), "boxes": sum(boxes[i] for i in ids),
                                "images": cat_images[cat]}
    return class_counts, category_counts


def validate_dataset(path, taxonomy, fix=False, check_images=True):
    """Check every image/label pair of a dataset; with fix, quarantine bad ones and clip labels."""
    if not os.path.isdir(path):
        raise DataError("dataset %s does not exist; create it with `data import`" % path)
    report = ValidationReport(dataset=os.path.abspath(path))
    images = yd.dataset_images(path)
    image_stems = {os.path.splitext(os.path.relpath(p, os.path.join(path, "images")))[0] for p in images}
    label_root = os.path.join(path, "labels")
    for lp in _list_txt(label_root):
        stem = os.path.splitext(os.path.relpath(lp, label_root))[0]
        if stem not in image_stems:
            report.missing_images.append(stem)
    seen, kept_ids, to_quarantine, to_rewrite = {}, [], [], []
    for img in images:
        name = os.path.relpath(img, os.path.join(path, "images"))
        reasons, width, height = [], None, None
        if check_images:
            try:
                width, height, digest = inspect_image(img)
                if digest in seen:
                    report.duplicates.append({"name": name, "duplicate_of": seen[digest]})
                    reasons.append("duplicate of %s" % seen[digest])
                else:
                    seen[digest] = name
            except DataError as e:
                reasons.append(str(e))
        lp = yd.label_path_for(img)
        ids, xywhn = np.zeros(0, np.int32), np.zeros((0, 4), np.float32)
        if not os.path.exists(lp):
            reasons.append("no label file %s" % os.path.relpath(lp, path))
        else:
            try:
                ids, xywhn = yd.read_yolo_labels(lp)
            except DataError as e:
                reasons.append(str(e))
        ids, clipped, n_clipped, problems = check_boxes(ids, xywhn, len(taxonomy), width, height)
        reasons.extend(problems)
        if reasons:
            report.bad.append({"name": name, "reasons": reasons})
            to_quarantine.append((img, lp, reasons))
            continue
        report.images += 1
        report.boxes += len(ids)
        report.backgrounds += int(len(ids) == 0)
        report.clipped_boxes += n_clipped
        kept_ids.append(ids)
        if n_clipped:
            to_rewrite.append((lp, ids, clipped))
    unl = os.path.join(path, yd.UNLABELLED_DIR, "images")
    report.unlabelled_images = len(yd.list_images(unl)) if os.path.isdir(unl) else 0
    report.class_counts, report.category_counts = category_table(kept_ids, taxonomy)
    if fix:
        for lp, ids, clipped in to_rewrite:
            yd.write_yolo_labels(lp, ids, clipped)
        report.quarantined = quarantine(path, to_quarantine)
    _log_summary(report)
    return report


def _list_txt(folder):
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found.extend(os.path.join(root, f) for f in sorted(files) if f.endswith(".txt"))
    return found


def quarantine(dataset, items):
    """Move (image, label, reasons) items into dataset/quarantine/ and append reasons.json."""
    if not items:
        return 0
    qdir = os.path.join(dataset, yd.QUARANTINE_DIR)
    listing = []
    for img, lp, reasons in items:
        for src, sub in ((img, "images"), (lp, "labels")):
            if src and os.path.exists(src):
                os.makedirs(os.path.join(qdir, sub), exist_ok=True)
                shutil.move(src, os.path.join(qdir, sub, os.path.basename(src)))
        listing.append({"name": os.path.basename(img), "src": img, "reasons": list(reasons)})
    path = os.path.join(qdir, "reasons.json")
    previous = []
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
    yd._atomic_write(path, json.dumps(previous + listing, indent=1))
    return len(listing)


def _log_summary(report):
    kinds = collections.Counter(r.split(" (")[0].split(":")[0] for b in report.bad for r in b["reasons"])
    if kinds:
        logger.warning("%s: %d bad records (%s)", report.dataset, len(report.bad),
                    ", ".join("%s x%d" % kv for kv in kinds.most_common()))

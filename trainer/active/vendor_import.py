"""Checking a vendor's returned COCO annotations and merging them into a dataset, all or nothing.

Classes are matched by category NAME, never by id: the vendor's category ids
only join annotations to their categories, so a tool that renumbers them
(CVAT exports its own label order) still lands every box on the right class.
Names go through the target taxonomy's lookup (case, '_' and '-' ignored,
aliases honoured); the target is the dataset's own data.yaml when it exists,
else the taxonomy. Categories no annotation uses are ignored (tools export
every label of the project).

Every image listed in the COCO file is imported; one without annotations is a
background (the annotator saw nothing). A box may stick out of its image by
up to CLIP_TOL_PX and is clipped; anything else wrong is a problem. When any
problem is found nothing is merged, and the report names every one.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import os
import tempfile

import numpy as np

from trainer.data import yolo_dataset as yd
from trainer.data.split import default_group_key
from trainer.data.taxonomy import CATEGORIES, TaxonClass, Taxonomy, load_taxonomy
from trainer.data.validate import inspect_image, xyxy_abs_to_xywhn
from trainer.errors import DataError

CLIP_TOL_PX = 1.0   # annotation tools round to whole pixels; one pixel out is rounding, not an error
MIN_SIDE_PX = 1.0


@dataclasses.dataclass
class VendorImportReport:
    coco: str
    images_dir: str | None
    dataset: str
    package: str | None
    images: int = 0
    annotations: int = 0
    backgrounds: int = 0
    clipped_boxes: int = 0
    merged: bool = False
    written: list = dataclasses.field(default_factory=list)
    category_map: dict = dataclasses.field(default_factory=dict)   # vendor category id -> {name, class_id}
    problems: list = dataclasses.field(default_factory=list)       # {kind, message, file_name?, annotation_id?}

    @property
    def ok(self):
        return not self.problems

    def to_dict(self):
        return dict(dataclasses.asdict(self), ok=self.ok)

    def to_text(self):
        state = "merged %d images" % len(self.written) if self.merged else "REJECTED: nothing was merged"
        lines = ["vendor import of %s into %s: %s" % (self.coco, self.dataset, state),
                 "images: %d, annotations: %d, backgrounds: %d, clipped boxes: %d"
                 % (self.images, self.annotations, self.backgrounds, self.clipped_boxes)]
        kinds = collections.Counter(p["kind"] for p in self.problems)
        if kinds:
            counted = ", ".join("%s x%d" % kv for kv in sorted(kinds.items()))
            lines.append("problems: %d (%s)" % (len(self.problems), counted))
        lines.extend("  [%s] %s" % (p["kind"], p["message"]) for p in self.problems)
        return "\n".join(lines) + "\n"


def _problem(kind, message, **where):
    return dict({"kind": kind, "message": message}, **where)


def target_taxonomy(dataset, taxonomy_path=None):
    """The classes to import into: the dataset's data.yaml names when it exists, else the taxonomy."""
    base = load_taxonomy(taxonomy_path)
    yaml_path = os.path.join(dataset, "data.yaml")
    if not os.path.exists(yaml_path):
        return base
    raw = yd.load_yaml_file(yaml_path)
    names = yd.names_from_yaml(raw, yaml_path)
    categories = {int(k): v for k, v in (raw.get("categories") or {}).items()}
    aliases = {c.name: c.aliases for c in base.classes}
    return Taxonomy([TaxonClass(i, n, categories.get(i) if categories.get(i) in CATEGORIES else "general",
                                tuple(aliases.get(n, ()))) for i, n in enumerate(names)])


def check_structure(coco, taxonomy):
    """(images by id, annotations by image id, category map, problems) for the parts of a COCO dict.

    Pure: checks ids, duplicates, references and category names; boxes are checked later against the
    real image sizes.
    """
    if not isinstance(coco, dict) or not all(isinstance(coco.get(k), list) for k in ("images", "annotations")):
        return {}, {}, {}, [_problem("structure", "not a COCO detection file: needs 'images' and 'annotations' "
                                                  "lists and 'categories'")]
    problems = []
    images = _check_images(coco["images"], problems)
    categories = _check_categories(coco.get("categories") or [], taxonomy, problems)
    per_image = _check_annotations(coco["annotations"], images, categories, taxonomy, problems)
    return images, per_image, categories, problems


def _check_images(entries, problems):
    images, names_seen = {}, {}
    for i, img in enumerate(entries):
        if not isinstance(img, dict) or "id" not in img or not img.get("file_name"):
            problems.append(_problem("structure", "images[%d] lacks 'id' or 'file_name'" % i))
        elif img["id"] in images:
            problems.append(_problem("duplicate_image_id", "image id %r is used twice" % (img["id"],)))
        elif img["file_name"] in names_seen:
            problems.append(_problem("duplicate_image", "file_name %r is listed twice (ids %r and %r)"
                                     % (img["file_name"], names_seen[img["file_name"]], img["id"]),
                                     file_name=img["file_name"]))
        else:
            images[img["id"]] = img
            names_seen[img["file_name"]] = img["id"]
    return images


def _check_categories(entries, taxonomy, problems):
    categories = {}
    for i, cat in enumerate(entries):
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            problems.append(_problem("structure", "categories[%d] lacks 'id' or 'name'" % i))
        elif cat["id"] in categories:
            problems.append(_problem("duplicate_category_id", "category id %r is used twice" % (cat["id"],)))
        else:
            categories[cat["id"]] = {"name": str(cat["name"]), "class_id": taxonomy.map_label(str(cat["name"]))}
    return categories


def _check_annotations(entries, images, categories, taxonomy, problems):
    per_image, ann_ids = collections.defaultdict(list), set()
    for i, ann in enumerate(entries):
        if not isinstance(ann, dict) or "id" not in ann:
            problems.append(_problem("structure", "annotations[%d] has no 'id'" % i))
            continue
        aid = ann["id"]
        if aid in ann_ids:
            problems.append(_problem("duplicate_annotation_id", "annotation id %r is used twice" % (aid,),
                                     annotation_id=aid))
            continue
        ann_ids.add(aid)
        if ann.get("image_id") not in images:
            problems.append(_problem("unknown_image", "annotation %r refers to image id %r, which is not listed"
                                     % (aid, ann.get("image_id")), annotation_id=aid))
            continue
        file_name = images[ann["image_id"]]["file_name"]
        cat = categories.get(ann.get("category_id"))
        where = {"annotation_id": aid, "file_name": file_name}
        if cat is None:
            problems.append(_problem("unknown_category", "annotation %r on %s has category_id %r, not in categories"
                                     % (aid, file_name, ann.get("category_id")), **where))
        elif cat["class_id"] is None:
            problems.append(_problem("unknown_category", "annotation %r on %s has category %r, which is not a class "
                                     "of the dataset (%s)" % (aid, file_name, cat["name"], ", ".join(taxonomy.names)),
                                     **where))
        elif ann.get("iscrowd", 0):
            problems.append(_problem("crowd", "annotation %r on %s is a crowd region; draw one box per animal"
                                     % (aid, file_name), **where))
        per_image[ann["image_id"]].append(ann)   # its box is still checked, so every problem is named
    return per_image


def check_box(bbox, width, height, tol_px=CLIP_TOL_PX):
    """(clipped xyxy or None, problem kind or None, clipped?) for one COCO [x, y, w, h] on a width x height image."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox):
        return None, "malformed_box", False
    x, y, w, h = (float(v) for v in bbox)
    if w < MIN_SIDE_PX or h < MIN_SIDE_PX:
        return None, "degenerate_box", False
    x1, y1 = x + w, y + h
    if x < -tol_px or y < -tol_px or x1 > width + tol_px or y1 > height + tol_px:
        return None, "box_outside_image", False
    clipped = [max(x, 0.0), max(y, 0.0), min(x1, float(width)), min(y1, float(height))]
    if clipped[2] - clipped[0] < MIN_SIDE_PX or clipped[3] - clipped[1] < MIN_SIDE_PX:
        return None, "degenerate_box", False
    return clipped, None, clipped != [x, y, x1, y1]


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _find_image(images_dir, file_name, by_basename):
    path = os.path.join(images_dir, *file_name.split("/"))
    if os.path.isfile(path):
        return path
    return by_basename.get(os.path.basename(file_name))


def dataset_name(file_name):
    """The flat name an image gets in the dataset: sub-folders joined with '__'."""
    return "__".join(p for p in file_name.replace("\\", "/").split("/") if p)


def _check_image(img, images_dir, by_basename, package_listing, dataset):
    """(path, (width, height), problems) for one listed image."""
    name = img["file_name"]
    path = _find_image(images_dir, name, by_basename) if images_dir else None
    if path is None:
        return None, None, [_problem("missing_image", "image %s is not under %s" % (name, images_dir), file_name=name)]
    try:
        width, height, _ = inspect_image(path)
    except DataError as e:
        return None, None, [_problem("unreadable_image", str(e), file_name=name)]
    problems, digest = [], None
    if package_listing is not None:
        entry = package_listing.get(name)
        digest = _sha256(path)
        if entry is None:
            problems.append(_problem("not_in_package", "image %s was not sent in the package" % name, file_name=name))
        elif entry["sha256"] != digest:
            problems.append(_problem("checksum_mismatch", "image %s differs from the one sent in the package "
                                     "(sha256 %s..., sent %s...)" % (name, digest[:12], entry["sha256"][:12]),
                                     file_name=name))
    for key, actual in (("width", width), ("height", height)):
        if img.get(key) not in (None, 0) and img.get(key) != actual:
            problems.append(_problem("size_mismatch", "image %s: COCO %s %r but the file is %d px"
                                     % (name, key, img.get(key), actual), file_name=name))
    existing = os.path.join(dataset, "images", dataset_name(name))
    if os.path.isfile(existing) and _sha256(existing) == (digest or _sha256(path)):
        problems.append(_problem("already_in_dataset", "image %s is already in the dataset as %s"
                                 % (name, os.path.relpath(existing, dataset)), file_name=name))
    return path, (width, height), problems


def build_records(coco, images_dir, dataset, taxonomy, package_listing=None, origin=None):
    """(Records, report fields, problems) from a COCO dict; Records only mean something when problems is empty."""
    images, per_image, categories, problems = check_structure(coco, taxonomy)
    by_basename = {os.path.basename(p): p for p in yd.list_images(images_dir)} if images_dir else {}
    records, counts = [], collections.Counter()
    for image_id, img in images.items():
        path, size, image_problems = _check_image(img, images_dir, by_basename, package_listing, dataset)
        problems.extend(image_problems)
        if size is None:
            continue
        boxes, ids = [], []
        for ann in per_image.get(image_id, []):
            xyxy, kind, clipped = check_box(ann.get("bbox"), *size)
            if kind:
                problems.append(_problem(kind, "annotation %r on %s: bbox %r on a %dx%d image"
                                         % (ann["id"], img["file_name"], ann.get("bbox"), size[0], size[1]),
                                         annotation_id=ann["id"], file_name=img["file_name"]))
                continue
            class_id = categories.get(ann.get("category_id"), {}).get("class_id")
            if class_id is None or ann.get("iscrowd", 0):
                continue   # already a problem: nothing will be merged
            counts["clipped"] += int(clipped)
            boxes.append(xyxy)
            ids.append(class_id)
        counts["annotations"] += len(ids)
        counts["backgrounds"] += int(not ids)
        meta = {"source": "active", "origin": origin, "group": default_group_key(img["file_name"]),
                "vendor_file_name": img["file_name"]}
        records.append(yd.Record(dataset_name(img["file_name"]), path, np.asarray(ids, np.int32),
                                 xyxy_abs_to_xywhn(np.asarray(boxes, np.float64).reshape(-1, 4), *size), meta))
    fields = {"images": len(images), "annotations": counts["annotations"], "backgrounds": counts["backgrounds"],
              "clipped_boxes": counts["clipped"],
              "category_map": {str(k): v for k, v in categories.items()}}
    return records, fields, problems


def import_vendor(coco_path, images_dir, dataset, package=None, taxonomy_path=None):
    """Validate a returned COCO file and merge it into the dataset only when nothing is wrong."""
    from trainer.active.package import extract_images, read_package

    try:
        with open(coco_path) as f:
            coco = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError("cannot read COCO file %s: %s" % (coco_path, e)) from e
    taxonomy = target_taxonomy(dataset, taxonomy_path)
    listing = None
    report = VendorImportReport(os.path.abspath(coco_path), images_dir and os.path.abspath(images_dir),
                                os.path.abspath(dataset), package and os.path.abspath(package))
    scratch = None
    if package:
        manifest, _ = read_package(package)
        listing = {e["file_name"]: e for e in manifest["images"]}
        if not images_dir:  # the images the vendor saw are the package's own
            scratch = tempfile.TemporaryDirectory(prefix="reefwatch-vendor-")
            images_dir = extract_images(package, scratch.name)
    if not images_dir:
        raise DataError("pass --images (the folder of annotated images) or --package to read them from")
    try:
        records, fields, report.problems = build_records(coco, images_dir, dataset, taxonomy, listing,
                                                         origin=os.path.basename(coco_path))
        for key, value in fields.items():
            setattr(report, key, value)
        if report.ok:
            report.written = yd.merge_into(dataset, records, taxonomy)
            report.merged = True
    finally:
        if scratch is not None:
            scratch.cleanup()
    return report


def write_report(report, folder, stem):
    """Write <stem>.json and <stem>.txt into folder; returns their paths."""
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, stem + ".json"), os.path.join(folder, stem + ".txt")]
    for path, text in zip(paths, (json.dumps(report.to_dict(), indent=1, default=str), report.to_text())):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    return paths

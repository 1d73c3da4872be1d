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
problem is found nothing is merged, and the report names every fault of every
entry with where it is (`images[3].file_name`, `annotations[17].bbox`). A
file_name must stay inside the images folder: no '..', absolute path or symlink out.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import os
import re
import reprlib
import tempfile

import numpy as np

from trainer.data import yolo_dataset as yd
from trainer.data.split import default_group_key
from trainer.data.taxonomy import CATEGORIES, TaxonClass, Taxonomy, load_taxonomy
from trainer.data.validate import inspect_image, xyxy_abs_to_xywhn
from trainer.errors import DataError

CLIP_TOL_PX = 1.0   # annotation tools round to whole pixels; one pixel out is rounding, not an error
MIN_SIDE_PX = 1.0
MAX_JSON_DEPTH = 100    # a COCO detection file is 5 levels deep; the reader gives up far deeper than this
_short = reprlib.Repr()   # values in messages: a 10 MB bbox or a 900-level list stays one short line
_short.maxstring, _short.maxother, _short.maxlevel, _short.maxlist, _short.maxdict = 60, 60, 2, 6, 4
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{},:]')


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
    if not isinstance(raw, dict):
        raise DataError("%s: expected a mapping with names (a dataset's data.yaml)" % yaml_path)
    names = yd.names_from_yaml(raw, yaml_path)
    categories = raw.get("categories") or {}
    try:
        categories = {int(k): v for k, v in categories.items()}
    except (AttributeError, TypeError, ValueError) as e:
        raise DataError("%s: categories = %s; expected {class id: category}, e.g. {0: critical}"
                        % (yaml_path, _short.repr(categories))) from e
    aliases = {c.name: c.aliases for c in base.classes}
    return Taxonomy([TaxonClass(i, n, categories.get(i) if categories.get(i) in CATEGORIES else "general",
                                tuple(aliases.get(n, ()))) for i, n in enumerate(names)])


def check_structure(coco, taxonomy):
    """(images by id, annotations by image id, category map, problems) for the parts of a COCO dict.

    Pure: checks types, ids, duplicates, references, file names, names and box shapes (boxes meet the
    image sizes later). images: id -> (index, entry); per_image: id -> [(index, annotation, faultless?)].
    """
    if not isinstance(coco, dict) or not all(isinstance(coco.get(k), list) for k in ("images", "annotations")):
        return {}, {}, {}, [_problem("structure", "not a COCO detection file: needs 'images' and 'annotations' "
                                                  "lists and 'categories'")]
    problems = []
    images, image_ids = _check_images(coco["images"], problems)
    categories, category_ids = _check_categories(coco.get("categories", []), taxonomy, problems)
    per_image = _check_annotations(coco["annotations"], images, image_ids, categories, category_ids, taxonomy,
                                   problems)
    return images, per_image, categories, problems


def _is_id(value):
    """COCO ids are integers; strings are accepted too (some tools write "17")."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _id_faults(at, entry, key, what, seen=None, duplicate_kind=None):
    """Faults of entry[key] as an id: missing, not an id, or used before (then it joins `seen`)."""
    if key not in entry:
        return [("structure", "%s.%s is missing; expected %s" % (at, key, what))]
    if not _is_id(entry[key]):
        return [("bad_id", "%s.%s = %s: expected %s" % (at, key, _short.repr(entry[key]), what))]
    if seen is not None and entry[key] in seen:
        return [(duplicate_kind, "%s.%s: %r is used twice" % (at, key, entry[key]))]
    if seen is not None:
        seen.add(entry[key])
    return []


def _objects(entries, name, needs, problems):
    """(index, entry) for the objects of a COCO list; each entry that is no object is a problem."""
    for i, entry in enumerate(entries):
        if isinstance(entry, dict):
            yield i, entry
        else:
            at = "%s[%d]" % (name, i)
            problems.append(_problem("structure", "%s = %s: expected an object with %s"
                                     % (at, _short.repr(entry), needs), at=at))


def file_name_fault(name):
    """Why a COCO file_name cannot name an image inside the images folder, or None."""
    if not isinstance(name, str) or not name.strip():
        return "expected the image's path inside the images folder"
    if any(ord(c) < 32 for c in name):
        return "holds control characters; expected a plain path"
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return "an absolute path; expected a path relative to the images folder"
    if ".." in name.replace("\\", "/").split("/"):
        return "climbs out of the images folder ('..'); expected a path inside it"
    return None


def _check_images(entries, problems):
    """(id -> (index, entry) of the faultless images, every id seen); all faults of each entry are reported."""
    images, seen_ids, names_seen = {}, set(), {}
    for i, img in _objects(entries, "images", "id and file_name", problems):
        at, name = "images[%d]" % i, img.get("file_name")
        faults = _id_faults(at, img, "id", "an integer image id", seen_ids, "duplicate_image_id")
        if file_name_fault(name):
            kind = "bad_file_name" if isinstance(name, str) and name.strip() else "structure"
            shown = repr(name) if isinstance(name, str) and len(name) < 300 else _short.repr(name)
            faults.append((kind, "%s.file_name = %s: %s" % (at, shown, file_name_fault(name))))
        elif name in names_seen:
            faults.append(("duplicate_image", "%s.file_name %r is listed twice (also %s)"
                           % (at, name, names_seen[name])))
        else:
            names_seen[name] = at
        faults.extend(("structure", "%s.%s = %s: expected a whole number of pixels"
                       % (at, key, _short.repr(img[key]))) for key in ("width", "height")
                      if img.get(key) is not None and not (type(img[key]) is int and img[key] >= 0))
        where = {"file_name": name} if isinstance(name, str) else {}
        problems.extend(_problem(kind, message, at=at, **where) for kind, message in faults)
        if not faults:
            images[img["id"]] = (i, img)
    return images, seen_ids


def _check_categories(entries, taxonomy, problems):
    """(id -> {name, class_id} of the faultless categories, every id seen)."""
    categories, seen_ids = {}, set()
    if not isinstance(entries, list):
        problems.append(_problem("structure", "categories = %s: expected a list of {id, name}"
                                 % _short.repr(entries), at="categories"))
        entries = []
    for i, cat in _objects(entries, "categories", "id and name", problems):
        at = "categories[%d]" % i
        faults = _id_faults(at, cat, "id", "an integer category id", seen_ids, "duplicate_category_id")
        if not isinstance(cat.get("name"), str) or not cat["name"].strip():
            faults.append(("structure", "%s.name = %s: expected the class name" % (at, _short.repr(cat.get("name")))))
        problems.extend(_problem(kind, message, at=at) for kind, message in faults)
        if not faults:
            categories[cat["id"]] = {"name": cat["name"], "class_id": taxonomy.map_label(cat["name"])}
    return categories, seen_ids


def _check_annotations(entries, images, image_ids, categories, category_ids, taxonomy, problems):
    per_image, ann_ids = collections.defaultdict(list), set()
    for i, ann in _objects(entries, "annotations", "id, image_id, category_id and bbox", problems):
        at = "annotations[%d]" % i
        image = images.get(ann["image_id"]) if _is_id(ann.get("image_id")) else None
        on = " on %s" % image[1]["file_name"] if image else ""
        faults = _id_faults(at, ann, "id", "an integer annotation id", ann_ids, "duplicate_annotation_id")
        faults += _id_faults(at, ann, "image_id", "the id of a listed image") or [
            ("unknown_image", "%s.image_id = %r: no image has this id" % (at, ann["image_id"]))
            for _ in [0] if ann["image_id"] not in image_ids]   # a listed but faulty image is a problem already
        faults += _id_faults(at, ann, "category_id", "the id of a listed category") or _category_faults(
            at, on, ann["category_id"], categories, category_ids, taxonomy)
        if ann.get("iscrowd", 0):
            faults.append(("crowd", "%s%s is a crowd region; draw one box per animal" % (at, on)))
        box_kind = check_box(ann.get("bbox"), math.inf, math.inf)[1]
        if box_kind:
            faults.append((box_kind, "%s.bbox = %s%s: %s" % (at, _short.repr(ann.get("bbox")), on,
                                                              BOX_FAULTS[box_kind])))
        where = dict({"file_name": image[1]["file_name"]} if image else {}, at=at)
        if _is_id(ann.get("id")):
            where["annotation_id"] = ann["id"]
        problems.extend(_problem(kind, message, **where) for kind, message in faults)
        if image is not None:   # its box is still checked against the image, so every problem is named
            per_image[ann["image_id"]].append((i, ann, not faults))
    return per_image


def _category_faults(at, on, category_id, categories, category_ids, taxonomy):
    if category_id not in categories:   # one listed but faulty is a problem already
        return [] if category_id in category_ids else [
            ("unknown_category", "%s.category_id = %r%s: not in categories" % (at, category_id, on))]
    if categories[category_id]["class_id"] is None:
        return [("unknown_category", "%s%s has category %r, which is not a class of the dataset (%s)"
                 % (at, on, categories[category_id]["name"], ", ".join(taxonomy.names)))]
    return []


BOX_FAULTS = {"malformed_box": "expected [x, y, width, height], four finite numbers",
              "degenerate_box": "expected width and height of at least %g px" % MIN_SIDE_PX,
              "box_outside_image": "the box lies outside the image (more than %g px)" % CLIP_TOL_PX}


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


def _inside(path, folder):
    """Whether path, symlinks resolved, lies inside folder (symlinks resolved too)."""
    real, root = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([real, root]) == root


def dataset_name(file_name):
    """The flat name an image gets in the dataset: sub-folders joined with '__'."""
    return "__".join(p for p in file_name.replace("\\", "/").split("/") if p)


def _check_image(img, at, images_dir, by_basename, package_listing, dataset):
    """(path, (width, height), problems) for one listed image (`at`: where it is listed, e.g. images[3])."""
    name = img["file_name"]
    path = _find_image(images_dir, name, by_basename) if images_dir else None
    if path is None:
        return None, None, [_problem("missing_image", "%s: image %s is not under %s" % (at, name, images_dir),
                                     file_name=name, at=at)]
    if not _inside(path, images_dir):
        return None, None, [_problem("outside_images_folder", "%s.file_name %r resolves to %s, outside the images "
                                     "folder %s (a symlink?); copy the image into it"
                                     % (at, name, os.path.realpath(path), images_dir), file_name=name, at=at)]
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
    for image_id, (index, img) in images.items():
        path, size, image_problems = _check_image(img, "images[%d]" % index, images_dir, by_basename,
                                                  package_listing, dataset)
        problems.extend(image_problems)
        if size is None:
            continue
        boxes, ids = [], []
        for ann_index, ann, usable in per_image.get(image_id, []):
            if check_box(ann.get("bbox"), math.inf, math.inf)[1]:
                continue   # a malformed box is a problem already
            xyxy, kind, clipped = check_box(ann["bbox"], *size)
            if kind:
                at = "annotations[%d].bbox" % ann_index
                problems.append(_problem(kind, "%s = %s on %s: %s (a %dx%d image)"
                                         % (at, _short.repr(ann["bbox"]), img["file_name"], BOX_FAULTS[kind],
                                            size[0], size[1]),
                                         annotation_id=ann["id"], file_name=img["file_name"], at=at))
                continue
            if not usable:
                continue   # already a problem: nothing will be merged
            class_id = categories[ann["category_id"]]["class_id"]
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
              "clipped_boxes": counts["clipped"], "category_map": {str(k): v for k, v in categories.items()}}
    return records, fields, problems


def read_coco(path):
    """(COCO dict, None), or (None, a problem naming where) when it nests too deeply to read; DataError else."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        return json.loads(text), None
    except RecursionError:
        pass    # text is read: find where it nests too deeply, outside the except so the stack is unwound
    except (OSError, ValueError) as e:  # ValueError: bad JSON or not UTF-8
        raise DataError("cannot read COCO file %s: %s; expected the COCO JSON the annotation tool exported"
                        % (path, e)) from e
    where = nesting_path(text, MAX_JSON_DEPTH)
    return None, _problem("too_deep", "%s nests more than %d levels deep (a COCO file is 5): export the "
                                      "annotations again" % (where or "the file", MAX_JSON_DEPTH), at=where)


def nesting_path(text, limit):
    """Where JSON text first nests deeper than `limit` ('annotations[3].segmentation[0]...'), by a token scan."""
    stack, expect_key = [], False   # per open list: its item index (int); per open object: its key (str)
    for token in (m.group() for m in _JSON_TOKEN.finditer(text)):
        if token in "[{" and len(stack) >= limit:
            shown = "".join("[%d]" % k if isinstance(k, int) else ".%s" % k for k in stack[:6]).lstrip(".")
            return (shown or "$") + ("... (%d levels)" % len(stack) if len(stack) > 6 else "")
        if token in "[{":
            stack.append(0 if token == "[" else "")
        elif token in "]}" and stack:
            stack.pop()
        elif token == "," and stack:
            stack[-1] = stack[-1] + 1 if isinstance(stack[-1], int) else stack[-1]
        elif expect_key:
            stack[-1] = token[1:-1]
        expect_key = token in "{," and bool(stack) and isinstance(stack[-1], str)
    return None


def import_vendor(coco_path, images_dir, dataset, package=None, taxonomy_path=None):
    """Validate a returned COCO file and merge it into the dataset only when nothing is wrong."""
    from trainer.active.package import extract_images, read_package

    coco, too_deep = read_coco(coco_path)
    if os.path.isfile(dataset):
        raise DataError("--into %s is a file; expected a dataset folder" % dataset)
    taxonomy = target_taxonomy(dataset, taxonomy_path)
    listing = scratch = None
    report = VendorImportReport(os.path.abspath(coco_path), images_dir and os.path.abspath(images_dir),
                                os.path.abspath(dataset), package and os.path.abspath(package))
    if package:
        manifest, _ = read_package(package)
        listing = {e["file_name"]: e for e in manifest["images"]}
        if not images_dir:  # the images the vendor saw are the package's own
            scratch = tempfile.TemporaryDirectory(prefix="reefwatch-vendor-")
            images_dir = extract_images(package, scratch.name)
    if not images_dir or not os.path.isdir(images_dir):
        raise DataError("pass --images (the folder of annotated images, %s) or --package to read them from"
                        % ("not given" if not images_dir else "%s does not exist" % images_dir))
    try:
        records, fields, report.problems = build_records(coco, images_dir, dataset, taxonomy, listing,
                                                         origin=os.path.basename(coco_path))
        report.problems = [too_deep] if too_deep else report.problems
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
        # backslashreplace: a file name that is not UTF-8 (surrogate-escaped bytes) is written as \udcNN.
        with open(tmp, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write(text)
        os.replace(tmp, path)
    return paths

"""YOLO-format datasets: label files, data.yaml, and the all-or-nothing merge.

A ReefWatch dataset folder looks like::

    DATASET/data.yaml            path, train, val, test, nc, names, categories
    DATASET/images/<name>.jpg    one label file per image under labels/
    DATASET/labels/<name>.txt    `class cx cy w h` normalised; empty = background
    DATASET/meta.json            image name -> {source, group, origin}
    DATASET/unlabelled/images/   images without boxes (SSL only)
    DATASET/quarantine/          rejected records and reasons.json

Ultralytics finds a label by replacing the last `images` folder of the image
path with `labels`, so that pairing is kept everywhere.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile

import numpy as np
import yaml

from edge import images as edge_images
from edge.atomic_file import write_atomically
from trainer.errors import DataError

logger = logging.getLogger(__name__)

IMAGE_EXTS = edge_images.IMAGE_EXTENSIONS  # one list for edge and trainer
META_FILE = "meta.json"
QUARANTINE_DIR = "quarantine"
UNLABELLED_DIR = "unlabelled"


@dataclasses.dataclass
class Record:
    """One image and its boxes on their way into a dataset.

    `image_src` is where the image file is now (None when it is missing);
    `reasons` non-empty sends the record to quarantine instead of the dataset.
    """

    name: str
    image_src: str | None
    class_ids: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int32))
    xywhn: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 4), np.float32))
    meta: dict = dataclasses.field(default_factory=dict)
    reasons: list = dataclasses.field(default_factory=list)
    unlabelled: bool = False  # no boxes known at all (SSL only), unlike a background


def read_yolo_labels(path):
    """(class_ids int32 (N,), xywhn float32 (N,4)) from a YOLO txt; polygons become boxes."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise DataError("cannot read label file %s: %s" % (path, e)) from e
    ids, boxes = [], []
    for lineno, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        try:
            values = [float(p) for p in parts]
        except ValueError as e:
            raise DataError("%s:%d: expected 'class cx cy w h' numbers, got %r" % (path, lineno, line)) from e
        if len(values) == 5:
            box = values[1:]
        elif len(values) >= 7 and len(values) % 2 == 1:  # segment polygon: class x1 y1 x2 y2 ...
            xs, ys = values[1::2], values[2::2]
            x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
            box = [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]
        else:
            raise DataError("%s:%d: expected 5 columns 'class cx cy w h' (or a polygon), got %d"
                            % (path, lineno, len(values)))
        if values[0] != int(values[0]):
            raise DataError("%s:%d: class id %r is not an integer" % (path, lineno, parts[0]))
        ids.append(int(values[0]))
        boxes.append(box)
    return np.asarray(ids, np.int32).reshape(-1), np.asarray(boxes, np.float32).reshape(-1, 4)


def format_yolo_labels(class_ids, xywhn):
    class_ids = np.asarray(class_ids).reshape(-1)
    xywhn = np.asarray(xywhn, np.float64).reshape(-1, 4)
    if len(class_ids) != len(xywhn):
        raise DataError("write_yolo_labels: %d class ids but %d boxes" % (len(class_ids), len(xywhn)))
    return "".join("%d %.6f %.6f %.6f %.6f\n" % (int(c), *b) for c, b in zip(class_ids, xywhn))


def write_yolo_labels(path, class_ids, xywhn):
    """Write a YOLO txt atomically; no boxes writes an empty file (a background)."""
    text = format_yolo_labels(class_ids, xywhn)
    _atomic_write(path, text)


def _atomic_write(path, text):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomically(path, text)


def label_path_for(image_path):
    """The label file Ultralytics pairs with an image: last /images/ -> /labels/, .txt."""
    head, tail = os.path.split(os.path.splitext(image_path)[0])
    parts = head.split(os.sep)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    else:
        return os.path.join(head, tail + ".txt")
    return os.path.join(os.sep.join(parts), tail + ".txt")


def list_images(folder):
    """Sorted paths of the regular image files directly in (or below) a folder (edge.images.list_images)."""
    return edge_images.list_images(folder, recursive=True, extensions=IMAGE_EXTS)


def names_from_yaml(raw, yaml_path):
    """Class names as a list indexed by id, from a names list or {id: name} dict."""
    names = raw.get("names")
    if isinstance(names, list):
        return [str(n) for n in names]
    if isinstance(names, dict):
        try:
            table = {int(k): str(v) for k, v in names.items()}
        except ValueError as e:
            raise DataError("%s: names dict keys must be class ids, got %s" % (yaml_path, list(names))) from e
        if sorted(table) != list(range(len(table))):
            raise DataError("%s: names ids must be 0..%d without gaps" % (yaml_path, len(table) - 1))
        return [table[i] for i in range(len(table))]
    raise DataError("%s: needs 'names:' as a list or an {id: name} dict" % yaml_path)


def load_yaml_file(yaml_path, what="yaml file"):
    """The parsed contents of a UTF-8 yaml file ({} when empty); DataError naming the file and the fault otherwise.

    The one yaml reader of trainer/data and the stages: every way a file can
    be unreadable (missing, a folder, not UTF-8, not YAML, nested past the
    recursion limit, an integer past Python's digit limit) is one line.
    """
    from trainer.config import yaml_problem

    if os.path.isdir(yaml_path):
        raise DataError("cannot read %s %s: it is a folder; expected a file" % (what, yaml_path))
    try:
        with open(yaml_path, encoding="utf-8") as f:
            return yaml.safe_load(f) or {}
    except OSError as e:
        raise DataError("cannot read %s %s: %s" % (what, yaml_path, e.strerror or e)) from e
    except UnicodeDecodeError as e:
        raise DataError("cannot read %s %s: not UTF-8 text (byte 0x%02x at offset %d); save it as UTF-8"
                        % (what, yaml_path, e.object[e.start], e.start)) from e
    except yaml.YAMLError as e:
        raise DataError("cannot read %s %s: not valid YAML: %s" % (what, yaml_path, yaml_problem(e))) from e
    except ValueError as e:  # PyYAML's int() refuses more than 4,300 digits
        raise DataError("cannot read %s %s: it holds a number too long to read (%s)"
                        % (what, yaml_path, str(e).split(":")[0])) from e
    except RecursionError:  # PyYAML composes recursively; from None: its 1,000 frames say nothing more
        raise DataError("cannot read %s %s: it is nested too deeply; expected a few levels of mappings and lists"
                        % (what, yaml_path)) from None


def read_names(yaml_path):
    """Class names, indexed by id, of a data.yaml (no split entries needed)."""
    raw = load_yaml_file(yaml_path)
    if not isinstance(raw, dict):
        raise DataError("%s: expected a mapping with names" % yaml_path)
    return names_from_yaml(raw, yaml_path)


def read_data_yaml(yaml_path):
    """(names, {split: [image paths]}) of a YOLO data.yaml; paths relative to `path` or its folder."""
    raw = load_yaml_file(yaml_path)
    if not isinstance(raw, dict):
        raise DataError("%s: expected a mapping with train/val and names" % yaml_path)
    names = names_from_yaml(raw, yaml_path)
    here = os.path.dirname(os.path.abspath(yaml_path))
    root = raw.get("path") or here
    root = root if os.path.isabs(root) else os.path.normpath(os.path.join(here, root))
    if not os.path.isdir(root):  # a moved dataset: fall back to the yaml's own folder
        root = here
    splits = {}
    for split in ("train", "val", "test"):
        entries = raw.get(split)
        if not entries:
            continue
        images = []
        for entry in entries if isinstance(entries, list) else [entries]:
            images.extend(_resolve_entry(str(entry), root, here, yaml_path))
        splits[split] = images
    if not splits:
        raise DataError("%s: no train/val/test entries; expected e.g. 'train: train/images'" % yaml_path)
    return names, splits


def _resolve_entry(entry, root, here, yaml_path):
    for base in (root, here):
        path = entry if os.path.isabs(entry) else os.path.normpath(os.path.join(base, entry))
        if os.path.isdir(path):
            return list_images(path)
        if os.path.isfile(path) and path.endswith(".txt"):
            return _read_image_list(path)
    raise DataError("%s: split entry %r is neither a folder nor an image list under %s" % (yaml_path, entry, root))


def _read_image_list(path):
    parent = os.path.dirname(path)
    with open(path) as f:
        lines = [x.strip() for x in f if x.strip()]
    return [os.path.normpath(os.path.join(parent, x)) if not os.path.isabs(x) else x for x in lines]


def data_yaml_text(root, names, categories, train="images", val="images", test=None):
    """data.yaml for Ultralytics plus `categories:` (id -> critical/important/general)."""
    body = {"path": os.path.abspath(root), "train": train, "val": val, "test": test,
            "nc": len(names), "names": {i: n for i, n in enumerate(names)},
            "categories": {int(k): v for k, v in categories.items()}}
    return yaml.safe_dump(body, sort_keys=False)


def write_data_yaml(folder, taxonomy, train="images", val="images", test=None):
    path = os.path.join(folder, "data.yaml")
    _atomic_write(path, data_yaml_text(folder, taxonomy.names, taxonomy.category_of_ids(), train, val, test))
    return path


def read_meta(dataset):
    path = os.path.join(dataset, META_FILE)
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise DataError("cannot read %s: %s (delete it to drop the metadata)" % (path, e)) from e


def dataset_images(dataset):
    """Labelled image paths of a ReefWatch dataset folder (images/)."""
    folder = os.path.join(dataset, "images")
    if not os.path.isdir(folder):
        raise DataError("%s has no images/ folder; expected a dataset made by `data import`" % dataset)
    return list_images(folder)


def merge_into(dataset, records, taxonomy):
    """Add records to a dataset (created when absent) all-or-nothing; returns names written.

    Everything is staged in a temporary folder beside the dataset first. A new
    dataset is renamed into place in one step; for an existing one the staged
    files are moved in and moved back out again if any move fails. Records with
    reasons go to quarantine/ with reasons.json.
    """
    dataset = os.path.abspath(dataset)
    parent = os.path.dirname(dataset)
    os.makedirs(parent, exist_ok=True)
    stage = tempfile.mkdtemp(dir=parent, prefix=".%s.staging-" % os.path.basename(dataset))
    try:
        existing = set(os.listdir(os.path.join(dataset, "images"))) if os.path.isdir(
            os.path.join(dataset, "images")) else set()
        written = _stage_records(stage, records, existing, read_meta(dataset), dataset)
        if not os.path.exists(dataset):
            write_data_yaml(stage, taxonomy)
            _fix_yaml_path(stage, dataset, taxonomy)
            os.rename(stage, dataset)
            return written
        _move_in(stage, dataset)
        if not os.path.exists(os.path.join(dataset, "data.yaml")):
            write_data_yaml(dataset, taxonomy)
        return written
    finally:
        if os.path.exists(stage):
            shutil.rmtree(stage)


def _fix_yaml_path(stage, final, taxonomy):
    _atomic_write(os.path.join(stage, "data.yaml"),
                  data_yaml_text(final, taxonomy.names, taxonomy.category_of_ids()))


def _unique_name(name, taken):
    stem, ext = os.path.splitext(name)
    candidate, n = name, 1
    while candidate in taken:
        candidate = "%s_%d%s" % (stem, n, ext)
        n += 1
    taken.add(candidate)
    return candidate


def _stage_records(stage, records, existing, meta, dataset):
    taken, quarantined = set(existing), []
    for sub in ("images", "labels"):  # present even when every record is unlabelled or bad
        os.makedirs(os.path.join(stage, sub), exist_ok=True)
    q_taken = set(os.listdir(os.path.join(dataset, QUARANTINE_DIR, "images"))) if os.path.isdir(
        os.path.join(dataset, QUARANTINE_DIR, "images")) else set()
    written = []
    for rec in records:
        if rec.reasons:
            top = os.path.join(stage, QUARANTINE_DIR)
            name = _unique_name(rec.name, q_taken)
            quarantined.append({"name": name, "src": rec.image_src, "reasons": list(rec.reasons)})
        elif rec.unlabelled:
            top = os.path.join(stage, UNLABELLED_DIR)
            name = _unique_name(rec.name, taken)
        else:
            top = stage
            name = _unique_name(rec.name, taken)
            meta[name] = dict(rec.meta)
            written.append(name)
        if rec.image_src and os.path.isfile(rec.image_src):
            os.makedirs(os.path.join(top, "images"), exist_ok=True)
            shutil.copyfile(rec.image_src, os.path.join(top, "images", name))
        if not rec.unlabelled:  # the stage is private: no per-file atomic write needed
            os.makedirs(os.path.join(top, "labels"), exist_ok=True)
            with open(os.path.join(top, "labels", os.path.splitext(name)[0] + ".txt"), "w") as f:
                f.write(format_yolo_labels(rec.class_ids, rec.xywhn))
    if quarantined:
        old = os.path.join(dataset, QUARANTINE_DIR, "reasons.json")
        previous = []
        if os.path.exists(old):
            with open(old) as f:
                previous = json.load(f)
        _atomic_write(os.path.join(stage, QUARANTINE_DIR, "reasons.json"),
                      json.dumps(previous + quarantined, indent=1))
    _atomic_write(os.path.join(stage, META_FILE), json.dumps(meta, indent=0, sort_keys=True))
    return written


def _move_in(stage, dataset):
    """Move every staged file into the dataset; undo all moves if one fails."""
    moves = []
    replaced = {}
    try:
        for root, _dirs, files in os.walk(stage):
            for f in files:
                src = os.path.join(root, f)
                dst = os.path.join(dataset, os.path.relpath(src, stage))
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                if os.path.exists(dst):  # only meta.json / reasons.json, which were merged
                    backup = src + ".old"
                    os.replace(dst, backup)
                    replaced[dst] = backup
                os.replace(src, dst)
                moves.append((src, dst))
    except OSError as e:
        for src, dst in reversed(moves):
            os.replace(dst, src)
        for dst, backup in replaced.items():
            os.replace(backup, dst)
        raise DataError("merging into %s failed and was undone: %s (check free space and permissions)"
                        % (dataset, e)) from e

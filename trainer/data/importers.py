"""Import COCO, YOLO, VOC and DeepFish sources into one dataset in project class ids.

`import_dataset(fmt, src, out, taxonomy)` reads a source into raw items, maps
its labels through the taxonomy, checks every box and image, and merges the
result into `out` all-or-nothing (see yolo_dataset.merge_into). Records with an
unmapped label, a bad box, or a missing, unreadable or duplicate image go to
quarantine/ with their reasons; the ImportReport counts all of it.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import glob
import logging
import os

import numpy as np

from trainer.data import importers_coco, validate
from trainer.data import yolo_dataset as yd
from trainer.data.split import default_group_key
from trainer.errors import DataError

logger = logging.getLogger(__name__)

SSL_ONLY_NOTE = "no boxes: SSL only"


@dataclasses.dataclass
class RawItem:
    """One source image before label mapping; boxes either normalised or absolute."""

    name: str
    image_src: str | None
    labels: list
    xywhn: np.ndarray | None = None
    xyxy: np.ndarray | None = None
    width: int = 0
    height: int = 0
    meta: dict = dataclasses.field(default_factory=dict)
    reasons: list = dataclasses.field(default_factory=list)
    unlabelled: bool = False


@dataclasses.dataclass
class ImportReport:
    format: str
    src: str
    out: str
    source: str | None
    items: int = 0
    imported: int = 0
    boxes: int = 0
    backgrounds: int = 0
    clipped_boxes: int = 0
    unlabelled: int = 0
    unmapped: dict = dataclasses.field(default_factory=dict)   # source label -> boxes
    quarantined: list = dataclasses.field(default_factory=list)  # {name, reasons}
    missing_images: list = dataclasses.field(default_factory=list)
    duplicates: list = dataclasses.field(default_factory=list)  # {name, duplicate_of}
    class_counts: dict = dataclasses.field(default_factory=dict)
    category_counts: dict = dataclasses.field(default_factory=dict)
    notes: list = dataclasses.field(default_factory=list)

    def to_dict(self):
        return dataclasses.asdict(self)


class ImageFinder:
    """Finds an image by relative path or by file name under some roots (indexed once)."""

    def __init__(self, roots):
        self.roots = [r for r in roots if r and os.path.isdir(r)]
        self._index = None

    def find(self, file_name):
        for root in self.roots:
            path = os.path.join(root, file_name)
            if os.path.isfile(path):
                return path
        if self._index is None:
            self._index = {}
            for root in self.roots:
                for p in yd.list_images(root):
                    self._index.setdefault(os.path.basename(p), p)
        return self._index.get(os.path.basename(file_name))


def read_yolo_source(src, images_dir=None):
    """Items of a YOLO folder: src is the data.yaml or the folder holding it."""
    yaml_path = src if os.path.isfile(src) else os.path.join(src, "data.yaml")
    if not os.path.isfile(yaml_path):
        found = sorted(glob.glob(os.path.join(src, "*.yaml")))
        if not found:
            raise DataError("%s: no data.yaml; a YOLO import needs the dataset's data.yaml (names, train, val)" % src)
        yaml_path = found[0]
    names, splits = yd.read_data_yaml(yaml_path)
    root = os.path.dirname(os.path.abspath(yaml_path))
    items = []
    for split, images in splits.items():
        for img in images:
            lp = yd.label_path_for(img)
            reasons, labels, xywhn = [], [], np.zeros((0, 4), np.float32)
            if not os.path.exists(lp):
                reasons.append("no label file %s (an empty file marks a background)" % lp)
            else:
                try:
                    ids, xywhn = yd.read_yolo_labels(lp)
                    bad = sorted({int(i) for i in ids if not 0 <= i < len(names)})
                    if bad:
                        reasons.append("unknown class id %s in %s (data.yaml has %d names)" % (bad, lp, len(names)))
                        ids = np.zeros(0, np.int32)
                        xywhn = np.zeros((0, 4), np.float32)
                    labels = [names[i] for i in ids]
                except DataError as e:
                    reasons.append(str(e))
            items.append(RawItem(os.path.basename(img), img, labels, xywhn=xywhn, reasons=reasons,
                                 meta={"origin": os.path.relpath(img, root), "origin_split": split}))
    return items, []


def read_deepfish_yolo_source(src, images_dir=None):
    """DeepFish's Roboflow YOLO export; the video id in each file name becomes the group."""
    items, notes = read_yolo_source(src, images_dir)
    for it in items:
        it.meta["group"] = default_group_key(it.name)
    return items, notes


def read_coco_source(src, images_dir=None):
    """A COCO JSON; images are looked up by file_name under images_dir (default: the JSON's folder)."""
    here = os.path.dirname(os.path.abspath(src))
    finder = ImageFinder([images_dir, here, os.path.join(here, "images")])
    items = []
    for entry in importers_coco.load_coco(src):
        path = finder.find(entry["file_name"])
        reasons = list(entry["reasons"])
        if path is None:
            url = entry["meta"].get("coco_url") or entry["meta"].get("url")
            reasons.append("missing image %s under %s%s" % (entry["file_name"], images_dir or here,
                                                            " (download %s)" % url if url else ""))
        items.append(_abs_item(entry, path, reasons))
    return items, []


def read_voc_source(src, images_dir=None):
    """A VOC folder (Annotations/*.xml + JPEGImages/) or a folder of XML files, or one XML."""
    files = [src] if os.path.isfile(src) else sorted(glob.glob(os.path.join(src, "**", "*.xml"), recursive=True))
    if not files:
        raise DataError("%s: no .xml annotations; a VOC import needs Pascal VOC XML files" % src)
    root = src if os.path.isdir(src) else os.path.dirname(os.path.abspath(src))
    finder = ImageFinder([images_dir, os.path.join(root, "JPEGImages"), root])
    items = []
    for xml in files:
        entry = importers_coco.load_voc(xml)
        path = finder.find(entry["file_name"]) or finder.find(os.path.basename(xml)[:-4] + ".jpg")
        reasons = list(entry["reasons"])
        if path is None:
            reasons.append("missing image %s for %s under %s" % (entry["file_name"], xml, images_dir or root))
        items.append(_abs_item(entry, path, reasons))
    return items, []


def _abs_item(entry, path, reasons):
    name = os.path.basename(entry["file_name"])
    return RawItem(name, path, entry["labels"], xyxy=entry["xyxy"], width=entry["width"],
                   height=entry["height"], meta=dict(entry["meta"], origin=entry["file_name"]), reasons=reasons)


def parse_deepfish_csv(text, origin="<csv>"):
    """Image ids of a DeepFish classification/segmentation CSV (columns ID, labels, ...)."""
    rows = list(csv.DictReader(text.splitlines()))
    if not rows or "ID" not in rows[0]:
        raise DataError("%s: expected a DeepFish CSV with an 'ID' column (e.g. 'ID,labels')" % origin)
    return [(r["ID"].strip(), (r.get("labels") or "").strip()) for r in rows if r.get("ID", "").strip()]


def read_deepfish_csv_source(src, images_dir=None):
    """DeepFish's original CSVs: no boxes, so images become unlabelled (SSL only)."""
    files = [src] if os.path.isfile(src) else sorted(glob.glob(os.path.join(src, "**", "*.csv"), recursive=True))
    if not files:
        raise DataError("%s: no .csv files; expected DeepFish's Classification/Segmentation CSVs" % src)
    items, seen = [], set()
    for path in files:
        with open(path) as f:
            rows = parse_deepfish_csv(f.read(), origin=path)
        here = os.path.dirname(os.path.abspath(path))
        finder = ImageFinder([images_dir, here, os.path.join(here, "images")])
        for image_id, label in rows:
            if image_id in seen:
                continue
            seen.add(image_id)
            has_ext = image_id.lower().endswith(yd.IMAGE_EXTS)
            found = finder.find(image_id) if has_ext else (finder.find(image_id + ".jpg")
                                                            or finder.find(image_id + ".png"))
            name = os.path.basename(image_id) if has_ext else os.path.basename(image_id) + ".jpg"
            reasons = [] if found else ["missing image %s under %s" % (image_id, images_dir or here)]
            items.append(RawItem(name, found, [], unlabelled=True, reasons=reasons,
                                 meta={"origin": image_id, "csv_label": label,
                                       "group": default_group_key(name)}))
    return items, [SSL_ONLY_NOTE + ": %d images from %d CSV files" % (len(items), len(files))]


READERS = {
    "coco": read_coco_source,
    "yolo": read_yolo_source,
    "voc": read_voc_source,
    "deepfish-yolo": read_deepfish_yolo_source,
    "deepfish-csv": read_deepfish_csv_source,
}
DEFAULT_SOURCE = {"deepfish-yolo": "deepfish", "deepfish-csv": "deepfish"}


def import_dataset(fmt, src, out, taxonomy, source=None, images_dir=None, drop_unmapped=False):
    """Import a source into dataset `out` (created or extended); returns an ImportReport."""
    if fmt not in READERS:
        raise DataError("unknown import format %r; choose one of %s" % (fmt, ", ".join(sorted(READERS))))
    if not os.path.exists(src):
        raise DataError("import source %s does not exist" % src)
    source = source or DEFAULT_SOURCE.get(fmt)
    items, notes = READERS[fmt](src, images_dir)
    report = ImportReport(format=fmt, src=os.path.abspath(src), out=os.path.abspath(out), source=source,
                          items=len(items), notes=list(notes))
    records = build_records(items, taxonomy, source, report, drop_unmapped)
    yd.merge_into(out, records, taxonomy)
    kept = [r for r in records if not r.reasons and not r.unlabelled]
    report.imported = len(kept)
    report.unlabelled = sum(1 for r in records if r.unlabelled and not r.reasons)
    report.boxes = sum(len(r.class_ids) for r in kept)
    report.backgrounds = sum(1 for r in kept if len(r.class_ids) == 0)
    report.class_counts, report.category_counts = validate.category_table([r.class_ids for r in kept], taxonomy)
    report.quarantined = [{"name": r.name, "reasons": r.reasons} for r in records if r.reasons]
    if report.unmapped:
        logger.warning("%s: unmapped labels (boxes): %s", src, report.unmapped)
    return report


def build_records(items, taxonomy, source, report, drop_unmapped=False):
    """Map labels, check images and boxes; fills report.unmapped/missing/duplicates/clipped."""
    seen, cache, unmapped = {}, {}, collections.Counter()
    records = []
    for it in items:
        reasons, width, height = list(it.reasons), it.width, it.height
        if it.image_src is None or not os.path.isfile(it.image_src):
            report.missing_images.append(it.name)
            if not any(r.startswith("missing image") for r in reasons):
                reasons.append("missing image %s" % (it.image_src or it.name))
        else:
            try:
                width, height, digest = validate.inspect_image(it.image_src)
                if digest in seen:
                    reasons.append("duplicate of %s" % seen[digest])
                    report.duplicates.append({"name": it.name, "duplicate_of": seen[digest]})
                else:
                    seen[digest] = it.name
                if it.width and it.height and (it.width, it.height) != (width, height):
                    reasons.append("annotation size %dx%d but image is %dx%d" % (it.width, it.height, width, height))
            except DataError as e:
                reasons.append(str(e))
        meta = dict(it.meta, source=source) if source else dict(it.meta)
        if it.unlabelled:
            records.append(yd.Record(it.name, it.image_src, meta=meta, reasons=reasons, unlabelled=True))
            continue
        ids, keep = [], []
        for k, label in enumerate(it.labels):
            if label not in cache:
                cache[label] = taxonomy.map_label(label, source)
            if cache[label] is None:
                unmapped[label] += 1
                if not drop_unmapped:
                    reasons.append("unmapped label %r" % label)
            else:
                ids.append(cache[label])
                keep.append(k)
        xywhn = _normalised(it, width, height, reasons)[keep]
        ids, clipped, n_clipped, problems = validate.check_boxes(ids, xywhn, len(taxonomy), width, height)
        reasons.extend(dict.fromkeys(problems))
        reasons = list(dict.fromkeys(reasons))
        if not reasons:
            report.clipped_boxes += n_clipped
        records.append(yd.Record(it.name, it.image_src, ids, clipped, meta=meta, reasons=reasons))
    report.unmapped = dict(unmapped.most_common())
    return records


def _normalised(it, width, height, reasons):
    if it.xywhn is not None:
        return np.asarray(it.xywhn, np.float32).reshape(-1, 4)
    if it.xyxy is None or len(it.xyxy) == 0:
        return np.zeros((0, 4), np.float32)
    if not width or not height:
        reasons.append("image size unknown: annotation has no width/height and the image is missing")
        return np.zeros((len(it.xyxy), 4), np.float32)
    return validate.xyxy_abs_to_xywhn(it.xyxy, width, height)

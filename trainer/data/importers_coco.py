"""COCO JSON (FathomNet exports) and Pascal VOC XML: pure parsers to absolute boxes.

Each parser returns a list of dicts with file_name, width, height (0 when the
annotation does not say), labels (source label strings), xyxy (absolute
pixels, float64 (N,4)), meta and reasons.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np

from trainer.errors import DataError

# COCO image keys that identify a video or sequence (used as the split group).
GROUP_KEYS = ("video_id", "sequence_id", "seq_id", "dive_id", "deployment_id", "video", "sequence")


def _is_id(value):
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _structure_faults(obj):
    """Where the images/annotations/categories lists break the COCO shape: ["annotations[0].image_id is [1]", ...]."""
    faults = []
    for section, keys in (("images", ("id",)), ("annotations", ("image_id", "category_id")),
                          ("categories", ("id",))):
        entries = obj.get(section) or []
        if not isinstance(entries, list):
            faults.append("%s is a %s, not a list" % (section, type(entries).__name__))
            continue
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                faults.append("%s[%d] is a %s, not an object" % (section, i, type(entry).__name__))
                continue
            faults.extend("%s[%d].%s is %.40r" % (section, i, key, entry[key]) for key in keys
                          if key in entry and not _is_id(entry[key]))
    return faults


def _number(value, where, origin):
    try:
        return float(value)
    except (TypeError, ValueError) as e:
        raise DataError("%s: %s is %.40r; expected a number" % (origin, where, value)) from e


def _pixels(img, key, i, origin):
    value = _number(img.get(key) or 0, "images[%d].%s" % (i, key), origin)
    if not 0 <= value < 2 ** 31:  # NaN and inf fail too
        raise DataError("%s: images[%d].%s is %r; expected a size in pixels" % (origin, i, key, img.get(key)))
    return int(value)


def parse_coco(obj, origin="<coco>"):
    """Images of a COCO dict; category ids may be any integers (FathomNet: 1-based)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("images"), list):
        raise DataError("%s: not a COCO detection file (expected 'images', 'annotations', 'categories')" % origin)
    faults = _structure_faults(obj)
    if faults:  # ids index dicts below: a list or an object there would crash on hashing
        raise DataError("%s: %s%s; expected integer (or string) ids and objects in each list" % (
            origin, "; ".join(faults[:3]), " (and %d more)" % (len(faults) - 3) if len(faults) > 3 else ""))
    try:
        cats = {int(c["id"]): str(c["name"]) for c in obj.get("categories") or []}
    except (KeyError, TypeError, ValueError) as e:
        raise DataError("%s: every category needs an integer 'id' and a 'name'" % origin) from e
    per_image = {}
    for ann in obj.get("annotations") or []:
        per_image.setdefault(ann.get("image_id"), []).append(ann)
    out = []
    for i, img in enumerate(obj["images"]):
        if "id" not in img or "file_name" not in img:
            raise DataError("%s: image entry %.80r lacks 'id' or 'file_name'" % (origin, img))
        labels, boxes, reasons = [], [], []
        for ann in per_image.get(img["id"], []):
            cat = cats.get(ann.get("category_id"))
            bbox = ann.get("bbox")
            if cat is None:
                reasons.append("annotation %.40r has category_id %r not in categories"
                               % (ann.get("id"), ann.get("category_id")))
                continue
            if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                reasons.append("annotation %.40r has no [x, y, w, h] bbox" % (ann.get("id"),))
                continue
            x, y, w, h = (_number(v, "annotation %.40r bbox" % (ann.get("id"),), origin) for v in bbox)
            labels.append(cat)
            boxes.append([x, y, x + w, y + h])
        meta = {k: img[k] for k in ("coco_url", "url", "uuid") if img.get(k)}
        group = next((img[k] for k in GROUP_KEYS if img.get(k) not in (None, "")), None)
        if group is not None:
            meta["group"] = str(group)
        out.append({"file_name": str(img["file_name"]), "width": _pixels(img, "width", i, origin),
                    "height": _pixels(img, "height", i, origin), "labels": labels,
                    "xyxy": np.asarray(boxes, np.float64).reshape(-1, 4), "meta": meta, "reasons": reasons})
    return out


def load_coco(path):
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except RecursionError:  # json recurses per level; from None: its 1,000 frames say nothing more
        raise DataError("cannot read COCO file %s: it is nested too deeply (a COCO file is 5 levels deep); "
                        "export the annotations again" % path) from None
    except (OSError, ValueError) as e:  # ValueError: not JSON, or not UTF-8
        raise DataError("cannot read COCO file %s: %s" % (path, e)) from e
    return parse_coco(obj, origin=path)


def parse_voc(text, origin="<voc>"):
    """One Pascal VOC annotation. VOC pixels are 1-based; shifted by -1 like Ultralytics' converter."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise DataError("%s: not valid XML (%s); expected a Pascal VOC <annotation>" % (origin, e)) from e
    if root.tag != "annotation":
        raise DataError("%s: root element is <%s>; expected <annotation>" % (origin, root.tag))
    file_name = (root.findtext("filename") or "").strip()
    if not file_name:
        raise DataError("%s: <filename> is missing or empty" % origin)
    width = int(float(root.findtext("size/width") or 0))
    height = int(float(root.findtext("size/height") or 0))
    labels, boxes, reasons, difficult = [], [], [], 0
    for i, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        bnd = obj.find("bndbox")
        try:
            xmin, ymin, xmax, ymax = (float(bnd.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            reasons.append("object %d (%s) has no numeric <bndbox> xmin/ymin/xmax/ymax" % (i, name or "?"))
            continue
        difficult += int((obj.findtext("difficult") or "0").strip() == "1")
        labels.append(name)
        boxes.append([xmin - 1, ymin - 1, xmax - 1, ymax - 1])
    meta = {"difficult": difficult} if difficult else {}
    return {"file_name": file_name, "width": width, "height": height, "labels": labels,
            "xyxy": np.asarray(boxes, np.float64).reshape(-1, 4), "meta": meta, "reasons": reasons}


def load_voc(path):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise DataError("cannot read VOC file %s: %s" % (path, e)) from e
    return parse_voc(text, origin=path)

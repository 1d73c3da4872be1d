"""The annotation package sent to a labelling vendor: one zip, written atomically.

Layout (CVAT's "COCO 1.0" dataset layout, so the zip imports as it is)::

    annotations/instances_default.json   COCO with the model's draft boxes
    images/<file_name>                   the full images, bytes untouched
    thumbnails/<file_name stem>.jpg      256 px previews for triage
    manifest.json                        sha256 of every other file, scores, model, strategy, K, pool size

COCO details: category ids start at 1 (COCO reserves 0) in class-id order;
every annotation has id, image_id, category_id, bbox [x, y, w, h] in
absolute pixels, area, iscrowd 0, segmentation [] and `score` (Label Studio's
COCO converter reads it as the prediction score).
"""
from __future__ import annotations

import hashlib
import json
import os
import posixpath
import tempfile
import zipfile

import cv2
import numpy as np

from edge.boxes import xyxy_to_xywh
from edge.images import read_image
from trainer.errors import DataError, TrainerError

SCHEMA = "reefwatch-active-package"
SCHEMA_VERSION = 1
COCO_PATH = "annotations/instances_default.json"
MANIFEST_PATH = "manifest.json"
IMAGES_DIR = "images"
THUMBNAILS_DIR = "thumbnails"
THUMB_SIDE_PX = 256
# A fixed timestamp keeps the zip a function of its contents alone.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def coco_categories(names):
    return [{"id": i + 1, "name": str(n), "supercategory": ""} for i, n in enumerate(names)]


def coco_document(entries, names, description="ReefWatch active learning drafts"):
    """COCO dict from entries {file_name, width, height, detections}; image ids from 1 in entry order."""
    images, annotations = [], []
    for image_id, entry in enumerate(entries, 1):
        images.append({"id": image_id, "file_name": entry["file_name"], "width": int(entry["width"]),
                       "height": int(entry["height"])})
        det = entry["detections"]
        xywh = xyxy_to_xywh(det.xyxy).astype(np.float64)
        for box, score, class_id in zip(xywh, det.score, det.class_id):
            box = [round(float(v), 2) for v in box]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(class_id) + 1,
                                "bbox": box, "area": round(box[2] * box[3], 2), "iscrowd": 0,
                                "segmentation": [], "score": round(float(score), 5)})
    return {"info": {"description": description}, "licenses": [], "categories": coco_categories(names),
            "images": images, "annotations": annotations}


def thumbnail_jpeg(image, side_px=THUMB_SIDE_PX, quality=85):
    """JPEG bytes of the image scaled so its longer side is at most side_px."""
    h, w = image.shape[:2]
    scale = min(1.0, float(side_px) / max(h, w))
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise TrainerError("cannot encode a thumbnail (%dx%d)" % (w, h))
    return data.tobytes()


def thumbnail_name(file_name):
    return posixpath.join(THUMBNAILS_DIR, posixpath.splitext(file_name)[0] + ".jpg")


def _add(archive, arcname, data, files):
    info = zipfile.ZipInfo(arcname, date_time=_ZIP_DATE)
    info.external_attr = 0o644 << 16
    is_jpeg = arcname.lower().endswith((".jpg", ".jpeg"))
    info.compress_type = zipfile.ZIP_STORED if is_jpeg else zipfile.ZIP_DEFLATED
    archive.writestr(info, data)
    if files is not None:
        files[arcname] = sha256_bytes(data)


def write_package(out_path, selected, names, info):
    """Write the package zip atomically; returns its manifest.

    selected: dicts {file_name, path, width, height, uncertainty, detections} in rank order.
    info: what the manifest records about the run (model, strategy, aggregate, k, pool_size, ...).
    """
    folder = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(folder):
        raise TrainerError("cannot write %s: folder %s does not exist" % (out_path, folder))
    coco = coco_document(selected, names)
    files, listing = {}, []
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".%s." % os.path.basename(out_path), suffix=".partial")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w") as archive:
            for rank, (entry, image) in enumerate(zip(selected, coco["images"]), 1):
                with open(entry["path"], "rb") as f:
                    data = f.read()
                _add(archive, posixpath.join(IMAGES_DIR, entry["file_name"]), data, files)
                _add(archive, thumbnail_name(entry["file_name"]), thumbnail_jpeg(read_image(entry["path"])), files)
                listing.append({"file_name": entry["file_name"], "image_id": image["id"], "rank": rank,
                                "sha256": sha256_bytes(data), "width": image["width"], "height": image["height"],
                                "uncertainty": float(entry["uncertainty"]), "drafts": len(entry["detections"]),
                                "thumbnail": thumbnail_name(entry["file_name"])})
            _add(archive, COCO_PATH, json.dumps(coco, indent=1).encode("utf-8"), files)
            manifest = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **info,
                        "classes": [str(n) for n in names], "coco": COCO_PATH, "images": listing, "files": files}
            _add(archive, MANIFEST_PATH, json.dumps(manifest, indent=1).encode("utf-8"), None)
        os.replace(tmp, out_path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return manifest


def read_package(path, verify=True):
    """(manifest, coco dict) of a package; with verify, every file's sha256 is checked against the manifest."""
    try:
        with zipfile.ZipFile(path) as archive:
            manifest = json.loads(archive.read(MANIFEST_PATH))
            if manifest.get("schema") != SCHEMA:
                raise DataError("%s: manifest schema %r; expected %r" % (path, manifest.get("schema"), SCHEMA))
            if verify:
                present = set(archive.namelist()) - {MANIFEST_PATH}
                missing = sorted(set(manifest["files"]) - present)
                extra = sorted(present - set(manifest["files"]))
                bad = sorted(name for name in set(manifest["files"]) & present
                             if sha256_bytes(archive.read(name)) != manifest["files"][name])
                if missing or extra or bad:
                    raise DataError("%s does not match its manifest: missing %s, unlisted %s, checksum mismatch %s"
                                    % (path, missing, extra, bad))
            coco = json.loads(archive.read(manifest.get("coco", COCO_PATH)))
    except (OSError, zipfile.BadZipFile, KeyError, ValueError) as e:
        raise DataError("cannot read package %s: %s" % (path, e)) from e
    return manifest, coco


def extract_images(path, dest):
    """Extract the package's images/ into dest (names checked to stay inside); returns dest/images."""
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if not name.startswith(IMAGES_DIR + "/") or name.endswith("/"):
                continue
            target = os.path.normpath(os.path.join(dest, name))
            if not target.startswith(os.path.normpath(dest) + os.sep) or posixpath.isabs(name):
                raise DataError("%s: entry %r escapes the extraction folder" % (path, name))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(archive.read(name))
    return os.path.join(dest, IMAGES_DIR)

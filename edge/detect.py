"""`edge detect`: run a bundle over an image, a folder of images or a video; write COCO-style results."""
import json
import logging
import os

import cv2
import numpy as np

from edge.boxes import xyxy_to_xywh
from edge.errors import EdgeError, FrameError, SourceError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg")


def read_image(path):
    """BGR uint8 image, or FrameError naming the file when it is missing, unreadable or corrupt."""
    data = np.fromfile(path, dtype=np.uint8) if os.path.isfile(path) else None
    if data is None:
        raise FrameError("image %s does not exist" % path)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise FrameError("image %s cannot be decoded (corrupt or not an image)" % path)
    return image


def iter_frames(source):
    """(name, frame or None, error or None) for an image, a folder of images (name order) or a video."""
    if os.path.isdir(source):
        names = sorted(n for n in os.listdir(source) if n.lower().endswith(IMAGE_EXTENSIONS))
        if not names:
            raise SourceError("folder %s holds no images (%s)" % (source, ", ".join(IMAGE_EXTENSIONS)))
        for name in names:
            yield _read_named(os.path.join(source, name), name)
    elif source.lower().endswith(VIDEO_EXTENSIONS) and os.path.isfile(source):
        for item in _iter_video(source):
            yield item
    elif os.path.isfile(source):
        yield _read_named(source, os.path.basename(source))
    else:
        raise SourceError("source %s is not an image, a folder of images or a video file (%s)"
                          % (source, ", ".join(VIDEO_EXTENSIONS)))


def _read_named(path, name):
    try:
        return name, read_image(path), None
    except FrameError as e:
        return name, None, str(e)


def _iter_video(path):
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise SourceError("video %s cannot be opened by OpenCV" % path)
    stem = os.path.splitext(os.path.basename(path))[0]
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield "%s_f%06d" % (stem, index), frame, None
            index += 1
    finally:
        capture.release()


def coco_results(detections, image_id, file_name, names):
    """COCO results entries; category_id is class id + 1 (COCO reserves 0)."""
    xywh = xyxy_to_xywh(detections.xyxy)
    return [{"image_id": image_id, "file_name": file_name, "category_id": int(c) + 1, "class_id": int(c),
             "class_name": names[int(c)], "bbox": [round(float(v), 2) for v in box], "score": round(float(s), 5)}
            for box, s, c in zip(xywh, detections.score, detections.class_id)]


def draw_detections(frame, detections, names, categories=None):
    """A copy of the frame with boxes and labels; critical species in red, others in yellow/green."""
    colours = {"critical": (0, 0, 255), "important": (0, 215, 255), "general": (0, 200, 0)}
    out = frame.copy()
    thickness = max(1, int(round(max(frame.shape[:2]) / 400.0)))
    for box, score, class_id in detections:
        x1, y1, x2, y2 = [int(round(v)) for v in box]
        colour = colours.get((categories or {}).get(class_id), (0, 200, 0))
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
        label = "%s %.2f" % (names[class_id], score)
        cv2.putText(out, label, (x1, max(y1 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, colour, thickness)
    return out


def run_detect(pipeline, source, out_path, models=None, plan=None, save_images=None, progress=None, draw_thr=0.25):
    """Detect over a source; returns a summary dict. Unreadable frames are skipped and counted.

    Every detection goes into the results; drawn frames show those scoring at least draw_thr.
    """
    bundle = pipeline.bundle
    names = bundle.names
    categories = {c.id: c.category for c in bundle.classes}
    results, skipped, frames = [], [], 0
    if save_images:
        os.makedirs(save_images, exist_ok=True)
    items = iter_frames(source)
    for image_id, (name, frame, error) in enumerate(progress(items) if progress else items):
        if frame is None:
            log.warning("skipping %s: %s", name, error)
            skipped.append({"file_name": name, "reason": error})
            continue
        detections = pipeline.detect(frame, models=models, plan=plan)
        frames += 1
        results.extend(coco_results(detections, image_id, name, names))
        if save_images:
            stem = os.path.splitext(name)[0]
            shown = detections[detections.score >= draw_thr]
            cv2.imwrite(os.path.join(save_images, stem + ".jpg"), draw_detections(frame, shown, names, categories))
    _write_json_atomically(out_path, results)
    return {"frames": frames, "skipped": len(skipped), "skipped_files": skipped, "detections": len(results),
            "results": out_path}


def _write_json_atomically(path, payload):
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise EdgeError("cannot write %s: folder %s does not exist" % (path, folder))
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f)
    os.replace(tmp, path)

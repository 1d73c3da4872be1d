"""`edge detect`: run a bundle over an image, a folder of images or a video; write COCO-style results."""
import json
import logging
import os

import cv2

from edge.atomic_file import atomic_output
from edge.boxes import xyxy_to_xywh
from edge.errors import EdgeError, FrameError, SourceError
from edge.images import (IMAGE_EXTENSIONS, MAX_PIXELS, MIN_SIDE_PX, display_name, frame_problem, image_names,
                         opencv_path, read_image)

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg")
__all__ = ["IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "coco_results", "draw_detections", "iter_frames", "read_image",
           "run_detect"]


def iter_frames(source, max_pixels=MAX_PIXELS, min_side=MIN_SIDE_PX, notes=None):
    """(name, frame or None, error or None) for an image, a folder of images (name order) or a video.

    The source is checked before this returns (SourceError); frames are read
    as they are iterated, each by `edge.images.read_image`. Problems that are
    no single frame's (a video that ends early) are appended to `notes`.
    """
    limits = dict(max_pixels=max_pixels, min_side=min_side)
    if os.path.isdir(source):
        names = image_names(source)
        if not names:
            raise SourceError("folder %s holds no images (%s)" % (display_name(source), ", ".join(IMAGE_EXTENSIONS)))
        return (_read_named(os.path.join(source, name), name, limits) for name in names)
    if os.fsdecode(source).lower().endswith(VIDEO_EXTENSIONS) and os.path.isfile(source):
        return _iter_video(source, min_side, [] if notes is None else notes)
    if os.path.lexists(source) and not os.path.isdir(source):
        # Any other existing entry is one image: read_image says what is wrong with it.
        return iter([_read_named(source, os.path.basename(source), limits)])
    raise SourceError("source %s is not an image, a folder of images or a video file (%s)"
                      % (display_name(source), ", ".join(VIDEO_EXTENSIONS)))


def _read_named(path, name, limits):
    try:
        return name, read_image(path, **limits), None
    except FrameError as e:
        return name, None, str(e)


def _iter_video(path, min_side, notes):
    """Open the video now (SourceError when it cannot be); its frames come as the result is iterated."""
    with opencv_path(path) as name:
        capture = cv2.VideoCapture(name)
    if not capture.isOpened():
        capture.release()
        raise SourceError("video %s cannot be opened by OpenCV" % display_name(path))
    return _video_frames(capture, path, min_side, notes)


def _video_frames(capture, path, min_side, notes):
    stem = os.path.splitext(os.path.basename(path))[0]
    declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))  # 0 or less when the container does not say
    index = 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            problem = frame_problem(frame, min_side)
            yield "%s_f%06d" % (stem, index), (None if problem else frame), (problem or None)
            index += 1
    finally:
        capture.release()
    if 0 < declared and index < declared:
        note = ("video %s ended after %d of the %d frames its header declares (truncated or corrupt)"
                % (display_name(path), index, declared))
        logger.warning("%s", note)
        notes.append(note)


RESULTS_FORMAT = """\
Results: a JSON list, one entry per detection, COCO results style:
  image_id     the frame's index in source order (sorted file names, video frame order), from 0;
               with --coco-gt, the id of the image with the same file name in that ground truth
  file_name    the frame's file name (videos: <stem>_f<frame>)
  category_id  class id + 1 (COCO reserves 0); with --coco-gt, the id of the category of the same name
  class_id, class_name   the bundle's class (0-based) and its name
  bbox         [x, y, width, height] in pixels of the original frame, top-left origin, inside the frame
  score        the calibrated, fused score
By default only what the device reports is written: boxes at or above the inference profile's per-class
operating thresholds. --all-scores writes every fused box above the decode threshold (what a COCO
evaluator needs for mAP)."""


def coco_results(detections, image_id, file_name, names, category_ids=None):
    """COCO results entries; category_id is class id + 1 (COCO reserves 0) or `category_ids[class id]`."""
    xywh = xyxy_to_xywh(detections.xyxy)
    return [{"image_id": image_id, "file_name": file_name,
             "category_id": int(c) + 1 if category_ids is None else category_ids[int(c)], "class_id": int(c),
             "class_name": names[int(c)], "bbox": [round(float(v), 2) for v in box], "score": round(float(s), 5)}
            for box, s, c in zip(xywh, detections.score, detections.class_id)]


class CocoIds(object):
    """Image and category ids of a COCO ground-truth file, matched by file name and category name."""

    def __init__(self, path, names):
        try:
            with open(path, "rb") as f:
                gt = json.loads(f.read().decode("utf-8"))
        except (OSError, ValueError, RecursionError) as e:
            raise EdgeError("--coco-gt %s cannot be read as COCO JSON: %s" % (display_name(path), e)) from e
        if not isinstance(gt, dict) or not isinstance(gt.get("images"), list) or not isinstance(
                gt.get("categories"), list):
            raise EdgeError("--coco-gt %s: expected a COCO object with 'images' and 'categories' lists"
                            % display_name(path))
        self.images = {}
        for entry in gt["images"]:
            if isinstance(entry, dict) and isinstance(entry.get("file_name"), str) and isinstance(
                    entry.get("id"), int):
                self.images[entry["file_name"]] = entry["id"]
                self.images.setdefault(os.path.basename(entry["file_name"]), entry["id"])
        by_name = {c.get("name"): c.get("id") for c in gt["categories"] if isinstance(c, dict)}
        missing = [n for n in names if not isinstance(by_name.get(n), int)]
        if missing:
            raise EdgeError("--coco-gt %s has no category named %s; its categories are %s" % (
                display_name(path), ", ".join(missing), ", ".join(sorted(str(n) for n in by_name))))
        self.categories = [by_name[n] for n in names]

    def image_id(self, file_name):
        return self.images.get(file_name, self.images.get(os.path.basename(file_name)))


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


def run_detect(pipeline, source, out_path, models=None, plan=None, save_images=None, progress=None, draw_thr=0.25,
               max_pixels=MAX_PIXELS, min_side=MIN_SIDE_PX, all_scores=False, coco_ids=None, profile=None):
    """Detect over a source; returns a summary dict. Unreadable frames are skipped and counted.

    `profile` (an inference profile, the cascade included, with the daemon's cascade settings) runs
    each frame as the daemon would run that profile; else `models` and `plan` pick the pipeline call.
    The results hold what the device reports (the profile's operating
    points), or with `all_scores` every fused box (RESULTS_FORMAT); image and
    category ids come from `coco_ids` (a CocoIds) when given, and a frame
    missing from it is skipped with that reason. Drawn frames show boxes
    scoring at least draw_thr. The outputs and the source are checked before anything is
    written (EdgeError). A frame the reader or the pipeline refuses
    (FrameError) is skipped with its reason; the results file is written
    even when no frame could be read (`frames` is then 0). `warnings` lists
    problems that are no single frame's (a video that ended early).
    """
    check_outputs(out_path, save_images)
    notes = []
    items = iter_frames(source, max_pixels=max_pixels, min_side=min_side, notes=notes)
    bundle = pipeline.bundle
    names = bundle.names
    categories = {c.id: c.category for c in bundle.classes}
    detect = frame_detector(pipeline, models, plan, profile, all_scores)
    results, skipped, frames = [], [], 0
    if save_images:
        os.makedirs(save_images, exist_ok=True)
    for image_id, (name, frame, error) in enumerate(progress(items) if progress else items):
        detections = None
        if coco_ids is not None:
            image_id = coco_ids.image_id(name)
            if image_id is None:
                frame, error = None, "no image of this file name in the --coco-gt file"
        if frame is not None:
            try:
                detections = detect(frame)
            except FrameError as e:  # one frame the pipeline cannot take: skip it, keep the run
                error = str(e)
        if detections is None:
            logger.warning("skipping %s: %s", display_name(name), error)
            skipped.append({"file_name": name, "reason": error})
            continue
        frames += 1
        results.extend(coco_results(detections, image_id, name, names,
                                    None if coco_ids is None else coco_ids.categories))
        if save_images:
            shown = detections[detections.score >= draw_thr]
            _write_drawn(os.path.join(save_images, os.path.splitext(name)[0] + ".jpg"),
                         draw_detections(frame, shown, names, categories))
    _write_json_atomically(out_path, results)
    return {"frames": frames, "skipped": len(skipped), "skipped_files": skipped, "detections": len(results),
            "results": out_path, "warnings": notes}


def frame_detector(pipeline, models=None, plan=None, profile=None, all_scores=False):
    """frame -> Detections: `profile` through run_profile (the cascade with the daemon's default settings, as
    the trainer's and the benchmarks' figures score it), else pipeline.detect with `models` and `plan`."""
    if profile is None:
        return lambda frame: pipeline.detect(frame, models=models, plan=plan, all_scores=all_scores)
    from edge.profiles import CASCADE, cascade_settings, check_profile, run_profile

    settings = cascade_settings(pipeline.bundle) if check_profile(profile) == CASCADE else None
    return lambda frame: run_profile(pipeline, frame, profile, settings, all_scores=all_scores).detections


def check_outputs(out_path, save_images=None):
    """EdgeError naming the fix when the results file or the drawn-images folder cannot be written."""
    folder = os.path.dirname(os.path.abspath(out_path))
    if os.path.isdir(out_path):
        raise EdgeError("results %s is a folder; give a file name, e.g. %s"
                        % (display_name(out_path), display_name(os.path.join(out_path, "results.json"))))
    if not os.path.isdir(folder):
        raise EdgeError("cannot write %s: folder %s does not exist" % (display_name(out_path), display_name(folder)))
    if not os.access(folder, os.W_OK):
        raise EdgeError("cannot write %s: folder %s is not writable" % (display_name(out_path), display_name(folder)))
    if save_images and os.path.lexists(save_images) and not os.path.isdir(save_images):
        raise EdgeError("--save-images %s exists and is not a folder; name a new or existing folder"
                        % display_name(save_images))


def _write_drawn(path, image):
    """JPEG by bytes: cv2.imwrite crashes on a name that is not UTF-8."""
    ok, data = cv2.imencode(".jpg", image)
    if not ok:
        raise EdgeError("cannot encode the drawn frame %s as JPEG" % display_name(path))
    try:
        with open(path, "wb") as f:
            f.write(data.tobytes())
    except OSError as e:
        raise EdgeError("cannot write %s: %s" % (display_name(path), e.strerror or e)) from e


def _write_json_atomically(path, payload):
    """Write `payload` as JSON to `path`; when anything fails `path` stays as it was."""
    check_outputs(path)
    try:
        with atomic_output(path) as f:
            json.dump(payload, f)
    except (OSError, TypeError, ValueError) as e:
        raise EdgeError("cannot write %s: %s" % (display_name(path), e)) from e

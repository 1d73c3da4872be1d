"""DeepFish frames for the trainer experiments: which videos, which frames, and small copies to train on.

DeepFish (Roboflow export, `../shared/data/deepfish`) holds 360x360 frames named
`<video>_<species>_f<frame>_jpg.rf.<hash>.jpg`: the picture fills a 360x~205 band
between black bars, and in half of the videos the fish are under 30 px wide. From
scratch on two CPU cores a small YOLO learns nothing from those in the minutes an
experiment has (measured: mAP50 0.0006 on its own training frames after 1,800 images
at 256 px, one optimizer step per batch), so the experiments narrow the task the way a CPU
budget allows:

- `large_fish_videos`: only videos whose median fish is at least `min_fish_px` wide;
  `select_videos` can add the no-fish clips (DeepFish's background frames) of the
  same sites.
- `site_split`: a fixed camera's view. Each video's later frames (by frame number)
  are held out for evaluation, with a gap before them so that neighbouring, nearly
  identical frames never straddle the split. This measures how well a model learns a
  site from its earlier footage, not how it transfers to a new habitat (held-out
  videos: mAP50 0.009 where the same model scored 0.195 on its training frames).
- `materialize`: the band between the black bars, resized so its long side is
  `size`, re-encoded in the experiment's work folder (never in the repository), with
  the label file rewritten for the crop.
"""
import collections
import os
import re

import cv2
import numpy as np

from edge.errors import FrameError
from edge.images import list_images, read_image

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "deepfish")
FRAME_NAME = re.compile(r"^(?P<video>\d+)_(?P<species>.*)_f(?P<frame>\d+)_jpg")
BAR_LEVEL = 12   # rows whose brightest pixel is at or below this are letterbox bars


def add_selection_arguments(parser):
    parser.add_argument("--data", default=DEFAULT_DATA, help="DeepFish in YOLO format (train/, val/)")
    parser.add_argument("--val-images", type=int, default=250, help="evaluation frames drawn from the held-out ones")
    parser.add_argument("--min-fish-px", type=float, default=40, help="keep videos whose median fish is this wide")
    parser.add_argument("--eval-fraction", type=float, default=0.25, help="later share of each video held out")
    parser.add_argument("--gap", type=int, default=10, help="frame numbers dropped before the held-out share")
    parser.add_argument("--no-fish-clips", action="store_true",
                        help="also take the no-fish clips (backgrounds) filmed at the same sites")


def parse_name(name):
    """(video key, frame number) of a DeepFish file name; the key keeps the species, as ids repeat across clips."""
    match = FRAME_NAME.match(os.path.basename(name))
    if match is None:
        raise ValueError("%r is not a DeepFish frame name (<video>_<species>_f<frame>_jpg...)" % name)
    return "%s_%s" % (match.group("video"), match.group("species")), int(match.group("frame"))


def list_frames(data):
    """Every image under data/train/images and data/val/images (DeepFish's own split is ignored)."""
    paths = []
    for split in ("train", "val"):
        folder = os.path.join(data, split, "images")
        if os.path.isdir(folder):
            paths += list_images(folder)
    if not paths:
        raise SystemExit("no images under %s/{train,val}/images; pass --data DEEPFISH_FOLDER" % data)
    return paths


def label_of(image_path):
    head, name = os.path.split(image_path)
    return os.path.join(os.path.dirname(head), "labels", os.path.splitext(name)[0] + ".txt")


def read_boxes(image_path):
    """(N, 5) class, cx, cy, w, h (normalized) from the YOLO label beside the image; no file: a background."""
    path = label_of(image_path)
    if not os.path.exists(path):
        return np.zeros((0, 5))
    rows = [line.split() for line in open(path) if line.strip()]
    return np.array(rows, dtype=float).reshape(-1, 5)


def large_fish_videos(paths, min_fish_px, image_px=360):
    """Video keys whose median box width is at least min_fish_px (in the original image_px frames)."""
    widths = collections.defaultdict(list)
    for p in paths:
        widths[parse_name(p)[0]].extend(read_boxes(p)[:, 3] * image_px)
    return sorted(v for v, w in widths.items() if w and np.median(w) >= min_fish_px)


def select_videos(paths, min_fish_px, no_fish_clips=False):
    """The large-fish video keys and, with no_fish_clips, the keys of clips without a single box filmed at the
    same sites (the number before the first '_'): DeepFish keeps its background frames in such clips."""
    keys = set(large_fish_videos(paths, min_fish_px))
    if no_fish_clips:
        sites = {k.split("_", 1)[0] for k in keys}
        boxes = collections.Counter()
        for p in paths:
            boxes[parse_name(p)[0]] += len(read_boxes(p))
        keys |= {k for k, n in boxes.items() if n == 0 and k.split("_", 1)[0] in sites}
    return sorted(keys)


def site_split(paths, eval_fraction=0.25, gap=10):
    """(early, late): per video, frames numbered from the last eval_fraction of its span are late; the `gap`
    frame numbers before them are dropped."""
    by_video = collections.defaultdict(list)
    for p in paths:
        by_video[parse_name(p)[0]].append(p)
    early, late = [], []
    for video in sorted(by_video):
        frames = sorted(by_video[video], key=lambda p: (parse_name(p)[1], p))
        numbers = [parse_name(p)[1] for p in frames]
        boundary = numbers[0] + (1.0 - eval_fraction) * (numbers[-1] - numbers[0])
        late += [p for p, n in zip(frames, numbers) if n >= boundary]
        early += [p for p, n in zip(frames, numbers) if n < boundary - gap]
    return early, late


def even_sample(paths, count, rng):
    """count paths drawn round-robin over videos (each video's frames shuffled), so every video is seen."""
    by_video = collections.OrderedDict()
    for p in sorted(paths):
        by_video.setdefault(parse_name(p)[0], []).append(p)
    queues = [list(rng.permutation(v)) for v in by_video.values()]
    picked = []
    while len(picked) < count and any(queues):
        for q in queues:
            if q and len(picked) < count:
                picked.append(str(q.pop()))
    return picked


def content_rows(image):
    """(top, bottom) of the rows between letterbox bars; the whole image when there are none."""
    lit = np.flatnonzero(image.max(axis=(1, 2)) > BAR_LEVEL)
    if lit.size == 0:
        return 0, image.shape[0]
    return int(lit[0]), int(lit[-1]) + 1


def crop_boxes(boxes, height, top, bottom):
    """YOLO boxes of a full-height image mapped onto rows top:bottom (x and w are unchanged)."""
    out = boxes.copy()
    band = float(bottom - top)
    out[:, 2] = (boxes[:, 2] * height - top) / band
    out[:, 4] = boxes[:, 4] * height / band
    return out


def materialize(folder, sources, size, with_labels=True):
    """folder/images/<name> (cropped to the picture band, long side `size`, JPEG) and folder/labels/<name>.txt;
    returns the new image paths in the order of `sources`."""
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    if with_labels:
        os.makedirs(os.path.join(folder, "labels"), exist_ok=True)
    made = []
    for src in sources:
        try:
            image = read_image(src)
        except FrameError as e:
            raise SystemExit("%s; check the DeepFish copy under --data" % e)
        top, bottom = content_rows(image)
        band = image[top:bottom]
        scale = float(size) / max(band.shape[:2])
        band = cv2.resize(band, (max(1, round(band.shape[1] * scale)), max(1, round(band.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA)
        name = os.path.splitext(os.path.basename(src))[0]
        dst = os.path.join(folder, "images", name + ".jpg")
        cv2.imwrite(dst, band, [cv2.IMWRITE_JPEG_QUALITY, 92])
        if with_labels:
            boxes = crop_boxes(read_boxes(src), image.shape[0], top, bottom)
            with open(label_of(dst), "w") as f:
                f.write("".join("%d %.6f %.6f %.6f %.6f\n" % (int(b[0]), b[1], b[2], b[3], b[4]) for b in boxes))
        made.append(dst)
    return made


def write_data(work, name, train_images, eval_images):
    """work/<name>.yaml (one class, fish) over two list files of absolute image paths."""
    lists = {}
    for split, images in (("train", train_images), ("val", eval_images)):
        lists[split] = os.path.join(work, "%s_%s.txt" % (name, split))
        with open(lists[split], "w") as f:
            f.write("".join(os.path.abspath(p) + "\n" for p in images))
    path = os.path.join(work, "%s.yaml" % name)
    with open(path, "w") as f:
        f.write("path: %s\ntrain: %s\nval: %s\nnames: [fish]\n" % (work, lists["train"], lists["val"]))
    return path


def label_stats(images):
    boxes = [len(read_boxes(p)) for p in images]
    return {"images": len(images), "boxes": int(sum(boxes)), "backgrounds": int(sum(b == 0 for b in boxes))}

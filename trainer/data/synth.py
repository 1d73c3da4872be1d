"""Synthetic underwater scenes with exact boxes: a YOLO dataset made from nothing.

Used where real imagery is absent (tests, the demo, benchmarks) and to check
that the training stages learn at all. A scene is open water over a seabed,
with animals of the requested classes drawn at random distances, poses and
colours, then the water's colour cast, haze, caustics and marine snow. Boxes
come from each animal's visible pixels after occlusion and edge clipping.

    generate_dataset(out_dir, images, classes=36, seed=0, ...) -> data.yaml path
    render_scene(rng, imgsz=320, classes=36, background=False) -> (BGR, xyxy, ids)
"""
import functools
import os
from dataclasses import dataclass, replace

import cv2
import numpy as np
import yaml

from trainer.data import synth_species as species
from trainer.data import synth_water as water
from trainer.errors import DataError

MIN_BOX_PX = 4            # visible parts smaller than this on either side get no box
BOTTOM_DWELLERS = {"star", "urchin", "clam", "crab", "cucumber", "lobster"}


@functools.lru_cache(maxsize=1)
def _taxonomy():
    from trainer.data.taxonomy import load_taxonomy
    return load_taxonomy()


@dataclass(frozen=True)
class Animal:
    class_id: int
    spec: dict
    colours: np.ndarray
    x: float              # centre, pixels
    y: float
    scale: float          # half the body length, pixels
    angle: float          # radians
    flip: bool
    distance: float       # 0 near .. 1 far (haze)
    phase: float          # pattern offset
    vx: float = 0.0       # motion per frame, pixels
    vy: float = 0.0

    def at_frame(self, i):
        return replace(self, x=self.x + self.vx * i, y=self.y + self.vy * i,
                       angle=self.angle + (0.05 * np.sin(0.3 * i) if self.spec["view"] == "side" else 0.0))


def _class_ids(classes):
    return list(range(classes)) if isinstance(classes, (int, np.integer)) else [int(c) for c in classes]


def random_animal(rng, class_id, size, horizon=2.0):
    """One animal of a class at a random place, size, pose and colour jitter."""
    names = _taxonomy().names
    spec = species.species_spec(class_id, names[class_id] if class_id < len(names) else None)
    distance = float(rng.uniform(0, 1))
    scale = size * rng.uniform(0.09, 0.2) * spec["size"] * (1 - 0.35 * distance)
    view = spec["view"]
    if view == "top":
        angle = rng.uniform(0, 2 * np.pi)
    else:
        angle = float(np.clip(rng.normal(0, 0.3 if view == "side" else 0.15), -0.7, 0.7))
    flip = bool(rng.random() < 0.5)
    # Centres stay inside the frame, so at most about half an animal is cut off at an edge.
    x = rng.uniform(0.02, 0.98) * size
    low = horizon if spec["family"] in BOTTOM_DWELLERS and horizon < 1 else 0.0
    y = rng.uniform(min(max(0.02, low - 0.05), 0.9), 0.98) * size
    speed = rng.uniform(0.3, 1.0) if spec["family"] in BOTTOM_DWELLERS else rng.uniform(1.0, 3.5)
    heading = angle + (np.pi if flip else 0.0) if view == "side" else rng.uniform(0, 2 * np.pi)
    return Animal(class_id, spec, species.palette(spec, rng), float(x), float(y), float(scale), float(angle), flip,
                  distance, float(rng.uniform(0, 1)), float(speed * np.cos(heading)), float(speed * np.sin(heading)))


def composite(img, animals, w):
    """Paint animals far to near; (boxes xyxy float32, class ids int32) of their visible pixels."""
    size_h, size_w = img.shape[:2]
    owner = np.full((size_h, size_w), -1, np.int16)
    drawn = []
    order = sorted(range(len(animals)), key=lambda k: -animals[k].distance)
    for k in order:
        a = animals[k]
        matrix = species.pose_matrix(a.x, a.y, a.scale, a.angle, a.flip)
        raster = species.rasterize(species.primitives(a.spec), matrix, size_h, size_w)
        if raster is None:
            continue
        x0, y0, parts = raster
        rgb = species.paint(parts, x0, y0, matrix, a.spec, a.colours, a.phase)
        roi = (slice(y0, y0 + parts.shape[0]), slice(x0, x0 + parts.shape[1]))
        rgb = water.haze(rgb * w.cast, w.water[roi], 0.6 * a.distance, w.turbidity)
        mask = parts > 0
        alpha = a.spec["alpha"]
        img[roi][mask] = alpha * rgb[mask] + (1 - alpha) * img[roi][mask]
        owner[roi][mask] = k
        drawn.append((k, x0, y0, parts.shape))
    boxes, ids = [], []
    for k, x0, y0, shape in drawn:
        ys, xs = np.nonzero(owner[y0:y0 + shape[0], x0:x0 + shape[1]] == k)
        if len(xs) == 0:
            continue
        box = (x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1)
        if box[2] - box[0] >= MIN_BOX_PX and box[3] - box[1] >= MIN_BOX_PX:
            boxes.append(box)
            ids.append(animals[k].class_id)
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(ids, np.int32)


def _setting(rng, imgsz, background):
    w = water.random_water(rng, imgsz)
    img = water.backdrop(rng, w)
    water.draw_distractors(rng, img, w, int(rng.integers(2, 6) if background else rng.integers(0, 3)))
    return w, img


def render_scene(rng, imgsz=320, classes=36, background=False, n_animals=None):
    """One still: (BGR uint8 image, boxes xyxy float32 in pixels, class ids int32).

    `classes` is a count (the first N taxonomy classes) or a list of class ids;
    `background=True` draws only distractors and returns no boxes.
    """
    ids = _class_ids(classes)
    w, base = _setting(rng, imgsz, background)
    img, boxes, class_ids = base, np.zeros((0, 4), np.float32), np.zeros(0, np.int32)
    for _ in range(0 if background else 8):    # redraw the rare scene where every animal got hidden
        img = base.copy()
        n = int(rng.integers(1, 5)) if n_animals is None else int(n_animals)
        animals = [random_animal(rng, int(rng.choice(ids)), imgsz, w.horizon) for _ in range(n)]
        boxes, class_ids = composite(img, animals, w)
        if len(boxes):
            break
    return water.finish(rng, img, w), boxes, class_ids


def render_sequence(rng, length, imgsz=320, classes=36, n_animals=None):
    """Frames of one short "video": a fixed setting with animals moving smoothly; yields like render_scene."""
    ids = _class_ids(classes)
    w, base = _setting(rng, imgsz, False)
    n = int(rng.integers(1, 4)) if n_animals is None else int(n_animals)
    animals = [random_animal(rng, int(rng.choice(ids)), imgsz, w.horizon) for _ in range(n)]
    for i in range(length):
        img = base.copy()
        boxes, class_ids = composite(img, [a.at_frame(i) for a in animals], w)
        yield water.finish(rng, img, w, caustic_shift=2 * i), boxes, class_ids


def label_lines(boxes, class_ids, imgsz):
    """YOLO label text: 'class cx cy w h' normalized to the image size."""
    lines = []
    for (x0, y0, x1, y1), c in zip(boxes, class_ids):
        lines.append("%d %.6f %.6f %.6f %.6f" % (c, (x0 + x1) / 2 / imgsz, (y0 + y1) / 2 / imgsz,
                                                 (x1 - x0) / imgsz, (y1 - y0) / imgsz))
    return "".join(line + "\n" for line in lines)


def _write(out_dir, split, stem, image, boxes, class_ids):
    path = os.path.join(out_dir, "images", split, stem + ".jpg")
    if not cv2.imwrite(path, image, [cv2.IMWRITE_JPEG_QUALITY, 92]):
        raise DataError("cannot write image %s" % path)
    with open(os.path.join(out_dir, "labels", split, stem + ".txt"), "w") as f:
        f.write(label_lines(boxes, class_ids, image.shape[1]))


def _prepare(out_dir):
    for sub in ("images", "labels"):
        for split in ("train", "val"):
            folder = os.path.join(out_dir, sub, split)
            if os.path.isdir(folder) and os.listdir(folder):
                raise DataError("%s already holds files; write the synthetic dataset to an empty folder" % folder)
            os.makedirs(folder, exist_ok=True)


def _check_args(images, classes, imgsz, background_fraction, sequences, sequence_length, val_fraction):
    n_tax = len(_taxonomy())
    checks = [(images >= 0, "images = %r: expected >= 0" % images),
              (1 <= classes <= n_tax, "classes = %r: expected 1..%d (the first N taxonomy classes)" % (classes, n_tax)),
              (imgsz >= 32, "imgsz = %r: expected >= 32" % imgsz),
              (0 <= background_fraction <= 1, "background_fraction = %r: expected 0..1" % background_fraction),
              (0 <= val_fraction <= 1, "val_fraction = %r: expected 0..1" % val_fraction),
              (sequences >= 0 and sequence_length >= 0, "sequences and sequence_length must be >= 0"),
              (not sequences or sequence_length > 0,
               "sequences = %r needs sequence_length > 0 (frames per sequence)" % sequences)]
    for ok, message in checks:
        if not ok:
            raise DataError(message)


def generate_dataset(out_dir, images, classes=36, seed=0, imgsz=320, background_fraction=0.1, sequences=0,
                     sequence_length=0, val_fraction=0.2, progress=False):
    """Write a YOLO dataset of `images` stills plus `sequences` x `sequence_length` frames; return data.yaml's path.

    Exactly round(images * background_fraction) stills hold no animal (empty
    label files); val gets round(images * val_fraction) stills and
    round(sequences * val_fraction) whole sequences, so frames of one
    sequence never straddle the split. Same arguments, same bytes.
    """
    from tqdm import tqdm

    _check_args(images, classes, imgsz, background_fraction, sequences, sequence_length, val_fraction)
    _prepare(out_dir)
    master = np.random.default_rng(seed)
    n_background, n_val = int(round(images * background_fraction)), int(round(images * val_fraction))
    background = set(master.permutation(images)[:n_background].tolist())
    val = set(master.permutation(images)[:n_val].tolist())
    val_sequences = set(master.permutation(sequences)[:int(round(sequences * val_fraction))].tolist())
    bar = tqdm(total=images + sequences * sequence_length, desc="synth", unit="img", disable=not progress)
    with bar:
        for i in range(images):
            # One generator per image: any image can be re-rendered alone, in any order.
            rng = np.random.default_rng([seed, 0, i])
            image, boxes, ids = render_scene(rng, imgsz, classes, background=i in background)
            _write(out_dir, "val" if i in val else "train", "img%06d" % i, image, boxes, ids)
            bar.update()
        for k in range(sequences):
            rng = np.random.default_rng([seed, 1, k])
            split = "val" if k in val_sequences else "train"
            for f, (image, boxes, ids) in enumerate(render_sequence(rng, sequence_length, imgsz, classes)):
                _write(out_dir, split, "seq%03d_f%04d" % (k, f), image, boxes, ids)
                bar.update()
    return write_data_yaml(out_dir, classes)


def write_data_yaml(out_dir, classes):
    """data.yaml for ultralytics plus `categories:` (id -> critical|important|general)."""
    taxonomy = _taxonomy()
    categories = taxonomy.category_of_ids()
    data = {"path": os.path.abspath(out_dir), "train": "images/train", "val": "images/val", "nc": int(classes),
            "names": {i: taxonomy.names[i] for i in range(classes)},
            "categories": {i: categories[i] for i in range(classes)}}
    path = os.path.join(out_dir, "data.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    return path


def run_synth(config, progress=True):
    """The `synth` command: generate the dataset from config.synth, save the config beside it."""
    from trainer.config import save_config

    s = config.synth
    path = generate_dataset(s.out_dir, s.images, s.classes, s.seed, s.imgsz, s.background_fraction, s.sequences,
                            s.sequence_length, s.val_fraction, progress=progress)
    save_config(config, os.path.join(s.out_dir, "training_config.yaml"))
    return path

"""Choosing the K most informative images of an unlabelled pool.

`open_detector` turns a model argument (an .onnx file, a bundle folder or
archive, or a .pt exported on the fly) into an edge Pipeline; `score_pool`
runs it over every image with per-class score vectors kept; `choose` picks K
in descending uncertainty (ties by file name), skipping any image whose
perceptual hash lies within `max_distance` bits of one already picked, so
consecutive video frames are not sent to annotators twice.
"""
from __future__ import annotations

import ast
import dataclasses
import logging
import os
import tempfile

import cv2
import numpy as np

from edge.bundle import load_bundle, sha256_of
from edge.calibration import calibrate_scores
from edge.errors import EdgeError
from edge.images import read_image
from trainer.active import uncertainty as unc
from trainer.data.yolo_dataset import list_images, read_names
from trainer.errors import TrainerError

logger = logging.getLogger(__name__)

HASH_SIDE = 8            # 8x8 low-frequency DCT block: a 64-bit hash
DEFAULT_MAX_DISTANCE = 8  # bits out of 64; a re-encoded or lightly noised frame stays well under this


@dataclasses.dataclass(frozen=True)
class SelectOptions:
    """How `active select` scores and picks; validated by `check()`."""

    k: int = 2000
    strategy: str = "margin"      # Brust et al.: margin summed per image did best overall
    aggregate: str = "sum"
    low_conf: float = unc.DEFAULT_LOW_CONF
    conf: float = 0.05            # detection threshold while scoring: low boxes carry the doubt
    draft_conf: float = 0.25      # boxes at or above this go into the package as drafts
    empty_score: float = 0.0
    match_iou: float = unc.DEFAULT_MATCH_IOU
    max_distance: int = DEFAULT_MAX_DISTANCE
    imgsz: int = 640              # input size when a .pt is exported or an ONNX input is dynamic

    def check(self):
        if self.strategy not in unc.STRATEGIES:
            raise TrainerError("unknown strategy %r; choose one of %s" % (self.strategy, ", ".join(unc.STRATEGIES)))
        if self.aggregate not in unc.AGGREGATES:
            raise TrainerError("unknown aggregate %r; choose one of %s" % (self.aggregate, ", ".join(unc.AGGREGATES)))
        if self.k < 1:
            raise TrainerError("k is %d; pick at least one image" % self.k)
        for name in ("low_conf", "conf", "draft_conf", "match_iou"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise TrainerError("%s is %r; expected a value in 0..1" % (name, getattr(self, name)))
        if not 0 <= self.max_distance <= HASH_SIDE * HASH_SIDE:
            raise TrainerError("max_distance is %d; expected 0..%d bits" % (self.max_distance, HASH_SIDE ** 2))
        return self


# Perceptual hashing -----------------------------------------------------------

def perceptual_hash(image):
    """(64,) bool DCT hash of a BGR or grey image: low frequencies of a 32x32 grey copy above their median."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(grey, (4 * HASH_SIDE, 4 * HASH_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:HASH_SIDE, :HASH_SIDE].reshape(-1)
    # The DC term is the mean brightness: leave it out of the median so exposure shifts do not flip bits.
    return low > np.median(low[1:])


def hamming(hash_bits, others):
    """Bits differing between one hash (B,) and each row of others (M, B)."""
    return np.count_nonzero(np.asarray(others).reshape(-1, len(hash_bits)) != hash_bits, axis=1)


def choose(scores, hashes, names, k, max_distance=DEFAULT_MAX_DISTANCE):
    """Indices of up to k images: descending score, ties by name, near-duplicates of picks skipped."""
    scores = np.asarray(scores, np.float64)
    order = np.lexsort((np.asarray(names, dtype=str), -scores))
    hashes = np.asarray(hashes, bool).reshape(len(scores), HASH_SIDE * HASH_SIDE)
    picked, picked_hashes = [], np.zeros((0, hashes.shape[1]), bool)
    for i in order:
        if len(picked) >= k:
            break
        if len(picked) and hamming(hashes[i], picked_hashes).min() <= max_distance:
            continue
        picked.append(int(i))
        picked_hashes = np.vstack([picked_hashes, hashes[i]])
    return picked


# Opening the model ------------------------------------------------------------

@dataclasses.dataclass
class Detector:
    """A pipeline over one or several models plus what the package records about them."""

    pipeline: object
    names: list
    description: dict

    def close(self):
        self.pipeline.close()


def _onnx_names(path):
    """Class names ultralytics stores in an exported ONNX's metadata, or None."""
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own pybind classes (InvalidProtobuf, Fail, NoSuchFile, ...)
        raise TrainerError("cannot open model %s: %s; expected an ONNX detector, a bundle or a .pt checkpoint"
                           % (path, " ".join(str(e).split()))) from e
    try:
        raw = session.get_modelmeta().custom_metadata_map.get("names")
        table = ast.literal_eval(raw) if raw else None
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:  # literal_eval's failures
        raise TrainerError("%s: cannot parse the 'names' metadata: %s" % (path, e)) from e
    if isinstance(table, dict):
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in table):
            raise TrainerError("%s: the 'names' metadata has keys %.60r; expected class ids" % (path, list(table)))
        return [str(table[i]) for i in sorted(table)]
    return [str(n) for n in table] if isinstance(table, list) else None


def _single_onnx_pipeline(path, conf, imgsz, names):
    from edge.pipeline import Pipeline

    names = names or _onnx_names(path)
    if not names:
        raise TrainerError("%s carries no class names; pass --names data.yaml" % path)
    return Pipeline.from_models([("balanced", path)], names, imgsz=imgsz, decode_thr=conf)


def open_detector(model, conf=0.05, imgsz=640, names_file=None, work_dir=None):
    """A Detector for an .onnx file, a bundle folder/.tar.gz or a .pt checkpoint (exported to ONNX first)."""
    from edge.pipeline import Pipeline

    names = read_names(names_file) if names_file else None
    try:
        if os.path.isdir(model) or model.endswith((".tar.gz", ".tgz")):
            pipeline = Pipeline.open(load_bundle(model), decode_thr=conf)
            bundle = pipeline.bundle
            files = [{"name": m.name, "file": os.path.relpath(m.path, bundle.root), "sha256": m.sha256}
                     for m in bundle.models]
            return Detector(pipeline, bundle.names, {"kind": "bundle", "path": os.path.abspath(model), "models": files})
        if model.endswith(".pt"):
            from trainer.export import export_onnx

            folder = work_dir or tempfile.mkdtemp(prefix="reefwatch-active-")
            onnx_path = export_onnx(model, os.path.join(folder, os.path.basename(model)[:-3] + ".onnx"), imgsz)
            detector = open_detector(onnx_path, conf, imgsz, names_file)
            detector.description.update(kind="pt", path=os.path.abspath(model), checkpoint_sha256=sha256_of(model))
            return detector
        if model.endswith(".onnx"):
            pipeline = _single_onnx_pipeline(model, conf, imgsz, names)
            spec = pipeline.bundle.models[0]
            return Detector(pipeline, pipeline.bundle.names,
                            {"kind": "onnx", "path": os.path.abspath(model),
                             "models": [{"name": spec.name, "file": os.path.basename(model), "sha256": spec.sha256}]})
    except EdgeError as e:
        raise TrainerError("cannot open model %s: %s" % (model, e)) from e
    raise TrainerError("model %s is not an .onnx file, a bundle folder/.tar.gz or a .pt checkpoint" % model)


# Scoring the pool -------------------------------------------------------------

@dataclasses.dataclass
class PoolScores:
    """Per readable pool image: relative name, path, size, score, hash and draft boxes."""

    names: list
    paths: list
    sizes: list          # (width, height)
    scores: np.ndarray
    hashes: np.ndarray   # (n, 64) bool
    drafts: list         # Detections in image pixels, score >= draft_conf
    skipped: list        # {file_name, reason}


def pool_images(pool):
    """(relative POSIX names, paths) of every image under a folder, sorted."""
    if not os.path.isdir(pool):
        raise TrainerError("pool %s is not a folder of images" % pool)
    paths = list_images(pool)
    if not paths:
        raise TrainerError("pool %s holds no images" % pool)
    return [os.path.relpath(p, pool).replace(os.sep, "/") for p in paths], paths


def _calibrated_scores(detections, temperatures):
    matrix = detections.extras["class_scores"]
    if len(matrix) == 0:
        return np.zeros((0, len(temperatures)), np.float32)
    columns = [calibrate_scores(matrix[:, c], np.full(len(matrix), c), temperatures) for c in range(matrix.shape[1])]
    return np.stack(columns, axis=1)


def score_frame(per_model, pipeline, options, frame_wh):
    """(uncertainty, draft Detections) of one frame from its {model: Detections with class_scores}.

    Scores are calibrated and drafts fused as the device does for these models without TTA
    (the single or the ensemble profile): class score vectors exist for one view only.
    """
    records = list(per_model.values())
    settings = pipeline.bundle.profile_settings("single" if len(records) == 1 else "ensemble")
    matrices = [_calibrated_scores(d, settings.temperatures) for d in records]
    if options.strategy == "disagreement":
        if len(records) < 2:
            raise TrainerError("strategy 'disagreement' needs an ensemble bundle with two or more models; "
                               "this model has one")
        boxes = [d.xyxy for d in records]
        scores = [m.max(axis=1, initial=0.0) for m in matrices]
        values = np.concatenate(unc.disagreement_values(boxes, scores, [d.class_id for d in records],
                                                        options.match_iou))
        score = float(unc.aggregate(values, np.zeros(len(values), np.int64), 1, options.aggregate,
                                    options.empty_score)[0])
    else:
        # Several models: the mean of their image scores keeps the scale of one model's.
        score = float(np.mean([unc.image_uncertainty(options.strategy, m, options.aggregate, options.low_conf,
                                                     options.empty_score) for m in matrices]))
    drafts = pipeline.fuse_models(per_model, frame_wh, settings)
    return score, drafts[drafts.score >= options.draft_conf]


def score_pool(detector, names, paths, options, progress=None):
    """Run the detector over every image; unreadable ones are skipped and listed."""
    pipeline = detector.pipeline
    kept = {"names": [], "paths": [], "sizes": [], "scores": [], "hashes": [], "drafts": []}
    skipped = []
    items = list(zip(names, paths))
    for name, path in (progress(items) if progress else items):
        try:
            frame = read_image(path)
        except EdgeError as e:
            skipped.append({"file_name": name, "reason": str(e)})
            continue
        per_model = pipeline.detect_per_model(frame, class_scores=True)
        score, drafts = score_frame(per_model, pipeline, options, (frame.shape[1], frame.shape[0]))
        for key, value in (("names", name), ("paths", path), ("sizes", (frame.shape[1], frame.shape[0])),
                           ("scores", score), ("hashes", perceptual_hash(frame)), ("drafts", drafts)):
            kept[key].append(value)
    if skipped:
        logger.warning("skipped %d unreadable pool images (first: %s)", len(skipped), skipped[0]["reason"])
    return PoolScores(kept["names"], kept["paths"], kept["sizes"], np.asarray(kept["scores"], np.float64),
                      np.asarray(kept["hashes"], bool).reshape(-1, HASH_SIDE * HASH_SIDE), kept["drafts"], skipped)


def run_select(model, pool, out_path, options, names_file=None, progress=None):
    """Score a pool, choose K and write the package; returns a summary dict."""
    from trainer.active.package import write_package

    options.check()
    names, paths = pool_images(pool)
    detector = open_detector(model, options.conf, options.imgsz, names_file)
    try:
        scored = score_pool(detector, names, paths, options, progress)
    finally:
        detector.close()
    if not scored.names:
        raise TrainerError("no pool image under %s could be read (%s)" % (pool, scored.skipped[0]["reason"]))
    picked = choose(scored.scores, scored.hashes, scored.names, options.k, options.max_distance)
    selected = [{"file_name": scored.names[i], "path": scored.paths[i], "width": scored.sizes[i][0],
                 "height": scored.sizes[i][1], "uncertainty": scored.scores[i], "detections": scored.drafts[i]}
                for i in picked]
    s = scored.scores
    info = {"model": detector.description, "strategy": options.strategy, "aggregate": options.aggregate,
            "options": dataclasses.asdict(options), "k_requested": options.k, "k": len(picked),
            "pool": os.path.abspath(pool), "pool_size": len(names), "pool_scored": len(scored.names),
            "pool_skipped": scored.skipped,
            "pool_uncertainty": {"min": float(s.min()), "median": float(np.median(s)), "max": float(s.max())}}
    manifest = write_package(out_path, selected, detector.names, info)
    return {"package": out_path, "k": len(picked), "pool_size": len(names), "skipped": len(scored.skipped),
            "drafts": sum(len(e["detections"]) for e in selected), "manifest": manifest}

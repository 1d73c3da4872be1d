"""edge.metrics' mAP50 and faster-coco-eval's agree on the same detections; mAP50-95 is COCO's."""
import numpy as np
import pytest

from edge.detections import Detections
from edge.metrics import evaluate
from trainer.coco_eval import coco_map
from trainer.errors import TrainerError

NC = 3


def scene(seed, images=12, max_gt=6, dets_per_image=(0, 40), jitter_px=5.0, wrong_class=0.2):
    """Ground truth of random boxes and detections around them: jittered copies (some of the wrong class),
    duplicates and boxes far from anything, with random scores."""
    rng = np.random.default_rng(seed)
    predictions, ground_truth = [], []
    for _ in range(images):
        n = int(rng.integers(0, max_gt + 1))
        xy = rng.uniform(0, 300, (n, 2))
        gt = np.concatenate([xy, xy + rng.uniform(8, 80, (n, 2))], 1).astype(np.float32)
        gt_cls = rng.integers(0, NC, n)
        ground_truth.append((gt, gt_cls))
        m = int(rng.integers(*dets_per_image))
        if n:
            src = rng.integers(0, n, m)
            boxes, cls = gt[src] + rng.normal(0, jitter_px, (m, 4)), gt_cls[src].copy()
            flip = rng.random(m) < wrong_class
            cls[flip] = rng.integers(0, NC, int(flip.sum()))
        else:
            xy = rng.uniform(0, 300, (m, 2))
            boxes, cls = np.concatenate([xy, xy + 20], 1), rng.integers(0, NC, m)
        lo, hi = np.minimum(boxes[:, :2], boxes[:, 2:] - 1), np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        predictions.append(Detections(np.concatenate([lo, hi], 1).astype(np.float32),
                                      rng.random(m).astype(np.float32), cls.astype(np.int32)))
    return predictions, ground_truth


@pytest.mark.parametrize("seed, kwargs", [
    (0, {}),
    (1, {"jitter_px": 1.0}),                                # tight boxes: AP high, many IoU thresholds pass
    (2, {"jitter_px": 12.0, "wrong_class": 0.5}),           # loose boxes, many wrong labels
    (3, {"dets_per_image": (150, 300)}),                    # more than COCO's default 100 per image
    (4, {"max_gt": 1, "images": 30}),                       # many empty images
])
def test_edge_and_coco_map50_agree_on_the_same_detections(seed, kwargs):
    predictions, ground_truth = scene(seed, **kwargs)
    edge_map50 = evaluate(predictions, ground_truth, NC)["map50"]
    coco = coco_map(predictions, ground_truth, NC)
    assert 0.0 < edge_map50 < 1.0
    assert abs(coco["map50"] - edge_map50) <= 0.005
    assert coco["map50_95"] <= coco["map50"]
    assert coco["max_dets"] >= max(len(d) for d in predictions)


def test_perfect_detections_score_one_at_every_iou():
    _, ground_truth = scene(5)
    exact = [Detections(gt, np.linspace(1.0, 0.5, len(gt)).astype(np.float32), cls.astype(np.int32))
             for gt, cls in ground_truth]
    coco = coco_map(exact, ground_truth, NC)
    assert coco["map50"] == pytest.approx(1.0) and coco["map50_95"] == pytest.approx(1.0)


def test_a_class_with_ground_truth_and_no_detection_counts_zero():
    predictions, ground_truth = scene(6, jitter_px=1.0)
    no_class_0 = [d[d.class_id != 0] for d in predictions]
    edge_map50 = evaluate(no_class_0, ground_truth, NC)["map50"]
    assert coco_map(no_class_0, ground_truth, NC)["map50"] == pytest.approx(edge_map50, abs=0.005)


def test_pipeline_detections_agree(tmp_path):
    """Detections from edge.pipeline (every fused box, flip TTA over three models) against labels near them."""
    from edge.images import read_image
    from edge.pipeline import Pipeline
    from tests.test_daemon_process import head_model
    from tests.yolo_models import random_frames

    models = [(v, head_model(str(tmp_path / ("%s.onnx" % v)), seed=i))
              for i, v in enumerate(("recall", "balanced", "precision"))]
    rng = np.random.default_rng(7)
    predictions, ground_truth = [], []
    with Pipeline.from_models(models, ["a", "b", "c"], plan="flip") as pipeline:
        for path in random_frames(str(tmp_path / "frames"), 8, sizes=((64, 64), (96, 128))):
            det = pipeline.detect(read_image(path), all_scores=True)
            keep = rng.random(len(det)) < 0.6
            gt = det.xyxy[keep] + rng.normal(0, 1.5, (int(keep.sum()), 4)).astype(np.float32)
            ground_truth.append((gt, det.class_id[keep]))
            predictions.append(det)
    assert sum(len(d) for d in predictions) > 0
    edge_map50 = evaluate(predictions, ground_truth, NC)["map50"]
    assert 0.0 < edge_map50
    assert abs(coco_map(predictions, ground_truth, NC)["map50"] - edge_map50) <= 0.005


def test_no_ground_truth_is_nan_and_mismatched_lists_are_refused():
    predictions, _ = scene(8)
    empty = [(np.zeros((0, 4), np.float32), np.zeros(0, int))] * len(predictions)
    assert np.isnan(coco_map(predictions, empty, NC)["map50"])
    with pytest.raises(TrainerError, match="12 detection lists for 11 images"):
        coco_map(predictions, empty[:11], NC)

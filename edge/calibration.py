"""Per-class temperature scaling of confidences: p' = sigmoid(logit(p) / T_c).

T = 1 is the identity; T > 1 softens over-confident classes, T < 1 sharpens.
Temperatures are fitted by the trainer on the deployed outputs (after TTA and
fusion) and travel in the bundle manifest.
"""
import numpy as np

from edge.errors import ConfigError

_EPS = 1e-7


def logit(p):
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def check_temperatures(temperatures, num_classes):
    t = np.asarray(temperatures, dtype=np.float64).reshape(-1)
    if t.shape[0] != num_classes:
        raise ConfigError("calibration has %d temperatures for %d classes" % (t.shape[0], num_classes))
    if not np.all(np.isfinite(t)) or np.any(t <= 0):
        bad = int(np.flatnonzero(~np.isfinite(t) | (t <= 0))[0])
        raise ConfigError("temperature of class %d is %r; temperatures must be finite and > 0" % (bad, t[bad]))
    return t


def calibrate_scores(score, class_id, temperatures):
    """Scores rescaled by their class's temperature (float32, same order)."""
    score = np.asarray(score, dtype=np.float32)
    if score.size == 0:
        return score
    t = np.asarray(temperatures, dtype=np.float64)[np.asarray(class_id, dtype=np.int64)]
    calibrated = sigmoid(logit(score) / t)
    # T = 1 must be the exact identity, not a round trip through logit/sigmoid.
    return np.where(t == 1.0, score, calibrated).astype(np.float32)


def calibrate(detections, temperatures):
    return detections.with_scores(calibrate_scores(detections.score, detections.class_id, temperatures))

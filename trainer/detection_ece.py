"""Detection expected calibration error (D-ECE, Kueppers et al. 2020), confidence-only binning.

For detections with confidence p and a matched flag (true positive at the IoU
threshold), D-ECE = sum over equal-width confidence bins of n_b / N x
|precision(b) - mean confidence(b)|. It is what netcal 1.4.0 computes with
`ECE(bins, detection=True).measure(confidences, matched)` on a 1-D confidence
array: confidences are clipped to [eps, 1 - eps] (eps of their dtype), bins
are numpy.histogramdd's (half open, the last one closed), empty bins count
nothing. Implemented here so the trainer depends on neither netcal nor scipy
at run time; tests/test_detection_ece.py checks it against netcal.
"""
import collections

import numpy as np

from trainer.errors import TrainerError

ReliabilityBins = collections.namedtuple("ReliabilityBins", "edges count confidence precision")
ReliabilityBins.__doc__ = """Per bin: its edges (bins + 1), detection count, mean confidence and precision
(share matched); confidence and precision are NaN in empty bins."""


def _inputs(confidences, matched):
    confidences = np.asarray(confidences)
    if not np.issubdtype(confidences.dtype, np.floating):
        confidences = confidences.astype(np.float64)
    matched = np.asarray(matched).reshape(-1)
    confidences = confidences.reshape(-1)
    if confidences.shape != matched.shape:
        raise TrainerError("D-ECE: %d confidences for %d matched flags; expected one flag per detection"
                           % (confidences.size, matched.size))
    eps = np.finfo(confidences.dtype).eps
    return np.clip(confidences, eps, 1.0 - eps).astype(np.float64), matched.astype(np.float64)


def reliability_bins(confidences, matched, bins=10):
    """ReliabilityBins of detections over `bins` equal-width confidence bins on [0, 1]."""
    if int(bins) < 1:
        raise TrainerError("D-ECE: %r bins; expected at least 1" % bins)
    p, y = _inputs(confidences, matched)
    edges = np.linspace(0.0, 1.0, int(bins) + 1)
    # histogramdd's rule: bin i holds edges[i] <= p < edges[i + 1]; the last bin also holds p == 1.
    index = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, int(bins) - 1)
    count = np.bincount(index, minlength=int(bins)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(index, weights=p, minlength=int(bins)) / count
        precision = np.bincount(index, weights=y, minlength=int(bins)) / count
    return ReliabilityBins(edges, count.astype(np.int64), confidence, precision)


def detection_ece(confidences, matched, bins=10):
    """D-ECE of detections (confidences in [0, 1], matched flags); NaN when there are none."""
    table = reliability_bins(confidences, matched, bins)
    total = table.count.sum()
    if total == 0:
        return float("nan")
    full = table.count > 0
    gap = np.abs(table.precision[full] - table.confidence[full])
    return float(np.sum(gap * table.count[full]) / total)

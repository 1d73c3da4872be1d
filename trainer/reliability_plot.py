"""Reliability diagrams (PNG) of detections before and after temperature scaling.

One figure per inference profile, one panel per state: the precision of each
confidence bin against its mean confidence (a calibrated detector lies on the
diagonal), the gap shaded, and the share of detections per bin underneath.
matplotlib with the Agg backend, imported only when a plot is drawn.
"""
import numpy as np

from trainer.detection_ece import reliability_bins


def plot_reliability(path, panels, bins=10, title=""):
    """Write a PNG with one reliability panel per (label, confidences, matched flags); returns path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(panels), figsize=(4.6 * len(panels), 5.6), squeeze=False,
                             gridspec_kw={"height_ratios": (3, 1)}, sharex=True)
    for column, (label, confidences, matched) in enumerate(panels):
        _panel(axes[0][column], axes[1][column], label, confidences, matched, bins)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _panel(top, bottom, label, confidences, matched, bins):
    from trainer.detection_ece import detection_ece

    table = reliability_bins(confidences, matched, bins)
    centres = 0.5 * (table.edges[:-1] + table.edges[1:])
    width = table.edges[1] - table.edges[0]
    full = table.count > 0
    top.bar(centres[full], table.precision[full], width=width * 0.9, color="#4a7fb5", label="precision")
    low = np.minimum(table.confidence[full], table.precision[full])
    top.bar(centres[full], np.abs(table.confidence[full] - table.precision[full]), bottom=low, width=width * 0.9,
            color="none", edgecolor="#d0503c", hatch="//", label="gap to mean confidence")
    top.plot([0, 1], [0, 1], color="black", lw=1, ls="--", label="calibrated")
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="precision of the bin",
            title="%s: D-ECE %.4f (%d detections)" % (label, detection_ece(confidences, matched, bins),
                                                       int(table.count.sum())))
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    share = table.count / float(max(table.count.sum(), 1))
    bottom.bar(centres, share, width=width * 0.9, color="#888888")
    bottom.set(xlim=(0, 1), ylim=(0, max(1e-3, float(np.max(share)) * 1.1)), xlabel="confidence",
               ylabel="share")
    bottom.grid(alpha=0.3)

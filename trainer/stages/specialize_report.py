"""report.md, rounds.json entries and the one-line summary of `trainer specialize`, from the stage's records."""
from trainer.stages.training import CATEGORIES


def _f(value, digits=4):
    return "n/a" if value is None else "%.*f" % (digits, value)


def _oversampling_lines(oversampling):
    before, after = oversampling["before"], oversampling["after"]
    lines = ["## Critical-species oversampling", ""]
    if oversampling["note"]:
        lines += ["Note: %s." % oversampling["note"], ""]
    else:
        lines += ["Images holding a critical class (%s) are listed %d times (by reference, not copied)."
                  % (", ".join(oversampling["critical_classes"]), oversampling["times"]), ""]
    lines += ["| | before | after |", "|---|---:|---:|",
              "| images in the list | %d | %d |" % (before["images"], after["images"]),
              "| background images | %d | %d |" % (before["background_images"], after["background_images"]),
              "| instances | %d | %d |" % (before["instances"], after["instances"])]
    for category in CATEGORIES:
        lines.append("| %s instances (images) | %d (%d) | %d (%d) |" % (
            category, before["per_category"][category], before["images_per_category"][category],
            after["per_category"][category], after["images_per_category"][category]))
    for name in before["per_class"]:
        lines.append("| class %s | %d | %d |" % (name, before["per_class"][name], after["per_class"][name]))
    return lines + [""]


def _pool_lines(plan, section):
    if plan.pool_source == "negatives":
        source = "the negatives folder %s" % plan.pool_path
        if plan.excluded_labelled:
            source += " (%d images with labelled boxes left out)" % plan.excluded_labelled
    else:
        source = "the dataset's own train background frames (taken out of round 0's list)"
    lines = ["## Hard-negative pool", "",
             "Pool: %s: %d frames to mine, %d held out (never mined) for FP per background image."
             % (source, len(plan.mine), len(plan.holdout))]
    if section.iterations and not plan.mine:
        lines.append("Nothing to mine: the pool has no frame left after the holdout, so no mining round ran.")
    return lines + [""]


def _rounds_lines(records, threshold):
    lines = ["## Rounds (device Pipeline, threshold %.2f)" % threshold, "",
             "| round | mined | added | backgrounds / list | FP per background image | critical recall | recall "
             "| mAP50 | decision |", "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in records:
        figures = r.get("figures") or {}
        lines.append("| %d | %d | %d | %d / %d | %s | %s | %s | %s | %s |" % (
            r["round"], len(r["mined"]), len(r["added"]), r["backgrounds"], r["train_images"],
            _f(figures.get("fp_per_background_image")), _f(figures.get("critical_recall")),
            _f(figures.get("recall")), _f(figures.get("mAP50")), r["decision"]))
    return lines + [""]


def _first_epoch_lines(start, records):
    lines = ["## First fine-tuning epoch (ultralytics validation mAP50)", "",
             "| round | mAP50 of the starting weights | after the first epoch |", "|---:|---:|---:|"]
    for r in records:
        first = r.get("first_epoch")
        if first:
            begin = start["mAP50"] if r["round"] == 0 else first["start_mAP50"]
            lines.append("| %d | %s | %s |" % (r["round"], _f(begin), _f(first["first_epoch_mAP50"])))
    return lines + [""]


def report_text(plan, oversampling, start, records, metrics, section):
    """The human-readable report.md."""
    figures = start["figures"]
    lines = ["# trainer specialize", "", "- data: %s" % plan.data, "- starting weights: %s" % plan.weights,
             "- best round: %d (%s)" % (metrics["best_round"], metrics["reason"]),
             "- stopped: %s" % metrics["stopped"], "- best weights: %s" % metrics["weights"],
             "- starting weights on the device Pipeline: FP per background image %s, critical recall %s, "
             "recall %s, mAP50 %s" % (_f(figures.get("fp_per_background_image")), _f(figures.get("critical_recall")),
                                      _f(figures.get("recall")), _f(figures.get("mAP50"))), ""]
    lines += _oversampling_lines(oversampling)
    lines += _pool_lines(plan, section)
    lines += _rounds_lines(records, metrics["threshold"])
    lines += _first_epoch_lines(start, records)
    return "\n".join(lines)


def summary_line(metrics, start, report_path):
    device = metrics["device"]
    return ("specialize: best round %d; critical recall %s (start %s), FP per background image %s (start %s), "
            "mAP50 %s; weights %s; report %s" % (
                metrics["best_round"], _f(device.get("critical_recall")),
                _f(start["figures"].get("critical_recall")), _f(device.get("fp_per_background_image")),
                _f(start["figures"].get("fp_per_background_image")), _f(metrics.get("mAP50")),
                metrics["weights"], report_path))


def round_summary(record):
    figures = record.get("figures") or {}
    return {"round": record["round"], "mined": record["mined"], "added": record["added"],
            "backgrounds": record["backgrounds"], "train_images": record["train_images"],
            "fp_per_background_image": figures.get("fp_per_background_image"),
            "critical_recall": figures.get("critical_recall"), "recall": figures.get("recall"),
            "mAP50": figures.get("mAP50"), "first_epoch": record.get("first_epoch"),
            "kept": record["kept"], "decision": record["decision"]}

"""report.md of `trainer calibrate`: the calibration record as human-readable tables."""

CATEGORY_NAMES = ("critical", "important", "general")


def cell(value, digits=4):
    return "-" if value is None or value != value else ("%.*f" % (digits, value))


def write_report(path, record):
    lines = ["# Calibration", "",
             "%d images of the %s split; every fused detection above the decode threshold %s, matched at IoU >= %s; "
             "temperature p' = sigmoid(logit(p) / T) per class." % (
                 record["images"], record["split"], record["inputs"]["settings"]["decode_thr"],
                 record["inputs"]["settings"]["iou_thr"]), "",
             "Fusion weights (each model's mAP50 alone, original view, relative to the best, to the power %s): %s."
             % (record["inputs"]["settings"]["fusion_weight_power"], ", ".join(
                 "%s %.3f (mAP50 %s)" % (name, weight, cell(record["model_map50"][name]))
                 for name, weight in record["fusion_weights"].items())), "",
             "## D-ECE and log loss, before -> after", "",
             "| profile | category | D-ECE before | D-ECE after | log loss before | log loss after |",
             "|---|---|---|---|---|---|"]
    for p, d in record["d_ece"].items():
        loss = record["log_loss"][p]
        for cat in CATEGORY_NAMES + ("overall",):
            if cat in d["before"]:
                lines.append("| %s | %s | %s | %s | %s | %s |" % (p, cat, cell(d["before"][cat]), cell(d["after"][cat]),
                                                                  cell(loss["before"][cat]), cell(loss["after"][cat])))
    for p, entry in record["profiles"].items():
        f = entry["figures"]
        lines += ["", "## %s" % p, "", "mAP50 %s before, %s after (largest per-class AP50 change %s); pooled "
                  "temperature %s." % (cell(f["map50_before"]), cell(f["map50_after"]), cell(f["ap50_max_change"], 6),
                                       cell(f["pooled_temperature"], 3)), "",
                  "| class | category | matches / detections | T | threshold | rule | precision | recall | "
                  "AP50 before | AP50 after |", "|---|---|---|---|---|---|---|---|---|---|"]
        for c in f["per_class"]:
            lines.append("| %s | %s | %d / %d%s | %.3f | %.4f | %s | %s | %s | %s | %s |" % (
                c["name"], c["category"], c["matches"], c["detections"], " (pooled)" if c["pooled"] else "",
                c["temperature"], c["threshold"], c["rule"], cell(c["precision"]), cell(c["recall"]),
                cell(c["ap50_before"]), cell(c["ap50_after"])))
        lines += ["", _category_table(f["by_category"]), "", "![reliability](%s)" % record["reliability"][p]]
    if "cascade" in record:
        c = record["cascade"]
        lines += ["", "## cascade", "", "No settings of its own: stages %s with theirs. Escalated %s of frames before, "
                  "%s after." % (" then ".join(c["stages"]), cell(c["before"]["escalated_share"], 3),
                                 cell(c["after"]["escalated_share"], 3)), "",
                  "After calibration, at the operating thresholds of the stage that answered:", "",
                  _category_table(c["after"]["by_category"]), "", "![reliability](%s)" % record["reliability"]["cascade"]]
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def _category_table(by_category):
    rows = ["| category | precision | recall | true positives | reported | ground truth |", "|---|---|---|---|---|---|"]
    for cat, v in by_category.items():
        rows.append("| %s | %s | %s | %d | %d | %d |" % (cat, cell(v["precision"]), cell(v["recall"]), v["tp"],
                                                      v["kept"], v["gt"]))
    return "\n".join(rows)

"""report.md of `trainer bundle`: accuracy per profile, the energy table, the gate's verdict."""
import os


def _num(value, fmt="%.4f"):
    return "-" if value is None or value != value else fmt % value


def accuracy_table(accuracy, default):
    categories = sorted({k for f in accuracy.values() for k in f["recall_by_category"]})
    lines = ["| profile | mAP50 | mAP50-95 | mAP50 (COCO) | critical recall | critical precision | %s | frame ms |"
             % " | ".join("recall %s" % c for c in categories),
             "|---|---|---|---|---|---|%s---|" % ("---|" * len(categories))]
    for profile, f in accuracy.items():
        lines.append("| %s%s | %s | %s | %s | %s | %s | %s | %s |" % (
            profile, " (default)" if profile == default else "", _num(f["map50"]), _num(f["map50_95"]),
            _num(f["coco_map50"]), _num(f["critical_recall"]), _num(f.get("critical_precision")),
            " | ".join(_num(f["recall_by_category"].get(c)) for c in categories), _num(f["frame_ms"], "%.1f")))
    return lines


def ladder_lines(accuracy):
    """Each richer profile's mAP50 against the cheaper one before it, with its paired-bootstrap interval."""
    lines = []
    for profile, f in accuracy.items():
        check = f.get("map50_vs")
        if check:
            lines.append("- %s vs %s: mAP50 %+.4f (%d%% interval %+.4f to %+.4f): %s" % (
                profile, check["than"], check["difference"], round(100 * check["level"]), check["interval"][0],
                check["interval"][1], "holds within noise" if check["holds"] else "LOWER beyond noise"))
    return lines


def _daily(daily):
    if "error" in daily:
        return ["does not fit: %s" % daily["error"], "-", "-", "over"]
    return [_num(daily["inference_wh"], "%.3f"), _num(daily["idle_wh"], "%.2f"), _num(daily["total_wh"], "%.2f"),
            "fits" if daily["within_budget"] else "over"]


def energy_table(energy):
    here, device = energy["here"], energy["device"]
    lines = ["| profile | J/frame here (%s) | latency ms here | Wh/day here (inference / idle / total) | budget here |"
             % here["label"] + (" J/frame Nano (estimate) | latency ms Nano | Wh/day Nano (inference / idle / total)"
                                " | budget Nano |" if device else ""),
             "|---|---|---|---|---|" + ("---|---|---|---|" if device else "")]
    for profile, r in here["profiles"].items():
        row = [profile, _num(r["energy_per_frame_j"], "%.3f"), _num(1000 * r["latency_median_s"], "%.1f")]
        d = _daily(r["daily"])
        row += [" / ".join(d[:3]), d[3]]
        if device:
            e = device["profiles"][profile]
            dd = _daily(e["daily"])
            row += [_num(e["energy_per_frame_j"], "%.3f"), _num(1000 * e["latency_s"], "%.1f"), " / ".join(dd[:3]),
                    dd[3]]
        lines.append("| %s |" % " | ".join(row))
    return lines


def write_report(path, result):
    energy, verdict = result.energy, result.verdict
    deployment = energy["deployment"]
    state = "PASSED" if verdict["passed"] else ("FAILED, shipped with --force" if verdict["forced"] else "FAILED")
    lines = ["# trainer bundle", "", "Bundle: `%s`  " % result.bundle_dir,
             "Target: %s; default profile: **%s**" % (energy["target"], result.default_profile), "",
             "## Verdict: %s" % state, ""]
    for key, check in verdict["checks"].items():
        lines.append("- %s: %s (floor %s) %s" % (key, _num(check["value"]), _num(check["floor"]),
                                                  "ok" if check["passed"] else "FAILS"))
    lines += ["- %s" % f for f in verdict["failures"]]
    lines += ["", "## Accuracy on the validation split (edge.pipeline, every fused box for mAP; recall at each "
              "profile's operating thresholds)", ""] + accuracy_table(result.accuracy, result.default_profile)
    ladder = ladder_lines(result.accuracy)
    if ladder:
        lines += ["", "Richer profiles against cheaper ones (paired bootstrap over images, trainer.profile_noise):",
                  ""] + ladder
    lines += ["", "## Energy", "",
              "Deployment: %s. Budget %g Wh/day (%s scope), judged on the %s figures." % (
                  ", ".join("%s=%s" % kv for kv in sorted(deployment.items())), deployment["budget_wh_day"],
                  deployment["budget_scope"], "Jetson Nano (device table estimate)"
                  if energy["budget_source"] == "device" else "this machine's"),
              "Meter here: %s (%s)." % (energy["here"]["meter"], energy["here"]["label"])]
    if energy["device"]:
        lines.append("Nano figures: %s." % energy["device"]["source"])
    lines += [""] + energy_table(energy) + [""]
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write("\n".join(lines))
    os.replace(tmp, path)
    return path

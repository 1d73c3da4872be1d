"""report.md, the PNG plots and the printed summary of `python -m benchmarks run`.

The "where ReefWatch wins / loses" paragraph is computed from the figures: for each measure
(mAP50, mAP50-95, critical recall and precision, D-ECE, latency p50, frames/s: the cascade's p50 is its
cheap stage, its frames/s counts the escalations) the bundle's best profile against
ultralytics' best run, and the like-for-like pair (the single profile against ultralytics'
predict on the same ONNX file).
"""
import os

from trainer.stages.bundle_report import accuracy_table, ladder_lines

# (key, label, higher is better, format)
MEASURES = (("map50", "mAP50", True, "%.4f"), ("map50_95", "mAP50-95", True, "%.4f"),
            ("critical_recall", "critical recall", True, "%.4f"),
            ("critical_precision", "critical precision", True, "%.4f"), ("d_ece", "D-ECE", False, "%.4f"),
            ("p50_ms", "latency p50 ms", False, "%.1f"), ("fps", "frames/s", True, "%.2f"))
PLOTS = {"pr": "precision_recall.png", "reliability": "reliability.png", "tradeoff": "accuracy_vs_wh_day.png",
         "latency": "latency.png"}


def _num(value, fmt="%.4f"):
    return "-" if value is None or value != value else fmt % value


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def rows(results):
    """{row name: {measure key: value}} of the bundle's profiles and the comparison's runs, in that order."""
    out = {}
    for profile, a in results["accuracy"].items():
        out[profile] = dict(a, p50_ms=results["latency"][profile]["p50_ms"], fps=results["latency"][profile]["fps"])
    for name, c in (results.get("comparison") or {}).items():
        out[name] = dict(c, p50_ms=c["latency"]["p50_ms"], fps=c["latency"]["fps"])
    return out


def _best(table, names, key, higher):
    valued = [(table[n][key], n) for n in names if table[n].get(key) is not None and table[n][key] == table[n][key]]
    if not valued:
        return None
    return (max if higher else min)(valued, key=lambda vn: vn[0])


def _outcome(ours, theirs, higher):
    if ours == theirs:
        return "ties"
    return "wins" if (ours > theirs) == higher else "loses"


def verdicts(results):
    """[(measure label, (our row, value), (their row, value), "wins" | "loses" | "ties", value format)]."""
    comparison = results.get("comparison") or {}
    if not comparison:
        return []
    table = rows(results)
    ours, theirs = list(results["accuracy"]), list(comparison)
    out = []
    for key, label, higher, fmt in MEASURES:
        a, b = _best(table, ours, key, higher), _best(table, theirs, key, higher)
        if a and b:
            out.append(("best " + label, (a[1], a[0]), (b[1], b[0]), _outcome(a[0], b[0], higher), fmt))
    same = "ultralytics %s onnx" % results.get("single_model")
    if "single" in table and same in table:
        for key, label, higher, fmt in MEASURES:
            a, b = table["single"].get(key), table[same].get(key)
            if a is not None and b is not None and a == a and b == b:
                out.append(("same ONNX model alone, " + label, ("single", a), (same, b), _outcome(a, b, higher), fmt))
    return out


def wins_losses_text(results):
    """The plain paragraph: what ReefWatch wins, loses and ties against ultralytics, with the numbers."""
    found = verdicts(results)
    if not found:
        return []
    lines = []
    for outcome in ("wins", "loses", "ties"):
        mine = [v for v in found if v[3] == outcome]
        if mine:
            lines.append("ReefWatch %s on %s." % (outcome, "; ".join(
                "%s (%s %s against %s %s)" % (label, a[0], _num(a[1], fmt), b[0], _num(b[1], fmt))
                for label, a, b, _, fmt in mine)))
    return lines


def write_plots(folder, results, curves):
    """The four PNGs into `folder`; returns {plot: file name}."""
    from benchmarks.accuracy import plot_pr
    from trainer.reliability_plot import plot_reliability

    categories = [k for k in ("all", "critical", "important", "general")
                  if any(k in c["by_category"] for c in curves.values())]
    plot_pr({p: c["by_category"] for p, c in curves.items()}, os.path.join(folder, PLOTS["pr"]),
            panels=[(k, "all classes" if k == "all" else k + " species") for k in categories])
    plot_reliability(os.path.join(folder, PLOTS["reliability"]),
                     [(p, c["confidences"], c["matched"]) for p, c in curves.items()],
                     title="Reliability of every fused box (IoU 0.5)")
    plot_tradeoff(os.path.join(folder, PLOTS["tradeoff"]), results)
    plot_latency(os.path.join(folder, PLOTS["latency"]), results)
    return dict(PLOTS)


def plot_tradeoff(path, results):
    """mAP50 and critical recall against each profile's Wh/day (the budget's scope), the budget as a line."""
    plt = _pyplot()
    energy = results["energy"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for key, marker, label in (("map50", "o", "mAP50"), ("critical_recall", "s", "critical recall")):
        points = [(energy["profiles"][p]["daily"].get("budgeted_wh"), a.get(key), p)
                  for p, a in results["accuracy"].items()]
        points = [pt for pt in points if pt[0] is not None and pt[1] is not None]
        ax.scatter([x for x, _, _ in points], [y for _, y, _ in points], marker=marker, label=label)
        for x, y, name in points:
            ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    budget = energy["deployment"]["budget_wh_day"]
    ax.axvline(budget, color="tab:red", ls="--", lw=1, label="budget %g Wh/day" % budget)
    ax.set(xlabel="Wh/day, %s scope (%s)" % (energy["deployment"]["budget_scope"], energy["label"]),
           ylabel="accuracy", ylim=(0, 1.02), title="Accuracy against daily energy per profile")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_latency(path, results):
    """Per-frame latency distribution of each profile (and each ultralytics run)."""
    plt = _pyplot()
    series = [(p, r["latencies_ms"]) for p, r in results["latency"].items()]
    series += [(n, c["latency"]["latencies_ms"]) for n, c in (results.get("comparison") or {}).items()]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(series)), 4.4))
    ax.boxplot([s for _, s in series], whis=(5, 95))
    ax.set_yscale("log")  # single and full TTA differ by an order of magnitude
    ax.set_xticks(range(1, len(series) + 1))
    ax.set_xticklabels([n for n, _ in series], rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="ms per frame", title="Latency per frame (whiskers p5-p95)")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fits(daily):
    if "error" in daily:
        return "does not fit: " + daily["error"]
    return "fits" if daily["within_budget"] else "over"


def speed_energy_table(results):
    energy = results["energy"]
    lines = ["| profile | p50 ms | p95 ms | frames/s | time outside the backend (target) | J/frame gross (%s) | "
             "J/frame net of idle | Wh/day (%s scope) | budget | D-ECE |"
             % (energy["label"], energy["deployment"]["budget_scope"]), "|---|---|---|---|---|---|---|---|---|---|"]
    for profile, t in results["latency"].items():
        e = energy["profiles"][profile]
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            profile, _num(t["p50_ms"], "%.1f"), _num(t["p95_ms"], "%.1f"), _num(t["fps"], "%.2f"), _other_share(t),
            _num(e["energy_per_frame_j"], "%.3f"), _num(e["net_energy_per_frame_j"], "%.3f"),
            _num(e["daily"].get("budgeted_wh"), "%.3f"), _fits(e["daily"]),
            _num(results["accuracy"][profile]["d_ece"])))
    return lines


def _other_share(t):
    if t.get("other_share") is None:
        return "-"
    target = t.get("other_share_target")
    if target is None:
        return "%.1f%%" % (100 * t["other_share"])
    return "%.1f%% (<= %.0f%%: %s)" % (100 * t["other_share"], 100 * target, "ok" if t["other_share_ok"] else "MISS")


def daemon_line(d):
    return ("Daemon loop (%s, %d frames, store, crops, energy windows, HTTP): %.2f frames/s against %.2f for the bare "
            "pipeline, %.1f%% (target >= %.0f%%): %s." % (d["profile"], d["frames"], d["daemon_fps"], d["raw_fps"],
                                                         100 * d["ratio"], 100 * d["target_ratio"],
                                                         "ok" if d["ok"] else "BELOW TARGET"))


def comparison_table(results):
    table = rows(results)
    lines = ["| run | mAP50 | mAP50-95 | critical recall | critical precision | D-ECE | p50 ms | frames/s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in table.items():
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            name, _num(r["map50"]), _num(r["map50_95"]), _num(r.get("critical_recall")),
            _num(r.get("critical_precision")), _num(r.get("d_ece")),
            _num(r["p50_ms"], "%.1f"), _num(r["fps"], "%.2f")))
    return lines


def write_report(path, results):
    p, energy = results["provenance"], results["energy"]
    lines = ["# Benchmark suite", "", "Bundle `%s`; %d images of the %s split of `%s`; %d frames per profile for "
             "latency and energy; decode threshold %s." % (results["bundle"], results["images"], results["split"],
                                                           results["data"], results["frames"], results["decode_thr"]),
             "", "Command: `%s`  " % p["command"], "Date (UTC) %s, git %s, machine %s, versions %s." % (
                 p["date_utc"], p["git_revision"] or "(not a git checkout)", p["machine"], p["versions"]), "",
             "## Accuracy (edge.pipeline; mAP over every fused box, recall at each profile's operating thresholds)",
             ""] + accuracy_table(results["accuracy"], None)
    ladder = ladder_lines(results["accuracy"])
    if ladder:
        lines += ["", "Richer profiles against cheaper ones (paired bootstrap over images):", ""] + ladder
    lines += ["", "## Speed, energy and calibration", "",
              "Meter %s (%s); idle %s W; deployment %s." % (
                  energy["meter"], energy["label"], _num(energy["idle_power_w"], "%.2f"),
                  ", ".join("%s=%s" % kv for kv in sorted(energy["deployment"].items()))), ""]
    lines += speed_energy_table(results)
    if energy.get("skipped"):
        lines += ["", "Meters not available here: " + "; ".join("%s (%s)" % (s["meter"], s["reason"])
                                                            for s in energy["skipped"]) + "."]
    if results.get("daemon"):
        lines += ["", daemon_line(results["daemon"])]
    if results.get("comparison"):
        lines += ["", "## Against ultralytics predict (conf 0.001, the bundle's NMS IoU; same evaluator)", "",
                  "The bundle's profiles decode at %s, ultralytics at 0.001 (rerun with --decode-thr 0.001 to give "
                  "both the same low-score tail); recall is at the threshold the device applies to each model alone."
                  % (results["decode_thr"],), ""]
        lines += comparison_table(results) + [""] + wins_losses_text(results)
    lines += ["", "Plots: " + ", ".join("[%s](%s)" % (k, v) for k, v in sorted(results["plots"].items())), ""]
    with open(path, "w") as fh:
        fh.write("\n".join(lines))
    return path


def summary_lines(results):
    """What `python -m benchmarks run` prints: one line per profile (and per ultralytics run), the verdicts."""
    energy = results["energy"]
    out = ["%d images, %d frames per profile; meter %s (%s), idle %s W" % (
        results["images"], results["frames"], energy["meter"], energy["label"], _num(energy["idle_power_w"], "%.2f")),
        "%-32s %7s %8s %8s %6s %8s %8s %6s %9s %9s %8s" % (
            "run", "mAP50", "mAP50-95", "critical", "D-ECE", "p50 ms", "p95 ms", "fps", "J/frame", "net J", "Wh/day")]
    for name, r in rows(results).items():
        e = energy["profiles"].get(name) if name in results["accuracy"] else None
        lat = results["latency"][name] if e else r["latency"]
        out.append("%-32s %7s %8s %8s %6s %8s %8s %6s %9s %9s %8s" % (
            name, _num(r["map50"]), _num(r["map50_95"]), _num(r.get("critical_recall")), _num(r.get("d_ece"), "%.3f"),
            _num(lat["p50_ms"], "%.1f"), _num(lat["p95_ms"], "%.1f"), _num(lat["fps"], "%.2f"),
            _num(e and e["energy_per_frame_j"], "%.3f"), _num(e and e["net_energy_per_frame_j"], "%.3f"),
            _num(e and e["daily"].get("budgeted_wh"), "%.3f")))
    if results.get("daemon"):
        out.append(daemon_line(results["daemon"]))
    return out + wins_losses_text(results)

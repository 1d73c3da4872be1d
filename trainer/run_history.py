"""The stage history of `trainer run-all`: mAP50, critical recall and Wh/day after every stage.

The seed's "performance over weeks" table, from the figures each stage recorded in the run
state (trainer.run_state): one row per figure set (baseline, specialize, each ensemble
variant, each bundle profile), in stage order, with where the figures come from
(ultralytics' validation or edge's pipeline). Written as WORK/history.md and WORK/history.png.
"""
import math
import os

COLUMNS = (("mAP50", "mAP50"), ("critical_recall", "critical recall"), ("wh_day", "Wh/day"))


def history_rows(state, order):
    """[{stage, label, mAP50, critical_recall, wh_day, source}] in stage order, finished stages only."""
    rows = []
    for stage in order:
        record = state.get("stages", {}).get(stage) or {}
        for label, figures in (record.get("figures") or {}).items():
            rows.append(dict({key: _number(figures.get(key)) for key, _ in COLUMNS}, stage=stage, label=label,
                             source=figures.get("source") or "-"))
    return rows


def _number(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _cell(value, digits):
    return "-" if value is None else "%.*f" % (digits, value)


def history_markdown(rows, state, order):
    lines = ["# run-all stage history", "",
             "Figures after each stage where it produced them; `-`: not measured by that stage.", "",
             "| stage | model / profile | mAP50 | critical recall | Wh/day | measured by |", "|---|---|---|---|---|---|"]
    lines += ["| %s | %s | %s | %s | %s | %s |" % (r["stage"], r["label"], _cell(r["mAP50"], 4),
                                                 _cell(r["critical_recall"], 4), _cell(r["wh_day"], 2), r["source"])
              for r in rows]
    if not rows:
        lines.append("| - | no stage has produced figures yet | - | - | - | - |")
    lines += ["", "## Stages", "", "| stage | status | seconds | note |", "|---|---|---|---|"]
    for stage in order:
        record = state.get("stages", {}).get(stage)
        if record:
            note = " ".join(str(record.get("note") or record.get("error") or "").split())
            lines.append("| %s | %s | %s | %s |" % (stage, record.get("status"),
                                                   _cell(_number(record.get("duration_s")), 1),
                                                   note.replace("|", "/")[:200]))
    return "\n".join(lines) + "\n"


def plot_history(rows, path):
    """One panel per figure: its value per row, in stage order (rows without it left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(COLUMNS), figsize=(4.2 * len(COLUMNS), 3.6), squeeze=False)
    for ax, (key, title) in zip(axes[0], COLUMNS):
        shown = [(r["label"], r[key]) for r in rows if r[key] is not None]
        if shown:
            ax.plot(range(len(shown)), [v for _, v in shown], marker="o")
            ax.set_xticks(range(len(shown)))
            ax.set_xticklabels([label for label, _ in shown], rotation=45, ha="right", fontsize=7)
        else:
            ax.text(0.5, 0.5, "not measured yet", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
        ax.set_title(title)
        ax.grid(alpha=0.3)
    fig.suptitle("ReefWatch run-all: figures after each stage")
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def write_history(work, state, order):
    """WORK/history.md and WORK/history.png; returns their paths."""
    rows = history_rows(state, order)
    md = os.path.join(work, "history.md")
    tmp = md + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(history_markdown(rows, state, order))
    os.replace(tmp, md)
    return md, plot_history(rows, os.path.join(work, "history.png"))

"""Reports for import, validation and split: JSON, Markdown and a class-distribution PNG."""
from __future__ import annotations

import json
import os

from trainer.data.taxonomy import CATEGORIES

MAX_LISTED = 50  # issues listed in Markdown; the JSON keeps them all


def category_markdown(category_counts):
    """Markdown table: category | classes | boxes | images."""
    lines = ["| category | classes | boxes | images |", "|---|---|---|---|"]
    for cat in CATEGORIES:
        c = category_counts.get(cat, {})
        lines.append("| %s | %d | %d | %d |" % (cat, c.get("classes", 0), c.get("boxes", 0), c.get("images", 0)))
    return lines


def render_markdown(title, data):
    """Markdown for a report dict: scalars, category table, class table, issues (truncated)."""
    lines = ["# " + title, "", "| field | value |", "|---|---|"]
    for key, value in data.items():
        if isinstance(value, (int, float, str, bool)) or value is None:
            lines.append("| %s | %s |" % (key, value))
        elif isinstance(value, (list, dict)) and key not in ("class_counts", "category_counts"):
            lines.append("| %s | %d |" % (key, len(value)))
    if data.get("notes"):
        lines += ["", "## Notes", ""] + ["- " + n for n in data["notes"]]
    if "category_counts" in data:
        lines += ["", "## Class distribution by category", ""] + category_markdown(data["category_counts"])
    if data.get("class_counts"):
        lines += ["", "| class | boxes |", "|---|---|"]
        lines += ["| %s | %d |" % kv for kv in sorted(data["class_counts"].items(), key=lambda kv: -kv[1])]
    if data.get("unmapped"):
        lines += ["", "## Unmapped labels (boxes)", "", "| label | boxes |", "|---|---|"]
        lines += ["| %s | %d |" % kv for kv in data["unmapped"].items()]
    for key in ("bad", "quarantined", "duplicates", "missing_images", "straddling_groups"):
        items = data.get(key) or []
        if items:
            lines += ["", "## %s (%d)" % (key.replace("_", " "), len(items)), ""]
            lines += ["- " + _issue_line(i) for i in items[:MAX_LISTED]]
            if len(items) > MAX_LISTED:
                lines.append("- ... %d more in the JSON report" % (len(items) - MAX_LISTED))
    return "\n".join(lines) + "\n"


def _issue_line(item):
    if isinstance(item, dict):
        if "reasons" in item:
            return "%s: %s" % (item["name"], "; ".join(item["reasons"]))
        if "duplicate_of" in item:
            return "%s duplicates %s" % (item["name"], item["duplicate_of"])
    return str(item)


def plot_categories(category_counts, class_counts, path, title):
    """Bar chart of boxes per class, coloured by category (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.5))
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 3]})
    colours = {"critical": "#c0392b", "important": "#e67e22", "general": "#2980b9"}
    ax1.bar(list(CATEGORIES), [category_counts.get(c, {}).get("boxes", 0) for c in CATEGORIES],
            color=[colours[c] for c in CATEGORIES])
    ax1.set_title("boxes per category")
    names = list(class_counts)
    ax2.bar(range(len(names)), [class_counts[n] for n in names])
    ax2.set_xticks(range(len(names)))
    ax2.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax2.set_title("boxes per class")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    return path


def write_report(data, out_dir, stem, title, taxonomy=None):
    """Write <stem>.json, <stem>.md and <stem>_classes.png; returns the three paths."""
    os.makedirs(out_dir, exist_ok=True)
    if hasattr(data, "to_dict"):
        data = data.to_dict()
    if taxonomy is not None and data.get("class_counts"):  # order classes by project id
        order = {n: i for i, n in enumerate(taxonomy.names)}
        data["class_counts"] = dict(sorted(data["class_counts"].items(), key=lambda kv: order.get(kv[0], 1e9)))
    paths = [os.path.join(out_dir, stem + ext) for ext in (".json", ".md", "_classes.png")]
    with open(paths[0], "w") as f:
        json.dump(data, f, indent=1, default=str)
    with open(paths[1], "w") as f:
        f.write(render_markdown(title, data))
    plot_categories(data.get("category_counts") or {}, data.get("class_counts") or {}, paths[2], title)
    return paths


def summary_lines(data):
    """Short plain-text summary for a command's stream."""
    if hasattr(data, "to_dict"):
        data = data.to_dict()
    lines = []
    for key, value in data.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            lines.append("%s: %s" % (key, value))
        elif isinstance(value, list) and key not in ("files", "notes", "ratios"):
            lines.append("%s: %d" % (key, len(value)))
    if data.get("unmapped"):
        lines.append("unmapped labels (boxes): " + ", ".join("%s=%d" % kv for kv in data["unmapped"].items()))
    if data.get("images") and isinstance(data["images"], dict):
        lines.append("split images: " + ", ".join("%s=%d" % kv for kv in data["images"].items()))
    lines += data.get("notes") or []
    return lines

"""Human-facing outputs of a run: training-curve PNGs and the summary table."""
from __future__ import annotations

import json
import os
from typing import Mapping

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers or CI
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(histories: Mapping[str, Mapping[str, list[float]]], keys: list[str], path: str,
                title: str) -> str:
    """One panel per metric key; one line per run (e.g. pretrained vs scratch)."""
    keys = [k for k in keys if any(k in h for h in histories.values())]
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(4.2 * max(len(keys), 1), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for label, history in histories.items():
            for prefix, style in (("", "-"), ("val_", "--")):
                values = history.get(prefix + key)
                if values:
                    ax.plot(range(1, len(values) + 1), values, style, label=f"{label} {prefix or 'train_'}{key}")
        ax.set_xlabel("epoch (checkpoint interval)")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_table(rows: list[list[str]]) -> str:
    """A plain aligned text table (first row is the header)."""
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# Columns of the scores table, in order; a family shows the ones it has.
SCORE_COLUMNS = ("accuracy", "accuracy_ci95", "f1", "matthews_corr", "pearson", "spearman", "trainable_parameters")


def scores_table(results: Mapping[str, Mapping]) -> str:
    """One row per evaluated model (any family, zero-shot too); a metric a row
    lacks is left blank. Empty string when there is nothing to show."""
    rows = {k: v for k, v in results.items() if isinstance(v, Mapping) and "split" in v}
    if not rows:
        return ""
    columns = [c for c in SCORE_COLUMNS if any(c in v for v in rows.values())]
    header = ["model", "split", "examples"] + [c.replace("accuracy_ci95", "95% CI") for c in columns]
    return format_table([header] + [[k, v["split"], v["examples"]] + [_cell(v.get(c)) for c in columns]
                                    for k, v in rows.items()])


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(f"{x:.3f}" for x in value) + "]"
    return f"{value:,}" if isinstance(value, int) else f"{value:.4f}"


def write_json(path: str, payload) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True, default=float)
    return path

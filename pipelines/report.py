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


def selection_table(results: Mapping[str, Mapping]) -> str:
    """One row per fine-tuned model: the best validation score of each recipe
    setting tried (empty without a grid), the kept one marked with *."""
    rows = {k: v for k, v in results.items() if isinstance(v, Mapping) and v.get("validation_by_setting")}
    if not rows:
        return ""
    settings = list(dict.fromkeys(s for v in rows.values() for s in v["validation_by_setting"]))
    table = []
    for key, v in rows.items():
        scores = v["validation_by_setting"]
        table.append([key] + [_cell(scores.get(s)) + ("*" if s == v["chosen_setting"] else "") for s in settings])
    return format_table([["model"] + settings] + table)


def seeds_table(results: Mapping[str, Mapping]) -> str:
    """One row per variant fine-tuned with several seeds: its main score
    (accuracy, or Pearson's r) per seed, their mean and sample std. Empty
    when every model ran once."""
    rows = {k: v["seeds"] for k, v in results.items()
            if isinstance(v, Mapping) and v.get("seeds", {}).get("n", 0) > 1}
    if not rows:
        return ""
    seeds = list(dict.fromkeys(s for v in rows.values() for s in v["by_seed"]))
    header = ["model", "score", "n", "mean", "std"] + [f"seed {s}" for s in seeds]
    return format_table([header] + [[k, v["metric"], v["n"], _cell(v["mean"]), _cell(v["std"])]
                                    + [_cell(v["by_seed"].get(s)) for s in seeds] for k, v in rows.items()])


def comparison_table(results: Mapping[str, Mapping]) -> str:
    """One row per model compared with its task's pre-trained one: the
    difference of mean accuracies (this model minus the pre-trained), its
    95% interval and how it was computed, and the exact sign test: the
    examples only this model gets right (wins), only the pre-trained one
    (losses), and the two-sided p. Empty without comparisons."""
    rows = {k: v["vs_pretrained"] for k, v in results.items() if isinstance(v, Mapping) and "vs_pretrained" in v}
    if not rows:
        return ""
    header = ["model", "minus", "accuracy diff", "95% CI", "interval", "wins", "losses", "p (sign test)"]
    return format_table([header] + [[k, c["reference"], _cell(c["diff"]), _cell(c["ci95"]), c["interval"],
                                     c["sign_test"]["wins"], c["sign_test"]["losses"], f"{c['sign_test']['p']:.3g}"]
                                    for k, c in rows.items()])


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(f"{x:.3f}" for x in value) + "]"
    return f"{value:,}" if isinstance(value, int) else f"{value:.4f}"


def figure2(results: Mapping[str, Mapping], tasks: list[str], n_layer: int, stem: str) -> dict[str, str]:
    """The paper's Figure 2 from the evaluate results: test accuracy against
    the number of pre-trained blocks transferred (left; n_layer is the full
    fine-tuned model, and the scratch model is drawn as a line) and zero-shot
    accuracy against pre-training steps (right). Writes `stem`.png and the
    numbers as `stem`.json; returns both paths."""
    numbers: dict = {"layers_transferred": {}, "zero_shot_by_step": {}}
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    for task in tasks:
        rows = {n: results.get(f"{task}/layers_{n}") for n in range(n_layer)}
        rows[n_layer] = results.get(f"{task}/pretrained")
        points = [(n, r["accuracy"], r.get("accuracy_ci95")) for n, r in rows.items() if r and "accuracy" in r]
        numbers["layers_transferred"][task] = [{"layers": n, "accuracy": a, "accuracy_ci95": ci}
                                               for n, a, ci in points]
        if points:
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            line = left.plot(xs, ys, "o-", label=task)[0]
            lows = [p[2][0] if p[2] else p[1] for p in points]
            highs = [p[2][1] if p[2] else p[1] for p in points]
            left.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.15)
            scratch = results.get(f"{task}/scratch", {}).get("accuracy")
            if scratch is not None:
                left.axhline(scratch, color=line.get_color(), ls=":", label=f"{task}: no pre-training")
        curve = results.get(f"{task}/zero_shot_by_step") or {}
        steps = sorted(curve, key=int)
        numbers["zero_shot_by_step"][task] = [{"step": int(k), "accuracy": curve[k]["accuracy"]} for k in steps]
        if steps:
            # Step 0 cannot sit on a log axis: it is drawn at 1 (the untrained model).
            right.plot([max(int(k), 1) for k in steps], [curve[k]["accuracy"] for k in steps], "o-", label=task)
    left.set(xlabel="pre-trained blocks transferred (0: embeddings only)", ylabel="test accuracy",
             title="Fine-tuned, by layers transferred")
    right.set(xlabel="pre-training steps (log; 0 drawn at 1)", ylabel="test accuracy",
              title="Zero-shot, during pre-training")
    right.set_xscale("log")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(stem + ".png", dpi=110)
    plt.close(fig)
    write_json(stem + ".json", numbers)
    return {"png": stem + ".png", "json": stem + ".json"}


def data_efficiency_table(results: Mapping[str, Mapping]) -> str:
    """One row per task and number of labelled training examples: the
    pre-trained and scratch models' mean accuracy (+- std over seeds) and the
    paired gain with its 95% interval and sign-test p. Empty without curves."""
    rows = [["task", "examples", "pre-trained", "scratch", "gain", "95% CI", "p (sign test)"]]
    for key, curve in _curves(results):
        for point in curve["points"]:
            gain = point["gain"]
            rows.append([key, f"{point['train_examples']:,}", _mean_std(point["pretrained"]),
                         _mean_std(point["scratch"]), _cell(gain["diff"]), _cell(gain["ci95"]),
                         f"{gain['sign_test']['p']:.3g}"])
    return format_table(rows) if len(rows) > 1 else ""


def data_efficiency(results: Mapping[str, Mapping], path: str) -> str:
    """Test accuracy against labelled training examples (log axis), pre-trained
    and from scratch, mean and std over seeds, one panel per task; the PNG's path."""
    curves = _curves(results)
    fig, axes = plt.subplots(1, max(len(curves), 1), figsize=(4.8 * max(len(curves), 1), 3.6), squeeze=False)
    for ax, (task, curve) in zip(axes[0], curves):
        xs = [p["train_examples"] for p in curve["points"]]
        for variant, style in (("pretrained", "o-"), ("scratch", "s--")):
            means = [p[variant]["mean"] for p in curve["points"]]
            stds = [p[variant]["std"] or 0.0 for p in curve["points"]]
            ax.errorbar(xs, means, yerr=stds, fmt=style, capsize=3,
                        label="pre-trained" if variant == "pretrained" else "from scratch")
        ax.set_xscale("log")
        ax.set(xlabel="labelled training examples (log)", ylabel="test accuracy (mean +- std over seeds)",
               title=task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _curves(results: Mapping[str, Mapping]) -> list[tuple[str, Mapping]]:
    return [(k.removesuffix("/data_efficiency"), v) for k, v in results.items() if k.endswith("/data_efficiency")]


def _mean_std(seeds: Mapping) -> str:
    return f"{seeds['mean']:.4f}" + (f" +- {seeds['std']:.4f}" if seeds.get("std") is not None else "")


def write_json(path: str, payload) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True, default=float)
    return path

"""Task metrics as the paper reports them (GLUE conventions).

accuracy for classification/entailment/multiple choice, F1 for similarity
(MRPC/QQP), Matthews correlation for CoLA, Pearson/Spearman for STS-B.
Computed in numpy/scipy on whole evaluation sets: these are not averages of
per-batch values (F1, MCC and correlations don't decompose that way).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats


def accuracy(labels, predictions) -> float:
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    return float(np.mean(labels == predictions)) if labels.size else float("nan")


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion (accuracy on `total` items)."""
    if total <= 0:
        return float("nan"), float("nan")
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return float(centre - half), float(centre + half)


def f1(labels, predictions, num_labels: int = 2) -> float:
    """Binary F1 of class 1 for two classes, macro-F1 otherwise."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    classes = [1] if num_labels == 2 else range(num_labels)
    scores = []
    for c in classes:
        tp = np.sum((predictions == c) & (labels == c))
        fp = np.sum((predictions == c) & (labels != c))
        fn = np.sum((predictions != c) & (labels == c))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def matthews_corrcoef(labels, predictions) -> float:
    """Multi-class Matthews correlation (Gorodkin's R_K); 0 when undefined."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    classes = np.union1d(labels, predictions)
    confusion = np.zeros((len(classes), len(classes)), dtype=np.float64)
    index = {c: i for i, c in enumerate(classes)}
    for y, p in zip(labels, predictions):
        confusion[index[y], index[p]] += 1
    t, p = confusion.sum(axis=1), confusion.sum(axis=0)
    n, correct = confusion.sum(), np.trace(confusion)
    denominator = math.sqrt((n * n - p @ p) * (n * n - t @ t))
    return float((correct * n - t @ p) / denominator) if denominator else 0.0


def pearson(targets, scores) -> float:
    return float(stats.pearsonr(np.asarray(targets, float), np.asarray(scores, float))[0])


def spearman(targets, scores) -> float:
    return float(stats.spearmanr(np.asarray(targets, float), np.asarray(scores, float))[0])


def task_metrics(family: str, labels, outputs, num_labels: int | None = None) -> dict[str, float]:
    """All metrics for a task family from labels and model outputs
    (logits [n, classes] / [n, choices], or scores [n] for regression)."""
    outputs = np.asarray(outputs)
    if family == "regression":
        return {"pearson": pearson(labels, outputs), "spearman": spearman(labels, outputs),
                "mse": float(np.mean((np.asarray(labels, float) - outputs) ** 2))}
    predictions = outputs.argmax(axis=-1)
    labels = np.asarray(labels)
    result = {"accuracy": accuracy(labels, predictions),
              "accuracy_ci95": list(wilson_interval(int(np.sum(labels == predictions)), int(labels.size)))}
    if family != "multiple_choice":
        result["f1"] = f1(labels, predictions, num_labels or outputs.shape[-1])
        result["matthews_corr"] = matthews_corrcoef(labels, predictions)
    return result

"""Task metrics as the paper reports them (GLUE conventions).

accuracy for classification/entailment/multiple choice, F1 for similarity
(MRPC/QQP), Matthews correlation for CoLA, Pearson/Spearman for STS-B.
Computed in numpy/scipy on whole evaluation sets: these are not averages of
per-batch values (F1, MCC and correlations don't decompose that way).

Comparing two models on the same test examples (docs/seeds.md): the mean and
sample std of a score over fine-tuning seeds, the paired difference of mean
accuracies with a 95% interval, and the exact sign test on the examples that
one model gets right and the other wrong.
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


def predictions(family: str, outputs) -> np.ndarray:
    """A model's answer per example: the argmax class or choice of the logits
    [n, classes] / [n, choices], or the score [n] itself for regression."""
    outputs = np.asarray(outputs)
    return outputs if family == "regression" else outputs.argmax(axis=-1)


def task_metrics(family: str, labels, outputs, num_labels: int | None = None) -> dict[str, float]:
    """All metrics for a task family from labels and model outputs
    (logits [n, classes] / [n, choices], or scores [n] for regression)."""
    outputs = np.asarray(outputs)
    if family == "regression":
        return {"pearson": pearson(labels, outputs), "spearman": spearman(labels, outputs),
                "mse": float(np.mean((np.asarray(labels, float) - outputs) ** 2))}
    predicted, labels = predictions(family, outputs), np.asarray(labels)
    result = {"accuracy": accuracy(labels, predicted),
              "accuracy_ci95": list(wilson_interval(int(np.sum(labels == predicted)), int(labels.size)))}
    if family != "multiple_choice":
        result["f1"] = f1(labels, predicted, num_labels or outputs.shape[-1])
        result["matthews_corr"] = matthews_corrcoef(labels, predicted)
    return result


def mean_and_std(values) -> tuple[float, float | None]:
    """The mean and the sample standard deviation (n - 1 in the denominator)
    of a score over runs, e.g. fine-tuning seeds; the std is None for one run."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), (float(values.std(ddof=1)) if values.size > 1 else None)


def paired_difference(a, b, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0) -> dict:
    """Mean accuracy of model A minus that of model B, with an interval.

    `a`, `b`: per-example correctness (bool or 0/1), shape [seeds, examples]
    or [examples] for one seed; row k of `a` is paired with row k of `b`
    (the same fine-tuning seed) and column i with column i (the same example).

    With two or more seeds the interval is Student's t over the per-seed
    differences of accuracy: it measures how much the difference moves from
    seed to seed, on this one test set. With one seed there is no seed
    spread to measure, so it is a percentile bootstrap over examples: each
    resample draws the test set anew, keeping each example's pair together.
    Returns {"diff", "ci95": [low, high], "interval": how it was computed}.
    """
    a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    if a.shape != b.shape:
        raise ValueError(f"paired correctness must have one shape, got {a.shape} and {b.shape}")
    by_seed = a.mean(axis=1) - b.mean(axis=1)
    diff, spread = mean_and_std(by_seed)
    if spread is not None:
        n = by_seed.size
        half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * spread / math.sqrt(n)
        return {"diff": diff, "ci95": [diff - half, diff + half], "interval": f"t over {n} paired seeds"}
    low, high = _bootstrap_interval(a[0] - b[0], confidence, resamples, seed)
    return {"diff": diff, "ci95": [low, high], "interval": f"paired bootstrap over {a.shape[1]} examples"}


def _bootstrap_interval(differences: np.ndarray, confidence: float, resamples: int,
                        seed: int) -> tuple[float, float]:
    """Percentile interval of the mean of per-example differences in {-1, 0, 1}.

    Resampling n examples with replacement only changes how many of each
    value are drawn, so the counts are drawn from their multinomial directly:
    the same distribution as resampling indices, in O(resamples) memory."""
    n = differences.size
    shares = [np.mean(differences == v) for v in (1.0, 0.0, -1.0)]
    counts = np.random.default_rng(seed).multinomial(n, shares, size=resamples)
    means = (counts[:, 0] - counts[:, 2]) / n
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def sign_test(a, b) -> dict:
    """The exact two-sided sign test (McNemar's exact test) of paired correctness.

    `a`, `b` as in `paired_difference`; every (seed, example) pair counts once,
    so several seeds are pooled by pairing seed k of A with seed k of B. Only
    discordant pairs carry evidence: `wins` (A right, B wrong) and `losses`
    (A wrong, B right); under "A and B are equally good" each discordant pair
    is a fair coin, and p is the binomial probability of a split at least as
    uneven. Returns {"wins", "losses", "p"}; p = 1 without discordant pairs.
    """
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"paired correctness must have one shape, got {a.shape} and {b.shape}")
    wins, losses = int(np.sum(a & ~b)), int(np.sum(~a & b))
    p = stats.binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
    return {"wins": wins, "losses": losses, "p": float(p)}

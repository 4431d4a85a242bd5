"""Task metrics against hand-computed values."""
import math

import numpy as np
import pytest

from gpt_keras import metrics


def test_binary_metrics_match_their_definitions():
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    preds = np.array([1, 1, 0, 0, 0, 1, 0, 1])
    tp, tn, fp, fn = 3, 3, 1, 1
    assert metrics.accuracy(labels, preds) == 6 / 8
    assert metrics.f1(labels, preds) == pytest.approx(2 * tp / (2 * tp + fp + fn))
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert metrics.matthews_corrcoef(labels, preds) == pytest.approx(mcc)
    assert metrics.matthews_corrcoef(labels, np.ones_like(labels)) == 0.0  # undefined -> 0


def test_correlations_and_task_metrics():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert metrics.pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert metrics.spearman(x, x ** 3) == pytest.approx(1.0)
    out = metrics.task_metrics("classification", [0, 1, 2], np.eye(3))
    ci = out.pop("accuracy_ci95")
    assert out == {"accuracy": 1.0, "f1": 1.0, "matthews_corr": 1.0}
    assert ci == pytest.approx([0.4385, 1.0], abs=1e-4)  # Wilson: 3 of 3 is far from certain
    assert set(metrics.task_metrics("regression", x, x)) == {"pearson", "spearman", "mse"}
    assert set(metrics.task_metrics("multiple_choice", [0, 1], np.eye(2))) == {"accuracy", "accuracy_ci95"}


def test_wilson_interval_of_an_accuracy():
    low, high = metrics.wilson_interval(594, 888)  # the demo's pre-trained row
    assert low == pytest.approx(0.6373, abs=1e-4) and high == pytest.approx(0.6991, abs=1e-4)
    assert metrics.wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    assert all(np.isnan(metrics.wilson_interval(0, 0)))

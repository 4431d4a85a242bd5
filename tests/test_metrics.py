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


def test_sign_test_is_the_exact_binomial_on_discordant_pairs():
    right, wrong = np.ones(10, bool), np.zeros(10, bool)
    assert metrics.sign_test(right, wrong) == {"wins": 10, "losses": 0, "p": pytest.approx(2 / 1024)}
    # 3 wins, 1 loss and 6 ties: p = P(X <= 1) + P(X >= 3) for X ~ Bin(4, 1/2) = 10/16.
    a = np.array([1, 1, 1, 0, 1, 1, 0, 0, 1, 0])
    b = np.array([0, 0, 0, 1, 1, 1, 0, 0, 1, 0])
    assert metrics.sign_test(a, b) == {"wins": 3, "losses": 1, "p": pytest.approx(10 / 16)}
    assert metrics.sign_test(a, a)["p"] == 1.0  # no discordant pair: no evidence either way
    # Seeds are pooled pair by pair: two seeds of 5 one-way discordant pairs are 10 of them.
    assert metrics.sign_test(np.ones((2, 5)), np.zeros((2, 5)))["p"] == pytest.approx(2 / 1024)


def test_mean_and_sample_std_over_seeds():
    mean, std = metrics.mean_and_std([0.6, 0.7, 0.8])
    assert mean == pytest.approx(0.7) and std == pytest.approx(0.1)  # n - 1: sqrt(0.02 / 2)
    assert metrics.mean_and_std([0.7]) == (0.7, None)


def test_paired_difference_over_seeds_is_a_t_interval():
    # Per-seed accuracies on 10 examples: A 0.6, 0.8, 0.7 against B 0.5: differences 0.1, 0.3, 0.2.
    a = np.array([[1] * k + [0] * (10 - k) for k in (6, 8, 7)])
    b = np.array([[1] * 5 + [0] * 5] * 3)
    result = metrics.paired_difference(a, b)
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, 2 degrees of freedom) * sd / sqrt(n)
    assert result["diff"] == pytest.approx(0.2) and result["interval"] == "t over 3 paired seeds"
    assert result["ci95"] == pytest.approx([0.2 - half, 0.2 + half])


def test_paired_difference_of_one_seed_bootstraps_examples():
    # 30 examples only A gets right, 10 only B, 60 ties: d has mean 0.2 and sd 0.6, so the
    # bootstrap interval is close to the normal one, 0.2 +- 1.96 * 0.6 / sqrt(100).
    a = np.array([1] * 30 + [0] * 10 + [1] * 30 + [0] * 30)
    b = np.array([0] * 30 + [1] * 10 + [1] * 30 + [0] * 30)
    result = metrics.paired_difference(a, b)
    assert result["diff"] == pytest.approx(0.2) and result["interval"] == "paired bootstrap over 100 examples"
    assert result["ci95"] == pytest.approx([0.2 - 0.1176, 0.2 + 0.1176], abs=0.01)
    assert result == metrics.paired_difference(a, b)  # seeded: the same interval every run
    assert metrics.paired_difference(a, a)["ci95"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="one shape"):
        metrics.paired_difference(a, b[:50])

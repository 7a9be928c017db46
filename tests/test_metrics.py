import math

import numpy as np
import pytest

from sweeper import metrics


def test_evaluate_computes_test_metrics_from_probabilities():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    found = metrics.evaluate(probs, np.array([0, 1, 1, 1]))
    assert found["test_accuracy"] == 0.75
    assert found["test_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.4, 0.7])))
    assert found["test_recall"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert found["test_roc_auc"] == pytest.approx(1.0)
    assert math.isnan(metrics.evaluate(probs, np.array([0, 0, 0, 0]))["test_roc_auc"])


@pytest.mark.parametrize("n_classes", [2, 3, 10])
def test_evaluate_agrees_with_scikit_learn(n_classes):
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(n_classes)
    y = rng.integers(0, n_classes, 2000)
    probs = np.round(rng.random((2000, n_classes)) + 0.3 * np.eye(n_classes)[y], 2)  # ties
    probs /= probs.sum(1, keepdims=True)
    found = metrics.evaluate(probs, y)
    precision, recall, f1, _ = sklearn.precision_recall_fscore_support(
        y, probs.argmax(1), average="macro", zero_division=0
    )
    auc = (
        sklearn.roc_auc_score(y, probs[:, 1])
        if n_classes == 2
        else sklearn.roc_auc_score(y, probs, multi_class="ovr", average="macro")
    )
    assert found["test_precision"] == pytest.approx(precision)
    assert found["test_recall"] == pytest.approx(recall)
    assert found["test_f1"] == pytest.approx(f1)
    assert found["test_roc_auc"] == pytest.approx(auc)


def test_standard_error_is_binomial_on_the_number_of_images():
    assert metrics.standard_error(0.75, 7500) == pytest.approx(0.005)
    assert metrics.standard_error(0.77, 2000) == pytest.approx(0.00941, abs=1e-5)
    assert metrics.standard_error(1.0, 100) == 0.0
    assert math.isnan(metrics.standard_error(0.5, 0))

"""Test metrics from predicted probabilities, in NumPy: accuracy, loss, macro P/R/F1, ROC AUC.

NumPy rather than scikit-learn: its import alone cost ~1 s per process; the tests check these
against scikit-learn.
"""

from __future__ import annotations

import math

import numpy as np


def evaluate(probs: np.ndarray, y_true: np.ndarray, loss: str = "crossentropy") -> dict:
    """Test metrics from predicted probabilities: accuracy, loss, macro P/R/F1, ROC AUC."""
    n_classes = probs.shape[1]
    if loss == "mse":
        test_loss = float(np.mean((probs - np.eye(n_classes)[y_true]) ** 2))
    else:
        picked = probs[np.arange(len(y_true)), y_true]
        test_loss = float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))
    matrix = confusion_matrix(y_true, probs.argmax(axis=1), n_classes)
    hits = np.diag(matrix).astype(float)
    # A class never predicted (or absent) scores 0, as scikit-learn's zero_division=0 does.
    precision = np.divide(hits, matrix.sum(0), out=np.zeros(n_classes), where=matrix.sum(0) > 0)
    recall = np.divide(hits, matrix.sum(1), out=np.zeros(n_classes), where=matrix.sum(1) > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros(n_classes), where=both > 0)
    return {
        "test_accuracy": float(hits.sum() / len(y_true)),
        "test_loss": test_loss,
        "test_precision": float(precision.mean()),
        "test_recall": float(recall.mean()),
        "test_f1": float(f1.mean()),
        "test_roc_auc": _roc_auc(y_true, probs),
    }


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts, rows the true class and columns the predicted one."""
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes**2).reshape(
        n_classes, n_classes
    )


def _roc_auc(y_true, probs):
    """Macro one-vs-rest ROC AUC, exact, as the Mann-Whitney statistic on average ranks
    (ties share theirs). NaN when the test set lacks a class: AUC is undefined then."""
    n_classes = probs.shape[1]
    if len(np.unique(y_true)) < n_classes:
        return float("nan")
    aucs = []
    for c in [1] if n_classes == 2 else range(n_classes):  # binary: the positive class
        _, inverse, counts = np.unique(probs[:, c], return_inverse=True, return_counts=True)
        ends = np.cumsum(counts)
        ranks = ((ends - counts + 1 + ends) / 2)[inverse]
        positive = y_true == c
        n_pos, n_neg = positive.sum(), (~positive).sum()
        aucs.append((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(aucs))


def standard_error(accuracy: float, images: int) -> float:
    """One standard error of an accuracy measured on `images` images (binomial). Of the
    difference of two models' accuracies on the same images it is at most sqrt(2) times
    this, less as their errors overlap."""
    if images <= 0 or math.isnan(accuracy):
        return math.nan
    p = min(1.0, max(0.0, accuracy))
    return math.sqrt(p * (1 - p) / images)

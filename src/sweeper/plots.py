"""Figures for runs and reports, with matplotlib's file-only Agg backend."""

from __future__ import annotations

from typing import Any

import numpy as np

from sweeper.metrics import confusion_matrix


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, imported on first use (~0.3 s)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curves_figure(history: dict[str, list[float]]) -> Any:
    """Loss and accuracy by epoch, training against validation."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            values = history.get(key, [])
            ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
        ax.set(title=metric, xlabel="epoch")
        ax.legend()
    fig.tight_layout()
    plt.close(fig)
    return fig


def confusion_figure(y_true: np.ndarray, y_pred: np.ndarray, class_names: tuple[str, ...]) -> Any:
    """Counts per true (rows) and predicted (columns) class, numbers in the cells."""
    plt = pyplot()
    n = len(class_names)
    matrix = confusion_matrix(y_true, y_pred, n)
    size = max(5, 0.6 * n)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    for (row, col), count in np.ndenumerate(matrix):
        ax.text(
            col,
            row,
            str(count),
            ha="center",
            va="center",
            fontsize=8,
            color="white" if count > matrix.max() / 2 else "black",
        )
    ax.set(xticks=range(n), yticks=range(n), xlabel="Predicted label", ylabel="True label")
    ax.set_xticklabels(class_names, rotation=90)
    ax.set_yticklabels(class_names)
    fig.tight_layout()
    plt.close(fig)
    return fig

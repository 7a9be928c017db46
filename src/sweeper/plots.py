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


def front_figure(
    points: list[dict[str, float]],
    front: list[dict[str, float]],
    recipes: list[dict[str, float]],
    first: str,
    others: list[str],
) -> Any:
    """The first objective against each other one: every trial, the front joined by a
    line, the recipe trials marked. Each point maps metric names to values."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(others), figsize=(5 * len(others), 4), squeeze=False)
    for ax, other in zip(axes[0], others):
        ax.scatter([p[other] for p in points], [p[first] for p in points], c="0.7", label="trials")
        line = sorted(front, key=lambda p: p[other])
        ax.plot([p[other] for p in line], [p[first] for p in line], "o-", c="C0", label="front")
        if recipes:
            ax.scatter(
                [p[other] for p in recipes],
                [p[first] for p in recipes],
                marker="*",
                s=160,
                c="C3",
                label="recipe",
            )
        ax.set(xlabel=other, ylabel=first, xscale="log" if other == "params" else "linear")
        ax.legend()
    fig.tight_layout()
    plt.close(fig)
    return fig

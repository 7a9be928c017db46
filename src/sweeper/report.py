"""`sweeper report`: each family's best trial against the documented and the measured baseline,
as a Markdown table, with plots of best-so-far, Optuna's parameter importances and the top
runs' curves. Everything also lands on the newest sweep parent run of the dataset.
"""

from __future__ import annotations

import math
from pathlib import Path

from sweeper import baselines, tracking
from sweeper.errors import SweeperError
from sweeper.plots import pyplot
from sweeper.results import Selection, documented, finished_runs, measured_baseline, score
from sweeper.tracking import names

COLUMNS = (
    "family",
    "row",
    "run",
    "test accuracy",
    "parameters",
    "epochs",
    "wall time (s)",
    "images/s",
)


def build(dataset: str, out: str | Path, storage: str | None = None) -> tuple[str, Path]:
    """Writes report.md and the plots to `out`; returns the table and the folder.
    `storage` is the engines' store (Optuna's URL; default the local one)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    trials = finished_runs(Selection(dataset=dataset), kinds=("trial",))
    if not trials:
        raise SweeperError(f"No finished sweep trial on dataset {dataset!r}; run a sweep first")
    table = markdown_table(table_rows(trials, dataset))
    (out / "report.md").write_text(f"# Sweeps on {dataset}\n\n{table}\n")
    _plot_best_so_far(trials, out / "best_so_far.png")
    _plot_top_curves(trials[:5], out / "top_curves.png")
    _plot_importances(trials, storage, out / "importances.png")
    parent = _newest_parent(dataset)
    if parent:
        tracking.log_folder(parent, out, "report")
    return table, out


def table_rows(trials: list, dataset: str) -> list[list[str]]:
    rows = []
    for family in dict.fromkeys(r.data.params["family"] for r in trials):
        best = next(r for r in trials if r.data.params["family"] == family)
        rows.append(_run_row(family, "best trial", best))
        recipe = baselines.for_family(family, dataset)
        if recipe is None:
            continue
        measured = measured_baseline(recipe.name, dataset)
        if measured:
            rows.append(_run_row(family, f"baseline {recipe.name} (measured)", measured))
        in_sweep = next(
            (
                r
                for r in trials
                if r.data.params["family"] == family and r.data.tags.get(names.BASELINE) == "yes"
            ),
            None,
        )
        if in_sweep:
            rows.append(_run_row(family, f"baseline {recipe.name} (first trial)", in_sweep))
        rows.append(
            [
                family,
                f"baseline {recipe.name} (documented)",
                "",
                documented(recipe, dataset),
                "",
                "",
                "",
                "",
            ]
        )
    return rows


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _run_row(family, label, run):
    m = run.data.metrics
    return [
        family,
        label,
        f"{run.info.run_name} ({run.info.run_id[:8]})",
        f"{m.get('test_accuracy', math.nan):.4f}",
        f"{int(m.get('params_count', 0)):,}",
        f"{int(m.get('epochs', 0))}",
        f"{m.get('train_seconds', math.nan):.0f}",
        f"{m.get('images_per_second', math.nan):.0f}",
    ]


def _plot_best_so_far(trials, path):
    """Best validation accuracy so far, per family, against trial order and wall time."""
    plt = pyplot()
    ordered = sorted(trials, key=lambda r: r.info.start_time)
    start = ordered[0].info.start_time
    fig, (by_trial, by_time) = plt.subplots(1, 2, figsize=(11, 4))
    for family in dict.fromkeys(r.data.params["family"] for r in ordered):
        runs = [r for r in ordered if r.data.params["family"] == family]
        best, values = -math.inf, []
        for r in runs:
            best = max(best, score(r))
            values.append(best)
        numbers = [int(r.data.tags.get(names.TRIAL_NUMBER, i)) for i, r in enumerate(runs)]
        minutes = [((r.info.end_time or r.info.start_time) - start) / 60000 for r in runs]
        by_trial.step(numbers, values, where="post", marker="o", label=family)
        by_time.step(minutes, values, where="post", marker="o", label=family)
    by_trial.set(xlabel="trial number", ylabel="best val_accuracy so far")
    by_time.set(xlabel="wall time (minutes)", ylabel="best val_accuracy so far")
    by_trial.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_top_curves(runs, path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in runs:
        steps, values = zip(*tracking.metric_history(r.info.run_id, "val_accuracy"))
        ax.plot(steps, values, marker="o", label=r.info.run_name)
    ax.set(xlabel="epoch", ylabel="val_accuracy", title="top runs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_importances(trials: list, storage: str | None, path: Path) -> None:
    """Each engine's parameter importances per family, for the studies these trials came
    from (where the engine has them: Optuna does, in whatever storage it used)."""
    from sweeper import engines

    studies = {(r.data.tags.get(names.ENGINE), r.data.tags.get(names.STUDY)) for r in trials}
    panels = []
    for engine, study in sorted(s for s in studies if all(s)):
        if engine in engines.ENGINES:
            found = engines.get(engine).importances(study, storage)
            panels += [(f"{study}: {family}", values) for family, values in found.items()]
    if not panels:
        return
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (title, importances) in zip(axes[0], panels):
        ax.barh(list(importances)[::-1], list(importances.values())[::-1])
        ax.set(title=title, xlabel="importance")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _newest_parent(dataset: str) -> str | None:
    runs = tracking.search_runs(
        {names.KIND: names.KIND_SWEEP, names.DATASET: dataset}, newest_first=True, max_results=1
    )
    return runs[0].info.run_id if runs else None

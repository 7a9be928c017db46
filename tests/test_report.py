"""`sweeper report` after one small sweep (the `store` fixture of conftest)."""

import mlflow
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from sweeper.cli import main


def test_report_rows_match_the_runs_in_mlflow(store):
    result = CliRunner().invoke(main, ["report", "--dataset", "mnist", "--out", "rep"])
    assert result.exit_code == 0, result.output
    table = (store / "rep" / "report.md").read_text()
    runs = MlflowClient().search_runs(
        [mlflow.get_experiment_by_name("mnist").experiment_id],
        "tags.kind = 'trial' and tags.state = 'complete' and attributes.status = 'FINISHED'",
    )
    for family in {r.data.params["family"] for r in runs}:
        best = min(  # the best, and among equals the earliest, as the sweep ranks them
            (r for r in runs if r.data.params["family"] == family),
            key=lambda r: (-r.data.metrics["best_val_accuracy"], r.info.start_time),
        )
        row = next(
            line for line in table.splitlines() if line.startswith(f"| {family} | best trial |")
        )
        assert best.info.run_id[:8] in row
        assert f"{best.data.metrics['test_accuracy']:.4f}" in row
    assert "| cnn | baseline cnn-mnist (measured) |" in table
    assert "| cnn | baseline cnn-mnist (documented) |  | 0.9850 |" in table
    for plot in ("best_so_far.png", "top_curves.png", "importances.png"):
        assert (store / "rep" / plot).stat().st_size > 1000, plot
    parent = MlflowClient().search_runs(
        [mlflow.get_experiment_by_name("mnist").experiment_id], "tags.kind = 'sweep'"
    )[0]
    logged = {a.path for a in MlflowClient().list_artifacts(parent.info.run_id, "report")}
    assert "report/report.md" in logged

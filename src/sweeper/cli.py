"""The `sweeper` command: thin subcommands that parse, call the library, and map errors to exits.

Errors are caught here only: a `SweeperError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import functools
import sys

import click

from sweeper.errors import SweeperError


def data_options(f):
    """Options shared by every command that reads data."""
    f = click.option("--data-dir", type=click.Path(file_okay=False),
                     help="Folder in shared/data's layout; else $SWEEPER_DATA_DIR, else "
                          "Keras downloads.")(f)
    return click.option("--limit", type=click.IntRange(min=2),
                        help="Train on the first N training images (smoke runs).")(f)


def tracking_option(f):
    return click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI",
                        help="MLflow store; default sqlite under ./mlruns.")(f)


def user_errors(f):
    """Turns a user error into one line and exit 2; Ctrl-C into exit 130."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except SweeperError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted: the running trial is marked failed; run the same "
                       "command again to resume", err=True)
            sys.exit(130)

    return wrapper


@click.group()
def main():
    """Hyperparameter sweeps with experiment tracking for Keras image classifiers."""


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False))
@user_errors
def datasets(data_dir):
    """List the datasets, their shapes and class names, and whether they are found locally."""
    from sweeper import data

    folder = data.resolve_data_dir(data_dir)
    for name, spec in data.NAMED.items():
        where = "not found locally (Keras downloads it)"
        if folder and all((folder / name / f).is_file() for f in spec.files):
            where = f"local: {folder / name}"
        shape = "x".join(map(str, spec.shape))
        click.echo(f"{name:14} {shape:8} {len(spec.class_names)} classes  {where}")
        click.echo(f"{'':14} classes: {', '.join(spec.class_names)}")
    click.echo("folder:PATH    any size, resized  one subfolder per class "
               "(Training/ + Test/, or one root split 80/20)")
    click.echo("csv:PATH.csv   any size, resized  rows of filename,label; images beside the CSV")


@main.command()
@click.argument("name", required=False)
@click.option("--list", "show_list", is_flag=True, help="List the documented recipes.")
@click.option("--dataset", help="For recipes on an image folder: folder:PATH or csv:PATH.")
@click.option("--epochs", type=click.IntRange(min=1), help="Override the recipe's epochs.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one recipe parameter, e.g. --set weights=none.")
@data_options
@tracking_option
@user_errors
def baseline(name, show_list, dataset, epochs, seed, overrides, data_dir, limit, tracking_uri):
    """Run a documented recipe exactly as written, logged as kind=baseline."""
    from sweeper import baselines

    if show_list or not name:
        for b in baselines.BASELINES.values():
            documented = f"{b.documented_accuracy:.2%}" if b.documented_accuracy else "not printed"
            click.echo(f"{b.name:22} {b.dataset or 'folder:PATH':14} documented {documented:11} "
                       f"{b.source}")
        return
    result = baselines.run(baselines.get(name), dataset=dataset, epochs=epochs, seed=seed,
                          overrides=_parse_overrides(overrides), data_dir=data_dir,
                          limit=limit, tracking_uri=tracking_uri)
    click.echo(result)


@main.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option("--trials", type=click.IntRange(min=1), help="Budget: finished trials in all.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
              help="Stop starting trials after this many minutes.")
@click.option("--engine", type=click.Choice(["optuna", "keras-tuner"]))
@click.option("--storage", envvar="SWEEPER_STORAGE",
              help="Optuna storage URL (default sqlite:///mlruns/optuna.db); "
                   "postgresql://... for many workers.")
@click.option("--study", help="Study name (default: the file's `study`, else its name).")
@click.option("--epochs", type=click.IntRange(min=1), help="Max epochs per trial.")
@click.option("--target", type=click.FloatRange(min=0, min_open=True),
              help="Stop once a trial's objective metric reaches this (e.g. 0.985).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Trial processes side by side on this machine (needs --storage that "
                   "several processes can share, e.g. PostgreSQL).")
@click.option("--threads", type=click.IntRange(min=1),
              help="CPU threads for TensorFlow in this process (default: all; with "
                   "--workers, an equal share each).")
@data_options
@tracking_option
@user_errors
def sweep(sweep_file, trials, timeout, engine, storage, study, epochs, target, workers,
          threads, data_dir, limit, tracking_uri):
    """Run (or resume) the sweep described in SWEEP_FILE."""
    from sweeper import config
    from sweeper.sweep import run_sweep, run_workers

    spec = config.load(sweep_file).with_overrides(
        trials=trials, timeout_minutes=timeout, engine=engine, study=study,
        max_epochs=epochs, target=target, limit=limit)
    if expected := config.target_problem(spec.metric, spec.target):
        raise SweeperError(f"--target: expected {expected}. Received: {spec.target:g}")
    if workers > 1:
        sys.exit(run_workers(spec, workers, storage=storage, argv=sys.argv[1:]))
    if threads:
        from sweeper.train import set_threads

        set_threads(threads)
    click.echo(f"sweep {spec.study}: {spec.dataset}, {', '.join(spec.families)}; "
               f"{spec.engine}/{spec.sampler}, pruner {spec.pruner}, {spec.trials} trials"
               f"{f', {spec.timeout_minutes:g} min' if spec.timeout_minutes else ''}, "
               f"<= {spec.max_epochs} epochs each"
               f"{f'; stops at {spec.metric} {spec.target:g}' if spec.target else ''}")
    parent = run_sweep(spec, storage=storage, data_dir=data_dir, tracking_uri=tracking_uri)
    click.echo(f"sweep {spec.study} done; parent run {parent}")


@main.command()
@click.option("--dataset", help="Only runs on this dataset (as shown in MLflow, e.g. mnist).")
@click.option("--sweep", "sweep_name", help="Only trials of this study.")
@click.option("--parent", help="Only children of this sweep parent run id.")
@click.option("--family", help="Only this architecture family.")
@click.option("--metric", type=click.Choice(["val_accuracy", "test_accuracy"]),
              default="val_accuracy", show_default=True, help="What 'best' means.")
@click.option("--export", "export_path", type=click.Path(dir_okay=False),
              help="Write the best model to PATH.keras.")
@tracking_option
@user_errors
def best(dataset, sweep_name, parent, family, metric, export_path, tracking_uri):
    """Print the best finished run (and export its model)."""
    from sweeper import results, tracking

    tracking.configure(tracking_uri)
    run = results.best_run(results.Selection(dataset, sweep_name, parent, family, metric))
    click.echo(results.describe(run))
    if export_path:
        click.echo(f"exported  {results.export(run, export_path)}")


@main.command()
@click.option("--dataset", required=True, help="Dataset as shown in MLflow, e.g. cifar10.")
@click.option("--out", type=click.Path(file_okay=False), help="Folder (default reports/DATASET).")
@tracking_option
@user_errors
def report(dataset, out, tracking_uri):
    """Each family's best trial against the documented and measured baselines, with plots."""
    from sweeper import report as report_module
    from sweeper import tracking

    tracking.configure(tracking_uri)
    table, folder = report_module.build(dataset, out or f"reports/{dataset}")
    click.echo(table)
    click.echo(f"written to {folder}/ (report.md and plots)")


@main.command()
@click.argument("run_id")
@click.option("--data-dir", type=click.Path(file_okay=False))
@tracking_option
@user_errors
def rerun(run_id, data_dir, tracking_uri):
    """Train a logged run again from its params and seed, as a new run tagged rerun_of."""
    from sweeper import results, tracking

    tracking.configure(tracking_uri)
    original, result, run = results.rerun(run_id, data_dir=data_dir)
    before = original.data.metrics.get("test_accuracy", float("nan"))
    click.echo(f"rerun of {run_id}: test_accuracy {result.test['test_accuracy']:.4f} "
               f"(original {before:.4f}); run {run.run_id}")


@main.command()
@click.argument("model_path", type=click.Path(dir_okay=False))
@click.argument("images", nargs=-1, required=True)
@user_errors
def predict(model_path, images):
    """Class name and probability for each image file."""
    from sweeper import results

    for image, name, probability in results.predict(model_path, list(images)):
        click.echo(f"{image}: {name} ({probability:.3f})")


@main.command()
@click.option("--port", type=int, default=5000, show_default=True)
@tracking_option
@user_errors
def ui(port, tracking_uri):
    """The MLflow UI on the project's store, bound to 127.0.0.1."""
    import subprocess

    from sweeper import tracking

    uri = tracking.configure(tracking_uri)
    if uri.startswith("http"):
        raise SweeperError(f"The tracking URI is a server already: open {uri}")
    click.echo(f"MLflow UI at http://127.0.0.1:{port} (store {uri}); Ctrl-C stops it")
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
               "--host", "127.0.0.1", "--port", str(port)]
    sys.exit(subprocess.call(command))


def _parse_overrides(pairs):
    import yaml

    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SweeperError(f"--set expects KEY=VALUE. Received: {pair!r}")
        parsed[key.strip()] = yaml.safe_load(value)
    return parsed


if __name__ == "__main__":
    main()

"""The `sweeper` command: thin subcommands that parse, call the library, and map errors to exits.

Errors are caught here only: a `SweeperError` becomes one line on stderr and exit code 2.
Light on purpose: `--help`, `datasets`, `params`, `baseline --list` and a bad sweep file
load no TensorFlow, MLflow or engine; each command imports what it needs when it runs.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import click

from sweeper import data, devices, engines
from sweeper.errors import SweeperError

# Libraries whose INFO lines are diagnostics: shown with -v only.
LIBRARY_LOGGERS = ("mlflow", "alembic", "optuna", "keras_tuner", "absl", "tensorflow")


class _ConsoleHandler(logging.Handler):
    """Progress (INFO) to stdout as plain lines, problems to stderr with their level. Looks
    the streams up at each line, so it follows click's test runner and redirections."""

    prefix = ""  # a worker's name, so several workers' lines can be told apart

    def emit(self, record: logging.LogRecord) -> None:
        message = self.prefix + record.getMessage()
        if record.levelno >= logging.WARNING:
            print(f"{record.levelname.lower()}: {message}", file=sys.stderr, flush=True)
        else:
            print(message, file=sys.stdout, flush=True)


def setup_logging(verbosity: int) -> None:
    """-q (-1): warnings only; default (0): sweeper's progress; -v (1): sweeper's debug lines
    and the libraries' INFO lines too."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    logger = logging.getLogger("sweeper")
    logger.handlers[:] = [_ConsoleHandler()]
    logger.setLevel(level)
    logger.propagate = False
    # TensorFlow's warnings are about tracing, Optuna's repeat a failed trial's traceback
    # (kept in the trial's run): noise for users, shown with -v.
    for name in LIBRARY_LOGGERS:
        quiet = logging.ERROR if name in ("tensorflow", "optuna") else logging.WARNING
        logging.getLogger(name).setLevel(logging.INFO if verbosity > 0 else quiet)
    # MLflow sets its loggers' level from this when it is imported, after this runs.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "INFO" if verbosity > 0 else "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", str(verbosity > 0).lower())
    # Its "View run ... at: URL" lines, one per run on a tracking server.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", str(verbosity <= 0).lower())
    if worker := os.environ.get(devices.WORKER_VARIABLE):
        _ConsoleHandler.prefix = f"[worker {worker}] "


def load_tensorflow() -> None:
    """Imports TensorFlow and Keras and finds the devices with their native start-up lines
    (absl, oneDNN, CUDA's probe) hidden, unless -v: C++ writes them to the process's stderr,
    where no Python logger can filter them."""
    if "tensorflow" in sys.modules or logging.getLogger("sweeper").isEnabledFor(logging.DEBUG):
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import keras  # noqa: F401  (loads TensorFlow, its backend)
        import tensorflow as tf

        tf.config.list_physical_devices()  # CUDA's probe logs an error where no GPU answers
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def data_options(f: Callable) -> Callable:
    """Options shared by every command that reads data."""
    f = click.option(
        "--data-dir",
        type=click.Path(file_okay=False),
        help="Folder in shared/data's layout; else $SWEEPER_DATA_DIR, else Keras downloads.",
    )(f)
    return click.option(
        "--limit",
        type=click.IntRange(min=2),
        help="Train on N of the training images, every class in proportion (smoke runs).",
    )(f)


def limit_option(name: str, what: str) -> Callable:
    """A `best` option that keeps only the models under a bound on what they cost."""
    return click.option(
        name, type=click.FloatRange(min=0, min_open=True), help=f"Only models {what}."
    )


def tracking_option(f: Callable) -> Callable:
    return click.option(
        "--tracking-uri",
        envvar="MLFLOW_TRACKING_URI",
        help="MLflow store; default sqlite under ./mlruns.",
    )(f)


class WorkersType(click.ParamType):
    """A number of workers (1 or more), or `auto`."""

    name = "N|auto"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | str:
        if value == "auto":
            return value
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = 0
        if number < 1:
            self.fail(f"expected a number of workers (1 or more) or auto. Received: {value}")
        return number


def user_errors(f: Callable) -> Callable:
    """Turns a user error into one line and exit 2; Ctrl-C into exit 130."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except SweeperError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo(
                "interrupted: the running trial is marked failed; run the same "
                "command again to resume",
                err=True,
            )
            sys.exit(130)

    return wrapper


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Also show diagnostics and libraries' logs.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress.")
def main(verbose: bool, quiet: bool) -> None:
    """Hyperparameter sweeps with experiment tracking for Keras image classifiers."""
    setup_logging(1 if verbose else -1 if quiet else 0)


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False))
@user_errors
def datasets(data_dir: str | None) -> None:
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
    click.echo(
        "folder:PATH    any size, resized  one subfolder per class "
        "(Training/ + Test/, or one root split 80/20)"
    )
    click.echo("csv:PATH.csv   any size, resized  rows of filename,label; images beside the CSV")


@main.command()
@click.argument("family", required=False)
@user_errors
def params(family: str | None) -> None:
    """List every parameter (training ones, then FAMILY's or every family's): type, default,
    allowed values and what it does."""
    from sweeper import schema

    if family:
        schema.params_of(family)  # an unknown family fails here, listing the known ones
    sections = [("training (every family)", schema.TRAINING)]
    for name in [family] if family else schema.family_names():
        doc, own = schema.FAMILIES[name]
        sections.append((f"{name}: {doc}", own))
    for title, rules in sections:
        click.echo(title)
        for p in rules.values():
            click.echo(
                f"  {p.name:24} {p.type.__name__:5} default {p.default!s:15} "
                f"allowed {p.allowed():22} {p.doc}"
            )


@main.command()
@click.argument("name", required=False)
@click.option("--list", "show_list", is_flag=True, help="List the documented recipes.")
@click.option("--dataset", help="For recipes on an image folder: folder:PATH or csv:PATH.")
@click.option("--epochs", type=click.IntRange(min=1), help="Override the recipe's epochs.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override one recipe parameter, e.g. --set weights=none.",
)
@data_options
@tracking_option
@user_errors
def baseline(
    name: str | None,
    show_list: bool,
    dataset: str | None,
    epochs: int | None,
    seed: int,
    overrides: tuple[str, ...],
    data_dir: str | None,
    limit: int | None,
    tracking_uri: str | None,
) -> None:
    """Run a documented recipe exactly as written, logged as kind=baseline."""
    from sweeper import baselines

    if show_list or not name:
        for b in baselines.BASELINES.values():
            documented = f"{b.documented_accuracy:.2%}" if b.documented_accuracy else "not printed"
            click.echo(
                f"{b.name:22} {b.dataset or 'folder:PATH':14} documented {documented:11} {b.source}"
            )
        return
    stop_on_signals()
    load_tensorflow()
    result = baselines.run(
        baselines.get(name),
        dataset=dataset,
        epochs=epochs,
        seed=seed,
        overrides=_parse_overrides(overrides),
        data_dir=data_dir,
        limit=limit,
        tracking_uri=tracking_uri,
    )
    click.echo(result)


@main.command()
@click.argument("sweep_file", metavar="SWEEP_FILE|folder:PATH|csv:FILE.csv")
@click.option("--trials", type=click.IntRange(min=1), help="Budget: finished trials in all.")
@click.option(
    "--image-size",
    type=click.IntRange(min=8),
    help="folder:/csv: without a sweep file: the side images are resized to (default: their "
    "median shorter side, within 32-128).",
)
@click.option(
    "--backbone",
    help="folder:/csv: without a sweep file: also search a frozen backbone with a head, "
    "a .keras model of your own or `imagenet` (VGG16's weights, downloaded).",
)
@click.option(
    "--timeout",
    "timeout_minutes",
    type=click.FloatRange(min=0, min_open=True),
    help="Stop starting trials after this many minutes.",
)
@click.option(
    "--minutes",
    type=click.FloatRange(min=0, min_open=True),
    help="The whole sweep's time, search and refit: the search gets the file's "
    "budget.search_share of it, the refit the epochs that fit the rest.",
)
@click.option(
    "--search-share",
    type=click.FloatRange(min=0, max=1, max_open=True),
    help="The search's share of --minutes (budget.minutes); 0: no search, the first "
    "family's recipe is trained alone for all of them.",
)
@click.option(
    "--engine",
    type=click.Choice(engines.names()),
    help="; ".join(
        f"{name}: samplers {', '.join(e.samplers)} (first is the default), "
        f"pruners {', '.join(e.pruners)}"
        for name, e in engines.ENGINES.items()
    ),
)
@click.option(
    "--storage",
    envvar="SWEEPER_STORAGE",
    help="Optuna storage: a .journal file or an RDB URL (default mlruns/optuna.journal, "
    "which the workers of one machine share); postgresql://... for many machines. "
    "Keras Tuner: the folder of its projects (default mlruns/keras-tuner).",
)
@click.option("--study", help="Study name (default: the file's `study`, else its name).")
@click.option("--epochs", "max_epochs", type=click.IntRange(min=1), help="Max epochs per trial.")
@click.option(
    "--refit-epochs",
    type=click.IntRange(min=0),
    help="Epochs of the refit of the best trial on all training data (0: no refit).",
)
@click.option(
    "--target",
    type=click.FloatRange(min=0, min_open=True),
    help="Stop once a trial's objective metric reaches this (e.g. 0.985).",
)
@click.option(
    "--workers",
    type=WorkersType(),
    help="Trial processes side by side on this machine, or `auto`: one per GPU, else one "
    "single-threaded worker per core (see `sweeper devices`). Default: the file's "
    "`workers`, else 1.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="CPU threads for TensorFlow in this process (default: all; with "
    "--workers, an equal share each).",
)
@click.option("--as-worker", type=int, hidden=True)  # set by the supervisor for its workers
@click.option("--deadline", type=float, hidden=True)  # the supervisor's, in time.time() s
@data_options
@tracking_option
@user_errors
def sweep(
    sweep_file: str,
    image_size: int | None,
    backbone: str | None,
    storage: str | None,
    threads: int | None,
    as_worker: int | None,
    deadline: float | None,
    data_dir: str | None,
    tracking_uri: str | None,
    **overrides: Any,  # `config.Overrides`: --trials, --timeout, --minutes, --engine, ...
) -> None:
    """Run (or resume) the sweep described in SWEEP_FILE; or, given folder:PATH or
    csv:FILE.csv, sweeper's default for a collection of images (the file it writes is
    logged with the sweep's parent run, to copy and edit)."""
    from sweeper import config, policy

    started = policy.now()  # budget.minutes counts from here

    stop_on_signals()

    images = sweep_file.startswith(data.SOURCE_PREFIXES)
    if images:
        load_tensorflow()
        devices.setup(threads)  # before the speed is measured: its first operation
        loaded = _default_sweep(sweep_file, image_size, backbone, as_worker, overrides)
    elif image_size or backbone:
        raise SweeperError("--image-size and --backbone are for folder: or csv: datasets")
    else:
        loaded = config.load(sweep_file)
    spec = config.Overrides(**overrides).apply(loaded)
    if spec.workers != 1 and not spec.searches:
        click.echo(f"no search (budget.search_share 0): one process, not {spec.workers} workers")
        spec = spec.with_overrides(workers=1)
    if spec.workers != 1 and not as_worker:
        from sweeper.workers import refuse_unshared

        refuse_unshared(spec, storage)  # in a second, not after TensorFlow's start
    load_tensorflow()
    from sweeper.sweep import run_sweep

    if spec.workers != 1 and not as_worker:
        from sweeper.workers import supervise

        _describe(spec)
        parent = supervise(
            spec,
            None if spec.workers == "auto" else int(spec.workers),
            # the workers size their trials as measured here, not each by its own measure
            argv=sys.argv[1:] + (["--epochs", str(spec.max_epochs)] if images else []),
            storage=storage,
            data_dir=data_dir,
            tracking_uri=tracking_uri,
        )
        click.echo(f"sweep {spec.study} done; parent run {parent}")
        return
    if not images:
        devices.setup(threads)
    if not as_worker:
        _describe(spec)
    parent = run_sweep(
        spec,
        storage=storage,
        data_dir=data_dir,
        tracking_uri=tracking_uri,
        deadline=deadline,
        supervised=bool(as_worker),
        started=started,
    )
    if not as_worker:
        click.echo(f"sweep {spec.study} done; parent run {parent}")


def _default_sweep(
    source: str, image_size: int | None, backbone: str | None, as_worker: int | None, overrides
) -> Any:
    """sweeper's default sweep of a folder: or csv: dataset, its header printed; its trials'
    epochs are sized by the speed measured here, unless --epochs chose them (a worker's
    come from its supervisor's measure)."""
    from sweeper import config, image_sweep, train

    def time_an_image(params: dict, input_shape: tuple[int, ...], n_classes: int) -> float:
        return train.seconds_per_image(
            "resnet", params, input_shape, n_classes, precision=devices.precision("auto")
        )

    text = image_sweep.default_sweep(
        source,
        image_size=image_size,
        backbone=backbone,
        minutes=overrides["minutes"] or image_sweep.MINUTES,
        time_an_image=None if as_worker or overrides["max_epochs"] else time_an_image,
    )
    if not as_worker:
        click.echo("".join(line[2:] + "\n" for line in text.splitlines() if line[:2] == "# "))
    return config.from_text(text, f"sweeper's default for {source}")


def stop_on_signals() -> None:
    """SIGTERM (a scheduler's stop, `docker stop`) acts as Ctrl-C: the running trial's run
    ends failed instead of staying RUNNING. A shell's background job starts with SIGINT
    ignored, and the supervisor stops its workers with SIGINT: every training command takes
    it, however it was started."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _describe(spec: Any) -> None:
    if not spec.searches:
        from sweeper import policy

        click.echo(
            f"sweep {spec.study}: {spec.dataset}; no search (budget.search_share 0): the "
            f"first recipe trains {policy.TIMING_EPOCHS} epochs on {policy.TIMING_IMAGES} "
            f"images to time itself, then the epochs that fit the rest of {spec.minutes:g} "
            "min on all the training data"
        )
        return
    click.echo(
        f"sweep {spec.study}: {spec.dataset}, {', '.join(spec.families)}; "
        f"{spec.engine}/{spec.sampler}, pruner {spec.pruner}, {spec.trials} trials"
        f"{f', {spec.search_minutes:.3g} min' if spec.search_minutes else ''}, "
        f"<= {spec.max_epochs} epochs each"
        f"{f'; stops at {spec.metric} {spec.target:g}' if spec.target else ''}"
        f"; {_refit_plan(spec)}"
    )


def _refit_plan(spec: Any) -> str:
    images = (
        f" on {spec.refit_limit} images and the validation split (--limit)"
        if spec.refit_limit
        else ""
    )
    if spec.refit_from_minutes:
        return (
            f"{spec.minutes:g} min in all: search {spec.search_minutes:.3g} min, then refit "
            f"the winner{images} for the epochs that fit the other "
            f"{spec.minutes - spec.search_minutes:.3g} min (from its measured speed)"
            + (
                f", at least {spec.refit_min_epochs} (the search ends early where it must)"
                if spec.refit_min_epochs
                else ""
            )
        )
    if spec.refit_epochs:
        return f"then refit the winner{images} for {spec.refit_epochs} epochs"
    return "no refit"


@main.command("devices")
@user_errors
def devices_command() -> None:
    """What TensorFlow trains on here, and what `--workers auto` would start."""
    load_tensorflow()
    for line in devices.describe():
        click.echo(line)
    plan = devices.plan(
        None,
        trials=10**6,
        data_bytes=0,
        gpu_ids=devices.gpus(),
        n_cores=devices.cores(),
        memory=devices.available_memory(),
    )
    click.echo(
        f"--workers auto: {plan.workers} worker(s) x {plan.threads} thread(s) ({plan.why}; "
        "fewer when the sweep has fewer trials or its data fills memory; on CPUs, one "
        "worker with every thread for the resnet and transfer families)"
    )


@main.command()
@click.option("--dataset", help="Only runs on this dataset (as shown in MLflow, e.g. mnist).")
@click.option("--sweep", "sweep_name", help="Only trials of this study.")
@click.option("--parent", help="Only children of this sweep parent run id.")
@click.option("--family", help="Only this architecture family.")
@click.option(
    "--metric",
    type=click.Choice(["val_accuracy", "test_accuracy"]),
    default="val_accuracy",
    show_default=True,
    help="What 'best' means.",
)
@click.option(
    "--export",
    "export_path",
    type=click.Path(dir_okay=False),
    help="Write the best model to PATH.keras.",
)
@click.option("--force", is_flag=True, help="Let --export overwrite an existing file.")
@limit_option("--max-latency-ms", "that answer one image within this (logged latency_ms)")
@limit_option("--max-params", "with at most this many trainable parameters")
@limit_option("--max-mb", "whose .keras file is at most this many MB")
@click.option("--pareto", is_flag=True, help="Print the Pareto front of a multi-objective sweep.")
@tracking_option
@user_errors
def best(
    dataset: str | None,
    sweep_name: str | None,
    parent: str | None,
    family: str | None,
    metric: str,
    export_path: str | None,
    force: bool,
    max_latency_ms: float | None,
    max_params: float | None,
    max_mb: float | None,
    pareto: bool,
    tracking_uri: str | None,
) -> None:
    """Print the best finished run (and export its model): the most accurate on
    validation, within the --max-* limits given."""
    if export_path:  # only the export loads a model
        load_tensorflow()
    from sweeper import results, tracking

    tracking.configure(tracking_uri)
    limits = {"latency_ms": max_latency_ms, "params": max_params, "model_mb": max_mb}
    selection = results.Selection(
        dataset,
        sweep_name,
        parent,
        family,
        metric,
        limits={k: v for k, v in limits.items() if v is not None},
        pareto=pareto,
    )
    if pareto:
        click.echo(results.front_table(selection))
        return
    latest, datasets = results.latest_dataset(selection)
    if latest:
        selection.dataset = latest
        click.echo(
            f"dataset   {latest}, the latest sweep's (runs on {', '.join(datasets)}: "
            "--dataset picks one)"
        )
    run = results.best_run(selection)
    click.echo(results.describe(run))
    if export_path:
        exported = results.export(results.result_of(run), export_path, force=force)
        click.echo(f"exported  {exported}")


@main.command()
@click.option("--dataset", required=True, help="Dataset as shown in MLflow, e.g. cifar10.")
@click.option("--out", type=click.Path(file_okay=False), help="Folder (default reports/DATASET).")
@click.option(
    "--storage",
    envvar="SWEEPER_STORAGE",
    help="Optuna storage the sweeps used, for parameter importances.",
)
@tracking_option
@user_errors
def report(dataset: str, out: str | None, storage: str | None, tracking_uri: str | None) -> None:
    """Each family's best trial against the documented and measured baselines, with plots."""
    load_tensorflow()
    from sweeper import report as report_module
    from sweeper import tracking

    tracking.configure(tracking_uri)
    table, folder = report_module.build(dataset, out or f"reports/{dataset}", storage)
    click.echo(table)
    click.echo(f"written to {folder}/ (report.md and plots)")


@main.command()
@click.argument("run_id")
@click.option("--data-dir", type=click.Path(file_okay=False))
@tracking_option
@user_errors
def rerun(run_id: str, data_dir: str | None, tracking_uri: str | None) -> None:
    """Train a logged run again from its params and seed, as a new run tagged rerun_of."""
    stop_on_signals()
    load_tensorflow()
    from sweeper import results, tracking

    tracking.configure(tracking_uri)
    original, result, run = results.rerun(run_id, data_dir=data_dir)
    before = original.data.metrics.get("test_accuracy", float("nan"))
    click.echo(
        f"rerun of {run_id}: test_accuracy {result.test['test_accuracy']:.4f} "
        f"(original {before:.4f}); run {run.run_id}"
    )


@main.command("refit")
@click.argument("run_id")
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    help="Epochs on all the training data (default: the sweep file's refit.epochs).",
)
@click.option("--data-dir", type=click.Path(file_okay=False))
@tracking_option
@user_errors
def refit_command(
    run_id: str, epochs: int | None, data_dir: str | None, tracking_uri: str | None
) -> None:
    """Refit one trial of a sweep (a point of its Pareto front, say) on all the training
    data, as a child run of its sweep tagged refit_of."""
    stop_on_signals()
    load_tensorflow()
    from sweeper import sweep, tracking

    tracking.configure(tracking_uri)
    run = sweep.refit_trial(run_id, epochs=epochs, data_dir=data_dir)
    if run is not None:
        click.echo(f"refit of {run_id}: run {run.run_id}")


@main.command()
@click.argument("model_path", type=click.Path(dir_okay=False))
@click.argument("images", nargs=-1, required=True)
@user_errors
def predict(model_path: str, images: tuple[str, ...]) -> None:
    """Class name and probability for each image file."""
    load_tensorflow()
    from sweeper import results

    for image, name, probability in results.predict(model_path, list(images)):
        click.echo(f"{image}: {name} ({probability:.3f})")


@main.command()
@click.option("--port", type=int, default=5000, show_default=True)
@tracking_option
@user_errors
def ui(port: int, tracking_uri: str | None) -> None:
    """The MLflow UI on the project's store, bound to 127.0.0.1."""
    import subprocess

    from sweeper import tracking

    uri = tracking.configure(tracking_uri)
    if uri.startswith("http"):
        raise SweeperError(f"The tracking URI is a server already: open {uri}")
    click.echo(f"MLflow UI at http://127.0.0.1:{port} (store {uri}); Ctrl-C stops it")
    # MLflow 3 opens an experiment on its GenAI overview: each dataset's runs are here
    for experiment_id, name in tracking.experiments():
        click.echo(f"  {name}: http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs")
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    # Its own session: Ctrl-C reaches only this process, which stops the server quietly
    # (a SIGINT to MLflow's server processes prints a traceback from each).
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in `sweep`
    server = subprocess.Popen(command, start_new_session=True)
    try:
        sys.exit(server.wait())
    except KeyboardInterrupt:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the workers it started
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:  # a worker that ignores it: no Ctrl-C hangs
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        click.echo("MLflow UI stopped")


def _parse_overrides(pairs: tuple[str, ...]) -> dict[str, Any]:
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

"""Benchmarks. Every figure is a ratio against a reference measured in the same run.

python bench/run.py [--only overhead,startup,levers,tta,workers,documented,ablation,minutes,
    image-cache]
    [--data-dir DIR]
python bench/run.py --only search-gain --dataset D --arm sweep|recipe --seed S [--scale F]
    [--search-share F] [--width W]
python bench/run.py --only warm-start --dataset D --seed S [--scale F] [--search-share F]
python bench/run.py --only fidelity --dataset D [--configs N] [--seed S] [--short-limit N]
    [--short-epochs N] [--long-epochs N]
python bench/run.py --only coupled --dataset D [--configs N] [--seed S]

Prints a Markdown table and writes it to bench/results/DATE-HOST-SECTIONS-HHMM.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import math
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
FIXED_CNN = {  # the cnn-mnist recipe, every value fixed: one trial is exactly that model
    "conv_blocks": 1,
    "filters": 32,
    "kernel_size": 3,
    "dense_units": 100,
    "dropout": 0.2,
    "kernel_initializer": "he_uniform",
    "batch_size": 128,
    "optimizer": "adam",
    "learning_rate": 0.001,
    "early_stopping_patience": 0,
}


def sweep_file(
    folder: Path, name: str, dataset="mnist", trials=1, epochs=3, limit=None, families=None, **extra
) -> Path:
    body = {
        "dataset": dataset,
        "engine": "optuna",
        "sampler": "random",
        "pruner": "none",
        "budget": {"trials": trials, "max_epochs": epochs},
        "study": name,
        "families": families or {"cnn": FIXED_CNN},
        **extra,
    }
    if limit:
        body["data"] = {"limit": limit}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def run_sweeper(folder: Path, path: Path, *args, env=None, log: Path | None = None) -> float:
    """Runs `sweeper sweep` in `folder` (its own MLflow and Optuna stores); wall seconds.
    Its output goes to `log` where one is given."""
    if "--tracking-uri" not in args:  # mlflow.set_tracking_uri exports it to children
        args = (*args, "--tracking-uri", f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    start = time.perf_counter()
    with open(log or os.devnull, "w") as out:
        subprocess.run(
            [PYTHON, "-m", "sweeper.cli", "sweep", str(path), *args],
            cwd=folder,
            check=True,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    return time.perf_counter() - start


def run_raw(data_dir, *args) -> tuple[dict, float, float]:
    """The plain Keras reference; returns its JSON, wall seconds and its start time."""
    t0 = time.time()
    start = time.perf_counter()
    out = subprocess.run(
        [PYTHON, str(ROOT / "bench" / "raw_fit.py"), str(data_dir), *map(str, args)],
        check=True,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    return json.loads(out.stdout.strip().splitlines()[-1]), wall, t0


def child_runs(folder: Path, kinds=("trial",)):
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    client = MlflowClient()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return client, [r for r in runs if r.data.tags.get("kind") in kinds]


# --- 1. overhead ---------------------------------------------------------------------------


def overhead(data_dir, rows, repeats=3, trials=4):
    """cnn on mnist, 3 epochs on 20,000 images: a plain script's trial (build, fit, predict,
    save) against a trial of `sweeper sweep` with full MLflow logging, in a sweep of `trials`
    such trials: from the first trial's start to the parent run's end (every artifact
    written), over `trials`. This VM's speed jumps between runs (epochs of 1.6 to 2.7 s for
    the same work), so each side is its best of `repeats` interleaved runs: noise only ever
    adds time."""
    raw_walls, raw_trials, raw_ips, sw_walls, sw_trials, sw_ips = [], [], [], [], [], []
    sw_later = []
    for _ in range(repeats):  # interleaved, so drift in machine speed hits both alike
        raw, wall, _ = run_raw(data_dir, "mnist", 22222, 3, 128)
        raw_walls.append(wall)
        raw_trials.append(raw["trial_seconds"])
        raw_ips.append(raw["images_per_second"])
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            path = sweep_file(folder, "overhead", trials=trials, limit=22222)
            sw_walls.append(run_sweeper(folder, path, "--data-dir", str(data_dir)))
            client, runs = child_runs(folder)
            parent = client.search_runs(
                [e.experiment_id for e in client.search_experiments()], "tags.kind = 'sweep'"
            )[0]
            # A trial's run opens on the writer thread, after its training began: the trials
            # are timed from the first one's first step, plus its build and compile taken
            # as the plain script's.
            firsts = sorted(first_step_of(client, r) for r in runs)
            build = raw["first_step"] - raw["trial_started"]
            end = parent.info.end_time / 1000
            sw_trials.append((end - firsts[0] + build) / len(runs))
            # After the first trial, which also loads MLflow and opens the store meanwhile.
            sw_later.append((end - firsts[1] + build) / (len(runs) - 1))
            sw_ips.append(max(r.data.metrics["images_per_second"] for r in runs))
    a_trial, b_trial = min(raw_trials), min(sw_trials)
    rows.append(
        (
            "overhead: wall time per trial in a sweep, sweeper / plain script",
            f"{b_trial / a_trial:.3f}",
            f"{b_trial:.2f} s / {a_trial:.2f} s (best of {repeats}): build, fit, predict, save; "
            f"sweeper also logs params, curves, model, plots (written while training goes "
            f"on), per trial of a {trials}-trial sweep from its first trial's start (its first "
            f"step less the plain script's build and compile) to its parent run's end",
        )
    )
    rows.append(
        (
            "overhead: wall time per trial after the first, sweeper / plain script",
            f"{min(sw_later) / a_trial:.3f}",
            f"{min(sw_later):.2f} s / {a_trial:.2f} s (best of {repeats}): the same, from the "
            f"second trial's start; the first trial's epochs share the CPU with MLflow's import "
            f"and the store's opening",
        )
    )
    rows.append(
        (
            "overhead: training images/s, sweeper / plain script",
            f"{max(sw_ips) / max(raw_ips):.3f}",
            f"{max(sw_ips):.0f} / {max(raw_ips):.0f} images/s (best)",
        )
    )
    a_wall, b_wall = min(raw_walls), min(sw_walls)
    rows.append(
        (
            f"(information) wall time of the command, sweeper ({trials} trials) / plain script "
            f"x {trials}",
            f"{b_wall / (a_wall * trials):.3f}",
            f"{b_wall:.1f} s / {trials} x {a_wall:.1f} s; each plain run pays Python's and "
            "TensorFlow's start-up again, the sweep once",
        )
    )


# --- 2. start-up and per-trial fixed cost ---------------------------------------------------


def startup(data_dir, rows, repeats=3):
    """Seconds from the command's start to the first training step, sweeper against a plain
    script: on a fresh store (a new project) and on a warm one (the same folder's second
    sweep, a new study). Best of `repeats` interleaved runs on each side: this VM's speed
    jumps between runs, and noise only ever adds time."""
    for dataset, arch in (("mnist", "cnn-mnist"), ("cifar10", "cnn-cifar10")):
        families = {
            "cnn": {
                **FIXED_CNN,
                "conv_blocks": 2 if dataset == "cifar10" else 1,
                "kernel_initializer": "glorot_uniform" if dataset == "cifar10" else "he_uniform",
            }
        }
        plain, swept = [], {"fresh": [], "warm": []}
        for _ in range(repeats):
            raw, _, raw_t0 = run_raw(data_dir, dataset, 4000, 2, 128, "--arch", arch)
            plain.append(raw["first_step"] - raw_t0)
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                for store in swept:
                    path = sweep_file(
                        folder, store, dataset=dataset, epochs=2, limit=4000, families=families
                    )
                    t0 = time.time()
                    run_sweeper(folder, path, "--data-dir", str(data_dir))
                    swept[store].append(first_step(folder, store) - t0)
        for store, seconds in swept.items():
            rows.append(
                (
                    f"start-up to first step, {dataset}, {store} store: sweeper / plain",
                    f"{min(seconds) / min(plain):.2f}",
                    f"{min(seconds):.1f} s / {min(plain):.1f} s (best of {repeats}; sweeper "
                    f"{', '.join(f'{s:.1f}' for s in seconds)}, plain "
                    f"{', '.join(f'{s:.1f}' for s in plain)})",
                )
            )


def first_step(folder: Path, study: str) -> float:
    """When the study's (one) trial took its first step."""
    client, runs = child_runs(folder)
    (run,) = [r for r in runs if r.data.tags["study"] == study]
    return first_step_of(client, run)


def first_step_of(client, run) -> float:
    """When a trial took its first step: its first epoch's end (logged with the epoch's
    metrics, timed on the training thread) less that epoch's duration."""
    seconds = client.get_metric_history(run.info.run_id, "epoch_seconds")[0].value
    return client.get_metric_history(run.info.run_id, "loss")[0].timestamp / 1000 - seconds


# --- 3. CPU speed levers ---------------------------------------------------------------------


def levers(data_dir, rows):
    """cnn-cifar10 (B3) on 12,000 images, steady-state epochs, each against float32 at
    batch 32 with all threads; accuracy compared after the same epochs and seed."""
    common = ("cifar10", 13334, 3)
    base, _, _ = run_raw(data_dir, *common, 32, "--arch", "cnn-cifar10")
    variants = {
        "mixed_bfloat16": ("--precision", "mixed_bfloat16"),
        "1 thread (of 2)": ("--threads", "1"),
        "jit_compile (XLA)": ("--jit",),
    }
    results = {
        name: run_raw(data_dir, *common, 32, "--arch", "cnn-cifar10", *flags)[0]
        for name, flags in variants.items()
    }
    results["batch 128"] = run_raw(data_dir, *common, 128, "--arch", "cnn-cifar10")[0]
    for name, r in results.items():
        speed = r["steady_images_per_second"] / base["steady_images_per_second"]
        rows.append(
            (
                f"lever: {name}, speed vs float32 batch 32",
                f"{speed:.2f}",
                f"test accuracy {r['test_accuracy']:.4f} vs {base['test_accuracy']:.4f} "
                f"after 3 epochs",
            )
        )


# --- 4. time to accuracy --------------------------------------------------------------------

TTA_CONFIGS = {  # (engine, sampler, pruner)
    "Optuna TPE + Hyperband pruner": ("optuna", "tpe", "hyperband"),
    "Optuna TPE, no pruner": ("optuna", "tpe", "none"),
    "Keras Tuner RandomSearch": ("keras-tuner", "random", "none"),
    "Keras Tuner Hyperband": ("keras-tuner", "hyperband", "none"),
}
TTA_REFERENCE = "Keras Tuner RandomSearch"


def time_to_accuracy(data_dir, rows, target=0.985, seeds=(0, 1, 2), cap_minutes=1.25):
    """Wall time of `sweeper sweep` until a trial reaches `target` val_accuracy on mnist (it
    then stops), per engine configuration and seed. All use sweeps/mnist.yaml's families and
    spaces, 12 trials of at most 10 epochs, no recipe-first trial; a sweep stops starting
    and training trials after `cap_minutes` and then counts as not reached."""
    base = yaml.safe_load((ROOT / "sweeps" / "mnist.yaml").read_text())
    base.pop("refit", None)  # the search's time to the target; a refit comes after it
    times = {}
    for label, (engine, sampler, pruner) in TTA_CONFIGS.items():
        times[label] = []
        for seed in seeds:
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                body = {
                    **base,
                    "engine": engine,
                    "sampler": sampler,
                    "pruner": pruner,
                    "seed": seed,
                    "baseline_first": False,
                    "study": "tta",
                    "budget": {
                        "trials": 12,
                        "max_epochs": 10,
                        "target": target,
                        "timeout_minutes": cap_minutes,
                    },
                }
                path = folder / "tta.yaml"
                path.write_text(yaml.safe_dump(body, sort_keys=False))
                wall = run_sweeper(folder, path, "--data-dir", str(data_dir))
                client, _ = child_runs(folder)
                parent = client.search_runs(
                    [e.experiment_id for e in client.search_experiments()], "tags.kind = 'sweep'"
                )[0]
                reached = "target_reached_by" in parent.data.tags
                times[label].append((wall, reached))
            print(
                f"  {label}, seed {seed}: "
                f"{f'{wall:.0f} s' if reached else f'not reached in {wall:.0f} s'}",
                file=sys.stderr,
                flush=True,
            )
    ref, ref_exact = censored_median(times[TTA_REFERENCE])
    for label, runs in times.items():
        median, exact = censored_median(runs)
        ratio = median / ref
        shown = (
            "1.00"
            if label == TTA_REFERENCE
            else f"{ratio:.2f}"
            if exact and ref_exact
            else f"< {ratio:.2f}"
            if exact
            else f"> {ratio:.2f}"
            if ref_exact
            else "n/a"
        )
        done = ", ".join(f"{wall:.0f}" for wall, reached in sorted(runs) if reached)
        rows.append(
            (
                f"time to {target:.1%} val accuracy, mnist: {label} / {TTA_REFERENCE}",
                shown,
                f"median {'' if exact else '> '}{median:.0f} s; reached by "
                f"{sum(r for _, r in runs)} of {len(runs)} seeds"
                f"{f' ({done} s)' if done else ''}; cap {cap_minutes:g} min",
            )
        )


def censored_median(runs):
    """Median seconds to the target over (seconds, reached) runs, and whether it is exact.
    A run that never reached it took more than its wall time, so when the median falls on
    one, that wall time is a lower bound for the median."""
    ordered = sorted(runs, key=lambda run: (not run[1], run[0]))
    seconds, reached = ordered[len(ordered) // 2]
    return seconds, reached


# --- workers: all the cores on the embedded default ------------------------------------------


def workers(data_dir, rows, sweep="mnist", search_share=0.4):
    """The default sweep's search (its refit left out: one process in both; `search_share`
    of its minutes: 0.4 is what mnist's file had before it stopped searching), run with one
    worker and with `--workers auto`, one after the other on a fresh store each: training
    images/s of the whole search (images trained / wall time), the CPU's use (the processes'
    CPU time / wall time / cores), and the time to the documented accuracy (98.5% on mnist)
    in validation, from the sweep's start to the end of the first trial that reached it."""
    documented = {"mnist": 0.985, "cifar10": 0.715, "fashion_mnist": 0.90}[sweep]
    cores = len(os.sched_getaffinity(0))
    measured = {}
    for label, count in (("1 worker", "1"), ("auto", "auto")):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            wall = run_sweeper(
                folder,
                ROOT / "sweeps" / f"{sweep}.yaml",
                "--workers",
                count,
                "--search-share",
                str(search_share),
                "--refit-epochs",
                "0",
                "--data-dir",
                str(data_dir),
            )
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            client, runs = child_runs(folder)
            parent = client.search_runs(
                [e.experiment_id for e in client.search_experiments()], "tags.kind = 'sweep'"
            )[0]
            images = sum(
                int(r.data.params["train_size"]) * r.data.metrics.get("epochs", 0) for r in runs
            )
            reached = [
                (r.info.end_time - parent.info.start_time) / 1000
                for r in runs
                if r.data.metrics.get("best_val_accuracy", 0) >= documented
            ]
            measured[label] = (
                images / wall,
                cpu / wall / cores,
                min(reached, default=None),
                wall,
                len(runs),
            )
        ips, busy, to_target, wall, trials = measured[label]
        print(
            f"  {label}: {ips:.0f} images/s, CPU {busy:.0%} busy, {trials} trials in {wall:.0f} s, "
            f"{documented:.1%} after {to_target if to_target is None else round(to_target)} s",
            file=sys.stderr,
            flush=True,
        )
    one = measured["1 worker"]
    for label, (ips, busy, to_target, wall, trials) in measured.items():
        rows.append(
            (
                f"workers: {sweep} default sweep's search, {label}, images/s vs 1 worker",
                f"{ips / one[0]:.2f}",
                f"{ips:.0f} images/s; CPU {busy:.0%} busy ({cores} cores); {trials} trials in {wall / 60:.1f} min",
            )
        )
        shown = f"{to_target / one[2]:.2f}" if to_target and one[2] else "n/a"
        rows.append(
            (
                f"workers: {sweep}, {label}, time to {documented:.1%} val accuracy vs 1 worker",
                shown,
                f"{to_target:.0f} s" if to_target else "not reached",
            )
        )


# --- the documented accuracy: the sweep files before issue 12 against today's -------------

DOCUMENTED = {"mnist": 0.985, "cifar10": 0.715}  # the seeds' printed test accuracies (B2, B3)
BEFORE = ROOT / "bench" / "sweeps_before"


def to_documented(data_dir, rows, cap_minutes=30):
    """Wall time of `make sweep DATASET=d` until a trial's validation accuracy passes the
    documented test accuracy, for the sweep files before issue 12 (tutorial CNNs, float32) and
    today's, one after the other on a fresh store each. Each runs as written, its refit left
    out, with the documented figure as its target (the sweep stops there) and its own timeout
    as the cap, or `cap_minutes` when smaller (the cifar10 file before issue 12 gives itself
    55); a sweep that ends first counts as not reached."""
    for dataset, documented in DOCUMENTED.items():
        measured = {}
        for label, folder in (("before issue 12", BEFORE), ("today", ROOT / "sweeps")):
            body = yaml.safe_load((folder / f"{dataset}.yaml").read_text())
            body.pop("refit", None)
            budget = body["budget"]
            if "minutes" in budget:  # its search's share: the refit is left out
                share = budget.pop("search_share", 0.3)
                budget["timeout_minutes"] = budget.pop("minutes") * share
            budget["target"] = documented
            if cap_minutes:
                budget["timeout_minutes"] = min(budget["timeout_minutes"], cap_minutes)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"{dataset}.yaml"
                path.write_text(yaml.safe_dump(body, sort_keys=False))
                wall = run_sweeper(Path(tmp), path, "--data-dir", str(data_dir))
                client, runs = child_runs(Path(tmp))
                parent = client.search_runs(
                    [e.experiment_id for e in client.search_experiments()], "tags.kind = 'sweep'"
                )[0]
                by = parent.data.tags.get("target_reached_by")
                test = next(
                    (
                        r.data.metrics.get("test_accuracy")
                        for r in runs
                        if by and r.info.run_id in by
                    ),
                    None,
                )
            measured[label] = (wall if by else None, wall, by, test, budget["timeout_minutes"])
            print(
                f"  {dataset} {label}: {f'{wall:.0f} s by {by}' if by else f'not reached in {wall:.0f} s'}",
                file=sys.stderr,
                flush=True,
            )
        before = measured["before issue 12"][0]
        for label, (reached, wall, by, test, cap) in measured.items():
            ratio = (
                f"{reached / before:.2f}"
                if reached and before
                else f"< {wall / measured['before issue 12'][1]:.2f}"
                if reached
                else "n/a"
            )
            rows.append(
                (
                    f"time to the documented {documented:.1%} in validation, {dataset}: "
                    f"{label}'s sweep file / before issue 12's",
                    ratio,
                    (
                        f"{reached:.0f} s, by {by.split(' (')[0]} (its test accuracy {test:.2%})"
                        if reached
                        else f"not reached in {wall:.0f} s (cap {cap:g} min)"
                    ),
                )
            )


# --- 7. a default sweep in its minutes ------------------------------------------------------
def in_minutes(data_dir, rows, datasets=("mnist",)):
    """`sweeper sweep sweeps/D.yaml` as written (search and refit, `budget.minutes`), from a
    fresh store: wall time against the budget, the CPU's busy share over the whole command
    (the children's user + system seconds over wall seconds x cores), the refit's epochs and
    test accuracy."""
    for dataset in datasets:
        body = yaml.safe_load((ROOT / "sweeps" / f"{dataset}.yaml").read_text())
        minutes = body["budget"]["minutes"]
        with tempfile.TemporaryDirectory() as tmp:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            wall = run_sweeper(
                Path(tmp), ROOT / "sweeps" / f"{dataset}.yaml", "--data-dir", str(data_dir)
            )
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            client, runs = child_runs(Path(tmp))
            refit = next((r for r in runs if r.data.tags.get("kind") == "refit"), None)
        busy = cpu / (wall * (os.cpu_count() or 1))
        found = (
            f"refit {refit.info.run_name}: {refit.data.metrics['epochs']:.0f} epochs, test "
            f"{refit.data.metrics['test_accuracy']:.4f}"
            + (
                f" (TTA {refit.data.metrics['test_accuracy_tta']:.4f})"
                if "test_accuracy_tta" in refit.data.metrics
                else ""
            )
            if refit
            else "no refit"
        )
        rows.append(
            (
                f"default {dataset} sweep, wall time / its budget.minutes ({minutes:g})",
                f"{wall / 60 / minutes:.3f}",
                f"{wall / 60:.1f} min; CPU {busy:.0%} busy over the run; {found}",
            )
        )


# --- 8. ablation of the ResNet recipe's additions (issue 20) ---------------------------------
ABLATION = {
    "recipe (ResNet-9 shape, width 32)": {},
    "+ stage widths 64/128/128": {"widths": "64/128/128"},
    "+ whitening stem": {"stem": "whiten"},
    "+ identity init": {"identity_init": True},
    "+ weight averaging (EMA 0.98)": {"ema_momentum": 0.98},
    "+ BatchNorm without scale": {"bn_scale": False},
    "+ alternating flip": {"flip": "alternating"},
    "+ GELU": {"activation": "gelu"},
}
ABLATION["all of them"] = {k: v for arm in ABLATION.values() for k, v in arm.items()}
# speed only (its accuracy has 10% more training images): does validation slow the epochs?
ABLATION["recipe without validation (as a refit)"] = {"validation": False}


def ablation(data_dir, rows, limit=4000, epochs=3, test=2000, seeds=(0,)):
    """The ResNet recipe, then each addition alone and all together, trained by sweeper's
    `train` for the same epochs on the same images and seed (arms interleaved, one process
    each): test accuracy (plain, flip TTA, flip+translate TTA) and seconds an epoch (the
    median of the epochs after the first, which also traces), against the recipe's."""
    results = {name: [] for name in ABLATION}
    for seed in seeds:
        for name, params in ABLATION.items():
            out = subprocess.run(
                [
                    PYTHON,
                    str(ROOT / "bench" / "ablation_arm.py"),
                    str(data_dir),
                    str(limit),
                    str(epochs),
                    str(test),
                    str(seed),
                    json.dumps(params),
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            results[name].append(json.loads(out.strip().splitlines()[-1]))
            print(f"  {name} (seed {seed}): {results[name][-1]}", file=sys.stderr, flush=True)

    def mean(name, key):
        return sum(r[key] for r in results[name]) / len(results[name])

    def epoch_seconds(name):
        later = [
            sorted(r["epoch_seconds"][1:])[len(r["epoch_seconds"][1:]) // 2] for r in results[name]
        ]
        return sum(later) / len(later)

    def first_epoch(name):
        return sum(r["epoch_seconds"][0] for r in results[name]) / len(results[name])

    recipe = next(iter(ABLATION))
    for name in ABLATION:
        rows.append(
            (
                f"ablation: {name}, s/epoch vs the recipe",
                f"{epoch_seconds(name) / epoch_seconds(recipe):.2f}",
                f"test {mean(name, 'test_accuracy'):.4f} ({mean(name, 'test_accuracy') - mean(recipe, 'test_accuracy'):+.4f}), "
                f"flip TTA {mean(name, 'tta_flip'):.4f}, flip+translate TTA "
                f"{mean(name, 'tta_flip_translate'):.4f}; {epoch_seconds(name):.0f} s/epoch; "
                f"first epoch {first_epoch(name):.0f} s; CPU {mean(name, 'cpu_busy'):.0%} busy; "
                f"{epochs} epochs on {limit * 0.9:.0f} images, {test} test images, "
                f"seeds {','.join(map(str, seeds))}",
            )
        )


# --- 9. what the search buys over the recipe alone (issue 21) --------------------------------

GAIN_RESULTS = ROOT / "bench" / "results" / "search-gain"


def search_gain(
    data_dir,
    rows,
    dataset="fashion_mnist",
    arm="sweep",
    seed=0,
    scale=1.0,
    search_share=None,
    width=None,
):
    """One dataset, arm and seed per call, from a fresh store, appended to
    bench/results/search-gain/results.md with each test image's hit (.npy) for the paired
    interval. Arm "sweep": sweeps/D.yaml as written (its `budget.minutes` x `scale`). Arm
    "recipe": the same file's first family's recipe alone for the same minutes: one
    2-epoch trial on 2,000 images (the refit plan needs a measured speed), then all the
    rest refit time; with `width`, that recipe at another width for the same minutes (arm
    "recipe_widthW": width against epochs at equal time). The sweep's log goes beside the
    results. Then every dataset with an arm and the recipe alone of a seed gets its rows:
    each arm's mean, the difference, and a paired bootstrap interval over the test images."""
    from sweeper import config, policy

    if width is not None and arm != "recipe":
        raise SystemExit("search-gain: --width is for --arm recipe")
    label = arm if width is None else f"recipe_width{width}"
    spec = config.load(ROOT / "sweeps" / f"{dataset}.yaml")
    body = (
        _searching(spec, search_share, "search-gain")
        if arm == "sweep"
        else yaml.safe_load(spec.text)
    )
    body["seed"] = seed
    body["study"] = f"gain-{label}-{seed}"
    minutes = round(spec.minutes * scale, 2)
    body["budget"]["minutes"] = minutes
    if arm == "recipe":
        family, point = policy.first_points(spec)[0]
        body["families"] = {family: _with_fixed(spec, family, point)}
        if width is not None:
            body["families"][family]["width"] = width
        body["data"] = {**body.get("data", {}), "limit": 2000}
        body["budget"] = {  # a minute's search: the one trial must start before it ends
            "trials": 1,
            "minutes": minutes,
            "search_share": round(min(0.5, 1.0 / minutes), 3),
            "max_epochs": 2,
        }
        body["warm_start"] = "none"
        # no search to shorten: its trial runs both epochs, as a sweep's timing trial does
        body.pop("refit", None)
    GAIN_RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{dataset}.yaml"
        # the families in the file's order: it sets which recipe runs first
        path.write_text(yaml.safe_dump(body, sort_keys=False))
        log = GAIN_RESULTS / f"{dataset}-{label}-{seed}.log"
        wall = run_sweeper(Path(tmp), path, "--data-dir", str(data_dir), log=log)
        client, runs = child_runs(Path(tmp), kinds=("trial", "refit"))
        final = _final_model(runs)
        hits = _test_hits(final, dataset, data_dir, Path(tmp))
    np.save(GAIN_RESULTS / f"{dataset}-{label}-{seed}.npy", hits)
    model = f"{final.info.run_name} ({final.data.metrics.get('epochs', 0):.0f} epochs)"
    line = (
        f"| {dataset} | {label} | {seed} | {minutes:g} | {wall / 60:.1f} | {model} | "
        f"{hits.mean():.4f} |\n"
    )
    table = GAIN_RESULTS / "results.md"
    if not table.exists():
        table.write_text(
            "| dataset | arm | seed | minutes | wall min | final model | test accuracy |\n"
            "|---|---|---|---|---|---|---|\n"
        )
    with open(table, "a") as f:
        f.write(line)
    # the figures sit in the report's own table: the row's fields, not its pipes
    figures = f"{model}, {wall / 60:.1f} of {minutes:g} min"
    rows.append((f"search-gain: {dataset} {label} seed {seed}", f"{hits.mean():.4f}", figures))
    rows.extend(gain_summary())


def _searching(spec, search_share, section):
    """The sweep file's body, with `search_share` where given; refused where it does not
    search (a default file whose search did not pay: `budget.search_share: 0`)."""
    body = yaml.safe_load(spec.text)
    if search_share is not None:
        body["budget"]["search_share"] = search_share
    if (spec.search_share if search_share is None else search_share) == 0:
        raise SystemExit(
            f"{section}: {spec.dataset}'s file does not search (budget.search_share 0): "
            "give --search-share, e.g. 0.2"
        )
    return body


def _final_model(runs):
    """A sweep's result: its refit, or without one its best trial on validation."""
    refits = [r for r in runs if r.data.tags.get("kind") == "refit"]
    return refits[0] if refits else max(runs, key=lambda r: r.data.metrics["best_val_accuracy"])


@functools.cache
def _test_set(dataset, data_dir):
    """The dataset's test images and labels, loaded once a process."""
    from sweeper import data

    test = data.load(dataset, data_dir=data_dir)
    return test.x_test, test.y_test


def _test_hits(run, dataset, data_dir, folder, name="final"):
    """Whether the run's model classifies each test image right (no TTA); its model is
    exported to FOLDER/NAME.keras."""
    import keras
    import mlflow

    from sweeper import results

    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    model_path = results.export(run, folder / f"{name}.keras")
    model = keras.saving.load_model(model_path)
    images, labels = _test_set(dataset, data_dir)
    return model.predict(images, batch_size=512, verbose=0).argmax(1) == labels


def gain_summary(resamples=2000):
    """Per dataset and arm (the sweep, the recipe at another width), over the seeds that have
    it and the recipe alone: each one's mean test accuracy, the difference (arm - recipe) and
    its 95% paired bootstrap interval (the same resampled test images for both arms of a
    seed, the seeds' differences averaged)."""
    found = {}
    for path in GAIN_RESULTS.glob("*.npy"):
        dataset, arm, seed = path.stem.rsplit("-", 2)
        found.setdefault(dataset, {}).setdefault(arm, {})[int(seed)] = np.load(path)
    rows = []
    rng = np.random.default_rng(0)
    for dataset, arms in sorted(found.items()):
        alone = arms.pop("recipe", {})
        for arm, seeds in sorted(arms.items()):
            pairs = [(hits, alone[seed]) for seed, hits in seeds.items() if seed in alone]
            if not pairs:
                continue
            means = [np.mean([a.mean() for a, _ in pairs]), np.mean([b.mean() for _, b in pairs])]
            low, high = paired_interval(pairs, rng, resamples)
            rows.append(
                (
                    f"search-gain: {dataset}, {arm} - recipe alone ({len(pairs)} seeds)",
                    f"{means[0] - means[1]:+.4f}",
                    f"{arm} {means[0]:.4f}, recipe alone {means[1]:.4f}; 95% paired "
                    f"bootstrap interval [{low:+.4f}, {high:+.4f}]",
                )
            )
    return rows


def paired_interval(pairs, rng, resamples=2000) -> tuple[float, float]:
    """95% paired bootstrap interval of mean(a) - mean(b) over (a, b) hit arrays of the same
    test images, the pairs' differences averaged."""
    draws = np.zeros(resamples)
    for a, b in pairs:
        picks = rng.integers(0, len(a), size=(resamples, len(a)))
        draws += (a[picks].mean(1) - b[picks].mean(1)) / len(pairs)
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(low), float(high)


# --- 10. a second sweep warm-started from the first (issue 21) -----------------------------

WARM_RESULTS = ROOT / "bench" / "results" / "warm-start"


def warm_start(data_dir, rows, dataset="fashion_mnist", seed=0, scale=1.0, search_share=None):
    """Two sweeps of sweeps/D.yaml in one fresh store at equal minutes (its `budget.minutes`
    x `scale`; `search_share` as search-gain's): the first cold (seed S), the second another
    study (seed S + 1000) that starts from the first (`warm_start: all`). Appends both final
    models' test accuracy to bench/results/warm-start/results.md, with the warm starts the
    second queued, why each refitted what it did, and the difference's paired bootstrap
    interval over the test images; the rows also pool every seed recorded so far."""
    from sweeper import config

    spec = config.load(ROOT / "sweeps" / f"{dataset}.yaml")
    minutes = round(spec.minutes * scale, 2)
    WARM_RESULTS.mkdir(parents=True, exist_ok=True)
    finals, hits, walls = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for study, file_seed, warm in (("first", seed, "none"), ("second", seed + 1000, "all")):
            body = _searching(spec, search_share, "warm-start")
            body.update(seed=file_seed, study=f"{dataset}-{study}", warm_start=warm)
            body["budget"]["minutes"] = minutes
            path = folder / f"{study}.yaml"
            path.write_text(yaml.safe_dump(body, sort_keys=False))
            log = WARM_RESULTS / f"{dataset}-{seed}-{study}.log"
            walls[study] = run_sweeper(folder, path, "--data-dir", str(data_dir), log=log)
            _, runs = child_runs(folder, kinds=("refit", "trial"))
            runs = [r for r in runs if r.data.tags.get("study") == f"{dataset}-{study}"]
            if not runs:
                raise SystemExit(f"warm-start: {study} sweep ran no trial in {minutes} min")
            finals[study] = _final_model(runs)
            hits[study] = _test_hits(finals[study], dataset, data_dir, folder, study)
            np.save(WARM_RESULTS / f"{dataset}-{seed}-{study}.npy", hits[study])
    queued = [
        line.split("warm start: ", 1)[1].strip()
        for line in (WARM_RESULTS / f"{dataset}-{seed}-second.log").read_text().splitlines()
        if "warm start: " in line
    ]
    low, high = paired_interval([(hits["second"], hits["first"])], np.random.default_rng(seed))
    table = WARM_RESULTS / "results.md"
    if not table.exists():
        table.write_text(
            "| dataset | seed | minutes | first: final model, test | second: warm starts, "
            "final model, test | second - first [95% paired bootstrap] |\n"
            "|---|---|---|---|---|---|\n"
        )

    def final(study):
        run = finals[study]
        why = run.data.tags.get("refit_choice", "no refit: the best trial")
        return (
            f"{run.info.run_name} ({run.data.metrics.get('epochs', 0):.0f} epochs; {why}; "
            f"{walls[study] / 60:.1f} min), {hits[study].mean():.4f}"
        )

    difference = hits["second"].mean() - hits["first"].mean()
    second_result = f"{'; '.join(queued) or 'none queued'}; {final('second')}"
    interval = f"[{low:+.4f}, {high:+.4f}]"
    with open(table, "a") as f:
        f.write(
            f"| {dataset} | {seed} | {minutes:g} | {final('first')} | {second_result} | "
            f"{difference:+.4f} {interval} |\n"
        )
    # the figures sit in the report's own table: the row's fields, not its pipes
    figures = f"first: {final('first')}; second: {second_result}; 95% paired bootstrap {interval}"
    rows.append((f"warm-start: {dataset} seed {seed}", f"{difference:+.4f}", figures))
    pairs = [
        (np.load(second), np.load(second.with_name(second.name.replace("-second", "-first"))))
        for second in sorted(WARM_RESULTS.glob(f"{dataset}-*-second.npy"))
    ]
    low, high = paired_interval(pairs, np.random.default_rng(0))
    rows.append(
        (
            f"warm-start: {dataset}, second - first ({len(pairs)} seeds)",
            f"{np.mean([a.mean() - b.mean() for a, b in pairs]):+.4f}",
            f"95% paired bootstrap interval [{low:+.4f}, {high:+.4f}]",
        )
    )


# --- 11. do short trials rank configurations as their refits do? (issue 21) ---------------

FIDELITY_RESULTS = ROOT / "bench" / "results" / "fidelity"


def fidelity(
    data_dir,
    rows,
    dataset="fashion_mnist",
    configs=8,
    short_limit=None,
    short_epochs=None,
    long_epochs=None,
    seed=0,
):
    """The Spearman rank correlation, over CONFIGS configurations of sweeps/D.yaml, between
    a short trial's validation accuracy (SHORT_EPOCHS on SHORT_LIMIT training images, 0: all;
    default: the file's `max_epochs` on its `data.limit`, the search's trial) and the test
    accuracy of the same configuration trained as a refit is (training + validation data,
    LONG_EPOCHS; default the file's `max_epochs`). The configurations: each family's recipe,
    then points drawn by Optuna's RandomSampler (SEED) as the engine draws them, the family
    first. Every training is kept in bench/results/fidelity/D.json as it ends, by
    configuration (every value, defaults too) and fidelity, and a later call trains only
    what is missing: calls with other short fidelities reuse the long runs, so fidelities
    compare on the same configurations."""
    from scipy.stats import spearmanr

    from sweeper import config, data, devices, policy, schema, train

    spec = config.load(ROOT / "sweeps" / f"{dataset}.yaml")
    short_limit = spec.limit if short_limit is None else short_limit or None  # 0: all
    short_epochs = short_epochs or spec.max_epochs
    long_epochs = long_epochs or spec.max_epochs
    precision = devices.precision(spec.precision)
    short_key, long_key = f"{short_limit or 'all'} images x {short_epochs}", f"{long_epochs}"

    recipes = [
        (family, _with_fixed(spec, family, point)) for family, point in policy.first_points(spec)
    ]
    points = (recipes + _drawn(spec, configs, seed))[:configs]

    FIDELITY_RESULTS.mkdir(parents=True, exist_ok=True)
    store = FIDELITY_RESULTS / f"{dataset}.json"
    records = json.loads(store.read_text()) if store.exists() else {}

    def trained(family, params, dataset_, epochs, score):
        result = train.train(
            family, params, dataset_, epochs=epochs, seed=spec.seed, precision=precision
        )
        return {
            "score": result.score(score) if score else result.test["test_accuracy"],
            "seconds": round(result.train_seconds, 1),
        }

    def key(family, params):  # every value, defaults too: a changed default trains anew
        return json.dumps([family, schema.resolve(family, params)], sort_keys=True)

    load = functools.partial(data.load, dataset, data_dir=data_dir, seed=spec.seed)
    for family, params in points:
        record = records.setdefault(
            key(family, params), {"family": family, "params": params, "short": {}, "long": {}}
        )
        if short_key not in record["short"]:
            record["short"][short_key] = trained(
                family, params, load(limit=short_limit), short_epochs, "val_accuracy"
            )
            store.write_text(json.dumps(records, indent=1))
        if long_key not in record["long"]:
            record["long"][long_key] = trained(
                family, {**params, "early_stopping_patience": 0}, load().merged(), long_epochs, None
            )
            store.write_text(json.dumps(records, indent=1))
        print(
            f"{family} {params}: {record['short'][short_key]} {record['long'][long_key]}",
            file=sys.stderr,
            flush=True,
        )

    chosen = [records[key(f, p)] for f, p in points]
    # A diverged training (NaN) ranks last.
    short = np.nan_to_num([r["short"][short_key]["score"] for r in chosen], nan=0.0)
    long = np.nan_to_num([r["long"][long_key]["score"] for r in chosen], nan=0.0)
    rho = spearmanr(short, long).statistic
    picked = int(np.argmax(short))
    rows.append(
        (
            f"fidelity: {dataset}, short trial ({short_key} epochs) vs refit ({long_key} epochs "
            f"on all), {len(chosen)} configurations",
            f"Spearman {rho:+.2f}",
            f"the short trials' pick scores {long[picked]:.4f} refitted, the best refit "
            f"{max(long):.4f}"
            + "".join(
                f", the {family} recipe {score:.4f}" for (family, _), score in zip(recipes, long)
            )
            + "; a short trial "
            f"{np.median([r['short'][short_key]['seconds'] for r in chosen]) / 60:.1f} min, "
            f"a refit {np.median([r['long'][long_key]['seconds'] for r in chosen]) / 60:.1f} "
            "min (medians)",
        )
    )


def _drawn(spec, count, seed):
    """`count` whole configurations of `spec`'s space, drawn by Optuna's RandomSampler
    (`seed`) as the engine draws them: the family first."""
    import optuna

    from sweeper import space
    from sweeper.engines.optuna_engine import suggest

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line for the study in memory
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    points = []
    for _ in range(count):
        trial = study.ask()
        family = trial.suggest_categorical("family", list(spec.families))
        searched = {
            name: suggest(trial, space.qualified(family, name), p)
            for name, p in spec.families[family].items()
            if not isinstance(p, space.Fixed)
        }
        points.append((family, _with_fixed(spec, family, searched)))
    return points


def _with_fixed(spec, family, point):
    """A point of the family's space with the file's fixed values: one whole configuration."""
    from sweeper import space

    fixed = {k: p.value for k, p in spec.families[family].items() if isinstance(p, space.Fixed)}
    return {**fixed, **point}


# --- 12. a space over the coupled decay (issue 21, 3b) ---------------------------------------

COUPLED_RESULTS = ROOT / "bench" / "results" / "coupled"


def coupled(data_dir, rows, dataset="fashion_mnist", configs=8, seed=0):
    """Do draws from a space over learning_rate and lr_weight_decay (their product, the
    decay per step) train better short trials than draws over learning_rate and
    weight_decay apart? The file's first family alone: CONFIGS points drawn by Optuna's
    RandomSampler (SEED) from its space as written, and the same draws from that space with
    weight_decay's range replaced by lr_weight_decay over the same log-width centred on the
    recipe's product (the same seed draws the same learning rate and the same place in
    either range: pairs). Each trains as the search's trial does (`max_epochs` on
    `data.limit` images, validation accuracy), the recipe once, pairs interleaved. Kept in
    bench/results/coupled/D.json as each ends; a later call trains only what is missing."""
    from sweeper import config, data, devices, metrics, policy, schema, space, train

    spec = config.load(ROOT / "sweeps" / f"{dataset}.yaml")
    family, written = next(iter(spec.families.items()))
    decay = written.get("weight_decay")
    if not isinstance(decay, space.Float) or not decay.log:
        raise SystemExit(f"coupled: {dataset}'s {family} searches no weight_decay on a log range")
    recipe = _with_fixed(spec, family, dict(policy.first_points(spec))[family])
    product = schema.in_terms_of({"lr_weight_decay"}, recipe)["lr_weight_decay"]
    half_width = math.sqrt(decay.high / decay.low)
    product_range = space.Float(
        float(f"{product / half_width:.3g}"), float(f"{product * half_width:.3g}"), log=True
    )
    # in weight_decay's place: the sampler draws the parameters in this order
    coupled_space = dict(
        ("lr_weight_decay", product_range) if name == "weight_decay" else (name, p)
        for name, p in written.items()
    )
    ranges = {
        "apart": f"weight_decay {decay.low:g}-{decay.high:g}",
        "coupled": f"lr_weight_decay {product_range.low:g}-{product_range.high:g}",
    }
    arms = {
        "apart": _drawn(dataclasses.replace(spec, families={family: written}), configs, seed),
        "coupled": _drawn(
            dataclasses.replace(spec, families={family: coupled_space}), configs, seed
        ),
    }
    COUPLED_RESULTS.mkdir(parents=True, exist_ok=True)
    store = COUPLED_RESULTS / f"{dataset}.json"
    records = json.loads(store.read_text()) if store.exists() else {}
    dataset_ = data.load(dataset, data_dir=data_dir, limit=spec.limit, seed=spec.seed)
    precision = devices.precision(spec.precision)
    order = [("recipe", recipe)] + [(arm, arms[arm][i][1]) for i in range(configs) for arm in arms]
    keys: dict[str, list[str]] = {"recipe": [], **{arm: [] for arm in arms}}
    for arm, params in order:
        key = json.dumps([family, schema.resolve(family, params)], sort_keys=True)
        keys[arm].append(key)
        if key not in records:
            result = train.train(
                family,
                params,
                dataset_,
                epochs=spec.max_epochs,
                seed=spec.seed,
                precision=precision,
            )
            records[key] = {
                "arm": arm,
                "params": params,
                "score": result.score("val_accuracy"),
                "seconds": round(result.train_seconds, 1),
            }
            store.write_text(json.dumps(records, indent=1))
        print(f"{arm} {params}: {records[key]['score']:.4f}", file=sys.stderr, flush=True)

    def scores(arm):
        return np.nan_to_num([records[k]["score"] for k in keys[arm]], nan=0.0)

    base = float(scores("recipe")[0])
    noise = metrics.standard_error(base, len(dataset_.y_val))
    for arm in arms:
        got = scores(arm)
        rows.append(
            (
                f"coupled: {dataset} {family}, {arm}, {configs} draws (seed {seed})",
                f"{np.median(got):.4f}",
                f"median validation accuracy; best {got.max():.4f}, worst {got.min():.4f}, "
                f"{int((got >= base - 2 * noise).sum())} within 2 s.e. of the recipe's "
                f"{base:.4f} or above (s.e. {noise:.4f}); {ranges[arm]}",
            )
        )
    difference = scores("coupled") - scores("apart")
    rows.append(
        (
            f"coupled: {dataset} {family}, coupled - apart, paired by draw",
            f"{difference.mean():+.4f}",
            f"mean of {configs} pairs, s.e. {difference.std(ddof=1) / math.sqrt(configs):.4f}",
        )
    )


def write_jpeg_folder(root: Path, images: int, side: int, classes: int = 10) -> Path:
    """A synthetic photo folder: `images` JPEGs of `side` x `side`, one subfolder a class,
    each class a colour gradient with its own noise (written on every core)."""
    from concurrent.futures import ProcessPoolExecutor

    done = root / f".complete-{images}-{side}"
    if not done.exists():
        with ProcessPoolExecutor() as pool:
            list(
                pool.map(_write_jpegs, [(root, c, images // classes, side) for c in range(classes)])
            )
        done.touch()
    return root


def _write_jpegs(job):
    from PIL import Image

    root, label, count, side = job
    folder = root / f"class{label:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(label)
    ramp = np.linspace(0, 1, side)[None, :, None] * (np.arange(3) == label % 3) * 200
    for i in range(count):
        pixels = ramp + rng.integers(0, 56, (side, side, 3)) + label * 5
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=90)


def image_cache_section(data_dir, rows, images=100_000, side=224):
    """Images read from disk while training (the image cache), on a synthetic folder the
    bench writes: decode images/s on every core against one; a sweep's peak resident memory
    on `images` JPEGs; training images/s from the cache against the same images in memory,
    on a smaller folder that fits both ways (small CNN, 32 and 224 px, interleaved, 3 times)."""
    from sweeper import data, image_cache, train

    scratch = Path(os.environ.get("BENCH_SCRATCH", tempfile.gettempdir())) / "sweeper-bench"
    big = write_jpeg_folder(scratch / f"jpeg{images}-{side}", images, side)
    files = sorted(big.glob("*/*.jpg"))
    sample = files[:: max(1, len(files) // 4000)][:4000]
    rates = {}
    for workers in (1, os.cpu_count()):
        with tempfile.TemporaryDirectory(dir=scratch) as cache:
            os.environ[image_cache.CACHE_ENV] = cache
            start = time.perf_counter()
            image_cache.decoded(
                sample, (side, side), lambda f: data._decode(f, (side, side)), workers=workers
            )
            rates[workers] = len(sample) / (time.perf_counter() - start)
    rows.append(
        (
            f"decode {len(sample)} JPEGs {side}px: {os.cpu_count()} cores vs 1",
            f"{rates[os.cpu_count()] / rates[1]:.2f}x",
            f"{rates[os.cpu_count()]:.0f} vs {rates[1]:.0f} images/s",
        )
    )

    with tempfile.TemporaryDirectory(dir=scratch) as work:
        folder = Path(work)
        family = {"cnn": {**FIXED_CNN, "filters": 8, "dense_units": 16, "batch_size": 64}}
        path = sweep_file(
            folder, "big", dataset=f"folder:{big}", epochs=1, limit=2000, families=family
        )
        body = yaml.safe_load(path.read_text())
        body["data"]["image_size"] = [side, side]
        path.write_text(yaml.safe_dump(body, sort_keys=False))
        env = {image_cache.CACHE_ENV: str(folder / "cache")}
        seconds = run_sweeper(folder, path, env=env)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        decoded = folder / "cache"
        size = sum(f.stat().st_size for f in decoded.rglob("*") if f.is_file()) / 2**30
    rows.append(
        (
            f"sweep on {images:,} JPEGs {side}px (decode, 1 trial of 1 epoch on 2,000): peak RSS",
            f"{peak:.2f} GB",
            f"{seconds / 60:.1f} min, cache {size:.1f} GB on disk, target <= 4 GB",
        )
    )

    for small_side, count in ((32, 20_000), (224, 2_000)):
        small = write_jpeg_folder(scratch / f"jpeg{count}-{small_side}", count, small_side)
        os.environ[image_cache.CACHE_ENV] = str(scratch / "cache")
        ds = data.load(f"folder:{small}", image_size=(small_side, small_side))
        in_memory = dataclasses.replace(
            ds,
            x_train=np.asarray(ds.x_train),
            x_val=np.asarray(ds.x_val),
            x_test=np.asarray(ds.x_test),
        )
        params = {**FIXED_CNN, "filters": 16, "dense_units": 32, "batch_size": 128}
        speeds = {"disk": [], "memory": []}
        for _ in range(3):
            for arm, dataset in (("disk", ds), ("memory", in_memory)):
                result = train.train("cnn", params, dataset, epochs=3, seed=0)
                speeds[arm].append(result.images_per_second)
        disk, memory = (float(np.median(speeds[a])) for a in ("disk", "memory"))
        rows.append(
            (
                f"training from the cache vs in memory, {len(ds.y_train):,} images {small_side}px",
                f"{disk / memory:.2f}x",
                f"median of 3: {disk:.0f} vs {memory:.0f} images/s (target >= 0.9x)",
            )
        )


SECTIONS = {
    "overhead": overhead,
    "startup": startup,
    "levers": levers,
    "tta": time_to_accuracy,
    "workers": workers,
    "documented": to_documented,
    "ablation": ablation,
    "minutes": in_minutes,
    "search-gain": search_gain,
    "image-cache": image_cache_section,
    "warm-start": warm_start,
    "fidelity": fidelity,
    "coupled": coupled,
}


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="overhead,startup,levers,tta")
    parser.add_argument(
        "--data-dir", default=os.environ.get("SWEEPER_DATA_DIR", ROOT.parent / "shared" / "data")
    )
    parser.add_argument(
        "--dataset", default="fashion_mnist", help="search-gain's, warm-start's, fidelity's"
    )
    parser.add_argument("--arm", choices=("sweep", "recipe"), default="sweep")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="of the file's budget.minutes (search-gain, warm-start)",
    )
    parser.add_argument(
        "--search-share",
        type=float,
        help="search-gain's and warm-start's, for the file's budget.search_share",
    )
    parser.add_argument(
        "--width", type=int, help="search-gain's recipe arm: the recipe at this width instead"
    )
    parser.add_argument("--images", type=int, default=100_000, help="image-cache's folder")
    parser.add_argument(
        "--configs", type=int, default=8, help="fidelity's configurations, coupled's draws"
    )
    parser.add_argument("--short-limit", type=int, help="fidelity's short trial's images (0: all)")
    parser.add_argument("--short-epochs", type=int, help="fidelity's short trial's epochs")
    parser.add_argument("--long-epochs", type=int, help="fidelity's refit epochs")
    args = parser.parse_args()
    rows = []
    started = time.perf_counter()
    gain = {
        "dataset": args.dataset,
        "arm": args.arm,
        "seed": args.seed,
        "scale": args.scale,
        "search_share": args.search_share,
        "width": args.width,
    }
    for name in args.only.split(","):
        print(f"running {name}...", file=sys.stderr, flush=True)
        options = {
            "search-gain": gain,
            "warm-start": {k: gain[k] for k in ("dataset", "seed", "scale", "search_share")},
            "image-cache": {"images": args.images},
            "coupled": {"dataset": args.dataset, "seed": args.seed, "configs": args.configs},
            "fidelity": {
                "dataset": args.dataset,
                "seed": args.seed,
                "configs": args.configs,
                "short_limit": args.short_limit,
                "short_epochs": args.short_epochs,
                "long_epochs": args.long_epochs,
            },
        }
        SECTIONS[name](Path(args.data_dir).resolve(), rows, **options.get(name, {}))
    machine = f"{socket.gethostname()}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}"
    table = "\n".join(
        [
            "| measure | ratio | figures |",
            "|---|---|---|",
            *(f"| {a} | {b} | {c} |" for a, b, c in rows),
        ]
    )
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    text = (
        f"# Benchmarks {stamp}\n\nMachine: {machine}. Sections: {args.only}. "
        f"Took {(time.perf_counter() - started) / 60:.1f} min.\n\n{table}\n"
    )
    print(text)
    sections = args.only.replace(",", "+")
    name = f"{stamp[:10]}-{socket.gethostname()}-{sections}-{stamp[11:].replace(':', '')}.md"
    out = ROOT / "bench" / "results" / name  # a later run of the same day adds its own file
    out.write_text(text)
    print(f"written to {out.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()

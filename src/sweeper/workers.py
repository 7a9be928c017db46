"""Several trial processes on one machine, started and watched by the `sweep` command.

The supervisor prepares the stores (so workers never race to create them), starts each
worker as `sweeper sweep ... --as-worker N` in its own session with its threads and device,
and watches them: a worker that dies (kill -9, out of memory) has its trial failed and queued
again at once, and is replaced while the sweep has work left; Ctrl-C or SIGTERM stops every
worker and leaves the study resumable. The workers share one deadline. When they are done,
the supervisor names the best trial, runs the refit with every core and ends the parent run.
The engine's own store hands out the trials: no queue or scheduler of sweeper's.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from sweeper import devices, engines, image_cache, policy
from sweeper.config import SweepSpec
from sweeper.errors import SweeperError

if TYPE_CHECKING:
    from sweeper.sweep import SweepRun

log = logging.getLogger(__name__)
STOP_GRACE_SECONDS = 60  # for a worker to end its trial's run after Ctrl-C


def refuse_unshared(spec: SweepSpec, storage: str | None) -> None:
    """Raises where several processes cannot share the study: before anything is loaded."""
    if not engines.registered(spec.engine).shares_store:
        raise SweeperError(
            f"--workers: the {spec.engine} engine keeps its study in one process; Keras "
            "Tuner's own distributed mode needs a chief process serving its oracle over gRPC, "
            "which sweeper does not start. Use --engine optuna for several workers"
        )
    if storage and storage.startswith("sqlite"):
        raise SweeperError(
            "--workers: SQLite is not safe for several processes; leave --storage out (a "
            "journal file under mlruns/) or give postgresql://..."
        )


def supervise(
    spec: SweepSpec,
    requested: int | None,
    *,
    argv: list[str],
    storage: str | None,
    data_dir: str | None,
    tracking_uri: str | None,
) -> str:
    """Runs the sweep in `requested` worker processes (None: `auto`); returns the parent run
    id. Raises when the workers stopped before the sweep's budget, timeout or target."""
    refuse_unshared(spec, storage)
    from sweeper import families  # Keras, and TensorFlow with it: after the refusals
    from sweeper.sweep import ending, finish, prepare

    sweep = prepare(spec, storage=storage, data_dir=data_dir, tracking_uri=tracking_uri)
    deadline = sweep.policy.deadline  # the search's, shared with every worker
    parent = sweep.parent.run_id  # opened now, before any worker looks for it
    with ending(sweep):
        codes = [0]
        if reason := sweep.stop_reason(sweep.engine.trials()):
            log.info("study %s already %s", spec.study, reason)
        else:
            plan = devices.plan(
                requested,
                trials=spec.trials - policy.finished(sweep.engine.trials()),
                data_bytes=image_cache.size_of(sweep.dataset.x_train),
                gpu_ids=devices.gpus(),
                n_cores=devices.cores(),
                memory=devices.available_memory(),
                all_cores_per_trial=families.uses_all_cores(list(spec.families)),
            )
            log.info(
                "%d workers x %d thread(s)%s (%s)",
                plan.workers,
                plan.threads,
                f", GPUs {','.join(plan.gpus)}" if plan.gpus else "",
                plan.why,
            )
            command = worker_command(argv, plan.threads, deadline)
            codes = _watch(sweep, plan, command)
        sweep.update_best(again=True)
        if sweep.stop_reason(sweep.engine.trials()) is None and max(codes) != 0:
            raise SweeperError(
                f"sweep {spec.study} stopped: its workers failed (exit codes {codes})"
            )
        finish(sweep, data_dir)
    return parent


def worker_command(argv: list[str], threads: int, deadline: float | None) -> list[str]:
    """This `sweeper sweep` command line as a worker's: its threads and the shared deadline."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ("--workers", "--threads"):
            skip = "=" not in arg
            continue
        kept.append(arg)
    extra = ["--threads", str(threads)] + (["--deadline", repr(deadline)] if deadline else [])
    return [sys.executable, "-m", "sweeper.cli", *kept, *extra]


def _watch(sweep: SweepRun, plan: devices.Plan, command: list[str]) -> list[int]:
    """Starts the workers and waits for them all; returns their exit codes."""

    def start(index: int) -> subprocess.Popen:
        return subprocess.Popen(
            [*command, "--as-worker", str(index + 1)],
            env={**os.environ, **plan.environment(index), devices.WORKER_VARIABLE: str(index + 1)},
            start_new_session=True,  # Ctrl-C reaches the supervisor, which tells each once
        )

    running = {i: start(i) for i in range(plan.workers)}
    codes, replaced = [], 0
    try:
        while running:
            time.sleep(0.5)
            for index, process in list(running.items()):
                code = process.poll()
                if code is None:
                    continue
                del running[index]
                if code == 0:
                    codes.append(code)
                    continue
                lost = sweep.engine.recover_lost()
                log.warning(
                    "worker %d (pid %d) %s%s",
                    index + 1,
                    process.pid,
                    f"was killed by signal {-code}" if code < 0 else f"exited with code {code}",
                    f"; trial(s) {', '.join(map(str, lost))} failed and queued again"
                    if lost
                    else "",
                )
                if (
                    code < 0
                    and replaced < plan.workers
                    and not sweep.stop_reason(sweep.engine.trials())
                ):
                    replaced += 1  # a crash of its process, not of its trials: start another
                    running[index] = start(index)
                else:
                    codes.append(code)
    except KeyboardInterrupt:
        _stop(running.values())
        sweep.engine.recover_lost()
        raise
    return codes


def _stop(processes) -> None:
    """Ctrl-C to each worker, then a kill for any that does not end in the grace time."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    ends = time.time() + STOP_GRACE_SECONDS
    for process in processes:
        try:
            process.wait(timeout=max(0.1, ends - time.time()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

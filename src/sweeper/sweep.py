"""The sweep driver: load the data once, open the sweep's parent run, hand the engine a
`SweepRun`, and run each trial it proposes as a child run.

Engines see only the contract in `engines.base`; whichever engine ran, the MLflow runs look
the same. The policy (budget, timeout, target, failures in a row, recipes first) is
`policy.Policy`, applied here and asked by the engines.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any

from sweeper import (
    baselines,
    config,
    data,
    devices,
    engines,
    metrics,
    policy,
    runner,
    schema,
    space,
    tracking,
    train,
)
from sweeper.config import SweepSpec
from sweeper.engines.base import (
    COMPLETE,
    PRUNED,
    Engine,
    NotStarted,
    Outcome,
    PastTrial,
    Report,
)
from sweeper.errors import SweeperError, disk_full
from sweeper.tracking import names

log = logging.getLogger(__name__)


class SweepParent:
    """The sweep's parent run, opened once on the writer thread (when first needed: while
    the first trial trains), and every write to it, in order after the trials' writes."""

    def __init__(self, spec: SweepSpec, dataset: data.Dataset, tracking_uri: str | None):
        self.spec, self.dataset, self.tracking_uri = spec, dataset, tracking_uri
        self._opening: Future[tuple[str, tracking.ParentRun]] | None = None

    @property
    def experiment(self) -> str:
        """The dataset's MLflow experiment (waits for the writer to open it)."""
        return self._tracked()[0]

    @property
    def run(self) -> tracking.ParentRun:
        """The sweep's parent run (waits for the writer to open it)."""
        return self._tracked()[1]

    @property
    def asked(self) -> bool:
        """Whether anything asked for the run yet."""
        return self._opening is not None

    def failed(self) -> BaseException | None:
        """Why the experiment or the parent run could not be opened, once that is known."""
        opening = self._opening
        return opening.exception() if opening and opening.done() else None

    def later(self, write: Callable[[], None]) -> None:
        """A write to the parent run, on the writer thread after the trials' writes before
        it. A failure there (a store busy with other workers, say) must not fail a trial
        whose own run is complete: a warning, and the next update writes again."""

        def job() -> None:
            try:
                self._tracked()
            except SweeperError:  # reported once, where the sweep waits for its run
                return
            write()

        tracking.submit(tracking.warn_on_error(job, "could not update the sweep's parent run"))

    def _tracked(self) -> tuple[str, tracking.ParentRun]:
        opening = self._opened()
        if not opening.done() and tracking.on_writer():
            self._open()  # queued behind the job that asks: done now, still in order
        return opening.result()

    def _opened(self) -> Future[tuple[str, tracking.ParentRun]]:
        """Asks the writer to open the experiment and the parent run, once."""
        if self._opening is None:
            self._opening = Future()
            tracking.submit(self._open)
        return self._opening

    def _open(self) -> None:
        opening = self._opening
        if opening is None or opening.done():
            return
        try:
            tracking.configure(self.tracking_uri)
            experiment = tracking.experiment_id(self.dataset.name, self.dataset.identity)
            opening.set_result((experiment, _open_parent(self.spec, self.dataset, experiment)))
        except Exception as error:
            where = self.tracking_uri or "the default store"
            opening.set_exception(
                SweeperError(f"could not open the sweep's run in MLflow ({where}): {error}")
            )


class Recipes:
    """Each family's documented recipe, to run first, and the families whose recipe trial
    ran: a later trial that samples the same values is a trial like any other."""

    def __init__(self, spec: SweepSpec, parent: SweepParent, *, fresh: bool):
        self.points = policy.first_points(spec)
        self.parent = parent
        # A study with no trial yet has run none, and then the store is not asked (it may
        # not be open yet).
        self._run: set[str] | None = set() if fresh else None

    def is_baseline(self, family: str, params: dict) -> bool:
        """Whether this trial is `family`'s recipe trial (then marked as run)."""
        ran = self._ran()
        if family in ran or (family, params) not in self.points:
            return False
        ran.add(family)
        return True

    def _ran(self) -> set[str]:
        if self._run is None:
            self._run = {
                r.data.tags.get(names.FAMILY, "")
                for r in tracking.search_runs(
                    {names.PARENT: self.parent.run.run_id, names.BASELINE: "yes"}
                )
            }
        return self._run


class BestTrial:
    """The best completed trial of the whole study, any worker's, named on the parent."""

    def __init__(self, spec: SweepSpec, engine: Engine, parent: SweepParent):
        self.spec, self.engine, self.parent = spec, engine, parent
        self.number: int | None = None  # the trial the parent names as best

    def update(self, latest: Sequence[PastTrial] = (), *, again: bool = False) -> PastTrial | None:
        """`latest`: trials finished here that the engine has not recorded yet. Logged at
        step = finished trials, so the latest value is the best of the most trials seen;
        `again` writes even when this process named the same trial before (another worker
        may have written since)."""
        trials = {t.number: t for t in [*self.engine.trials(), *latest]}.values()
        best = policy.best(list(trials), self.spec.direction)
        if best is None or (best.number == self.number and not again):
            return best
        seen = policy.finished(list(trials))
        self.parent.later(lambda: self._name(best, seen))
        return best

    def _name(self, best: PastTrial, seen: int) -> None:
        parent = self.parent.run
        run = tracking.trial_of(parent.run_id, best.number)
        if run is None or best.value is None:  # its worker is still writing it; a later
            return  # update names it
        test_accuracy = run.data.metrics.get(names.TEST_ACCURACY, math.nan)
        label = f"{run.info.run_name} ({run.info.run_id})"
        parent.log_best(self.spec.metric, best.value, test_accuracy, seen, label)
        self.number = best.number


class SweepRun:
    """One session of a sweep: what an engine gets (`engines.base.Sweep`). Runs each trial as
    a child run of the parent (`SweepParent`), asking the policy, the recipes and the best
    trial (`BestTrial`), each its own object.

    Every MLflow write goes to the writer thread (`tracking.recorder`), in order: the parent
    run opens there when the first trial starts, while that trial trains."""

    def __init__(
        self,
        spec: SweepSpec,
        dataset: data.Dataset,
        engine: Engine,
        deadline: float | None = None,
        tracking_uri: str | None = None,
        *,
        started: float,  # when `budget.minutes` began (policy.now() seconds)
    ):
        self.spec, self.dataset, self.engine = spec, dataset, engine
        # `budget.minutes`: when the whole sweep, refit included, has to be done
        self.ends_at = started + spec.minutes * 60 if spec.minutes else None
        if deadline is None and spec.search_minutes:
            deadline = started + spec.search_minutes * 60
        self.policy = policy.Policy(spec, deadline)
        self._refit_planned = False
        tracking.disk_full_on_writer()  # an earlier sweep's in this process is not this one's
        self.tracked = SweepParent(spec, dataset, tracking_uri)
        self.recipes = Recipes(spec, self.tracked, fresh=not engine.trials())
        self.first_points = self.recipes.points
        self.best = BestTrial(spec, engine, self.tracked)
        self.started = time.perf_counter()
        self.refit_elsewhere = False  # another worker claimed the refit (and the parent's end)
        self.timing_only = False  # the search is the first recipe's timing trial (`probe`)

    @property
    def experiment(self) -> str:
        return self.tracked.experiment

    @property
    def parent(self) -> tracking.ParentRun:
        return self.tracked.run

    def update_best(
        self, latest: Sequence[PastTrial] = (), *, again: bool = False
    ) -> PastTrial | None:
        """Names the study's best trial on the parent (`BestTrial.update`)."""
        return self.best.update(latest, again=again)

    def end(self, status: str) -> None:
        """Ends the parent run with MLflow's `status`, if it was opened and no other worker
        claimed the refit (that one ends it, after its refit)."""
        if self.refit_elsewhere and status == "FINISHED":
            return
        if self.tracked.asked and self.tracked.failed() is None:
            self.parent.end(status)

    def claim_refit(self, number: int) -> bool:
        """Claims the refit of trial `number` in the study's storage; False (and the parent
        left to the claimant) when another worker has it."""
        claimed = self.engine.claim_refit(number)
        self.refit_elsewhere = not claimed
        return claimed

    def stop_reason(self, trials: Sequence[PastTrial], *, holding: bool = False) -> str | None:
        if (full := tracking.disk_full_on_writer()) and not self.policy.fatal:
            self.policy.record(
                failed=True,
                error=f"the disk is full (writing a trial's artifacts: {full}); free some "
                "space, then run the same command to resume",
                fatal=True,
            )
        return self.policy.stop_reason(trials, holding=holding)

    def seconds_left(self) -> float | None:
        return self.policy.seconds_left()

    def family_to_keep(self, trials: Sequence[PastTrial]) -> str | None:
        if len(self.spec.objectives) > 1:  # a front wants every family's trade-off
            return None
        kept = policy.family_to_keep(
            trials,
            list(self.spec.families),
            self.spec.direction,
            val_images(self.spec, self.dataset),
        )
        if kept is None:
            return None
        log.info("only %s is sampled from here: %s", *kept)
        self.tracked.later(
            lambda: tracking.set_tags(
                self.tracked.run.run_id, {names.FAMILY_KEPT: f"{kept[0]}: {kept[1]}"}
            )
        )
        return kept[0]

    def probe(self) -> None:
        """Before a fresh study's first trial, decides whether it searches at all. No
        search where `budget.search_share` is 0, or where `refit.min_epochs` plans the
        refit in `budget.minutes` and a few timed training steps of the first recipe show
        that one trial and the floor's refit do not both fit (a search cannot earn time it
        does not have): the recipe's trial runs on `TIMING_IMAGES` for `TIMING_EPOCHS`, to
        time the refit, which gets the rest. Resumed without a search, a study with a
        complete trial has none left to run."""
        done = self.engine.trials()
        if not self.spec.searches:
            if any(t.state == COMPLETE for t in done):  # resumed: the rest is the refit's
                self.policy.deadline = policy.now()
            else:
                self._no_search("budget.search_share is 0")
            return
        if done:
            return
        floor = self.spec.refit_min_epochs
        if not (floor and self.spec.refit_from_minutes and self.first_points):
            return
        if len(self.dataset.y_train) <= policy.TIMING_IMAGES:
            return
        assert self.ends_at is not None  # refit_from_minutes: budget.minutes
        family, point = self.first_points[0]
        params = {**_fixed(self.spec.families[family]), **point}
        resolved = schema.resolve(family, params)
        per_image = train.seconds_per_image(
            family,
            params,
            self.dataset.input_shape,
            self.dataset.n_classes,
            precision=self.spec.precision,
            # its own batch: fashion_mnist's ResNet (bf16) took 2.7-3.0 ms an image at 16,
            # 2.2-2.5 at 256, and ~2.1 in a trial's fit (2026-12-02)
            batch=resolved["batch_size"],
        )
        speed = self._refit_speed()
        no_room = policy.no_room_to_search(
            self.ends_at - policy.now(),
            per_image,
            epochs=self.spec.max_epochs,
            floor=floor,
            tta=resolved["tta"],
            **speed,
        )
        if no_room is not None:
            self._no_search(
                f"a {family} trial ({self.spec.max_epochs} epochs on {speed['trial_images']} "
                f"images, ~{no_room[0] / 60:.1f} min) and the refit's {floor} epochs "
                f"(refit.min_epochs, ~{no_room[1] / 60:.1f} min) do not both fit in "
                f"{self.spec.minutes:g} minutes at {per_image * 1000:.1f} ms a training "
                "image here"
            )

    def _no_search(self, why: str) -> None:
        """The search is one trial of the first recipe (or, without one, one sampled
        trial) on a sample, to time the refit; `why` is logged and tagged."""
        trial = f"the {self.first_points[0][0]} recipe" if self.first_points else "one trial"
        images = min(policy.TIMING_IMAGES, len(self.dataset.y_train))
        log.info(
            "no search: %s; %s trains %d epochs on %d images to time the refit, "
            "which gets the rest",
            why,
            trial,
            policy.TIMING_EPOCHS,
            images,
        )
        self.tracked.later(
            lambda: tracking.set_tags(self.tracked.run.run_id, {names.NO_SEARCH: why})
        )
        self.first_points = self.first_points[:1]
        if len(self.dataset.y_train) > images:
            self.dataset = self.dataset.sample(images, self.spec.seed)
        self.timing_only = True

    def run_trial(
        self,
        number: int,
        family: str,
        params: dict,
        *,
        report: Report | None = None,
        epochs: int | None = None,
        on_start: Callable[[str], None] | None = None,
    ) -> Outcome:
        spec = self.spec
        searched = spec.families[family]
        params = {k: searched[k].tidy(v) for k, v in params.items()}  # as a user writes them
        try:
            is_baseline = self.recipes.is_baseline(family, params)
        except SweeperError as error:  # the store cannot be opened: no trial can be logged
            self.policy.record(failed=True, error=str(error), fatal=True)
            raise
        self.mark_front()  # the engine has recorded the trials before this one
        label = f"{family} #{number}"
        epochs = policy.TIMING_EPOCHS if self.timing_only else epochs or spec.max_epochs
        if late := self.policy.too_late_for(family, params):
            log.info("trial %s (%s) not started: the study %s", label, _short(params), late)
            raise NotStarted(late)
        log.info(  # counts finished trials: a failed one does not use the budget
            "trial %s%s: %s (%s)",
            label,
            " (baseline)" if is_baseline else "",
            _short(params),
            "timing the refit, no search"
            if self.timing_only
            else f"{policy.finished(self.engine.trials())} of {spec.trials} finished",
        )
        started = time.perf_counter()
        should_prune = None
        if report:
            should_prune = lambda epoch, logs: report(epoch + 1, logs.get(spec.metric, math.nan))  # noqa: E731
        tags = {
            names.KIND: names.KIND_TRIAL,
            names.TRIAL_NUMBER: number,
            names.ENGINE: spec.engine,
            names.STUDY: spec.study,
            names.BASELINE: "yes" if is_baseline else "no",
        }
        epoch_ends: list[float] = []  # seconds into the trial, building included

        def stop_when(epoch: int, logs: dict) -> str | None:
            epoch_ends.append(time.perf_counter() - started)
            return self._stop_after_epoch(epoch, logs, label, epoch_ends[-1], epochs)

        try:
            result, run = runner.tracked_trial(
                family,
                # early stopping watches the objective, so the epoch it restores is the one
                # the trial's score comes from
                {"early_stopping_monitor": spec.metric, **_fixed(searched), **params},
                self.dataset,
                experiment=lambda: self.experiment,
                run_name=label,
                epochs=epochs,
                seed=spec.seed + number,
                tags=tags,
                parent_run_id=lambda: self.parent.run_id,
                should_prune=should_prune,
                precision=spec.precision,
                stop_when=stop_when,
                on_start=on_start,
                optimizer=spec.save_optimizer,
                background=True,  # its artifacts are written while the next trial trains
            )
        except Exception as error:
            if unopened := self.tracked.failed():
                self.policy.record(failed=True, error=str(unopened), fatal=True)
            elif disk_full(error):
                self.policy.record(
                    failed=True,
                    error=f"the disk is full ({label}: {error}); free some space, then run "
                    "the same command to resume",
                    fatal=True,
                )
            else:
                self.policy.record(failed=True, error=f"{label}: {type(error).__name__}: {error}")
            log.info("  %s failed: %s: %s", label, type(error).__name__, error)
            raise
        finally:
            if self.timing_only:  # its one trial ran: the rest is the refit's
                self.policy.deadline = policy.now()
        self.policy.record(failed=False)
        if not result.pruned and not result.stopped_by:  # a whole trial's time
            self.policy.trial_took(family, time.perf_counter() - started, params)
        value = result.score(spec.metric)  # the saved model's, at its epoch
        epoch_seconds = [b - a for a, b in itertools.pairwise([0.0, *epoch_ends])]
        self._record(number, label, run, value, result, epoch_seconds)
        if spec.constraints and not result.pruned:
            feasible = all(e <= 0 for e in policy.excess(result.costs, spec.constraints))
            self.tracked.later(
                lambda: tracking.set_tags(run.run_id, {names.FEASIBLE: "yes" if feasible else "no"})
            )
        return Outcome(value, result.pruned, result.costs)

    def _record(self, number, label, run, value, result, epoch_seconds):
        state = names.PRUNED if result.pruned else names.COMPLETE
        latest = PastTrial(number, PRUNED if result.pruned else COMPLETE, value)
        best = self.update_best([latest])
        elapsed = time.perf_counter() - self.started
        log.info(
            "  %s %s: %s=%.4f%s test_accuracy=%.4f; best so far %.4f (%.1f min)",
            label,
            state,
            self.spec.metric,
            value,
            self._noise(value),
            result.test[names.TEST_ACCURACY],
            best.value if best and best.value is not None else value,
            elapsed / 60,
        )
        if not result.pruned and not self._refit_planned:
            self._plan_refit(label, epoch_seconds, result.val_seconds)
        if not result.pruned and self.spec.reached(value):
            self.tracked.later(
                lambda: self.parent.log_target_reached(elapsed, number, f"{label} ({run.run_id})")
            )
            log.info(
                "target %s %g reached by %s after %.1f min; stopping the sweep",
                self.spec.metric,
                self.spec.target,
                label,
                elapsed / 60,
            )

    def _stop_after_epoch(
        self, epoch: int, logs: dict, label: str, seconds: float, epochs: int
    ) -> str | None:
        """The policy's reason to stop a trial after `epoch` (from 0), `seconds` into it;
        and, before any trial completed, "timeout" where its `epochs` would leave the
        refit fewer than `refit.min_epochs`: the search ends now, this trial its only one."""
        value = logs.get(self.spec.metric, math.nan)
        classes, val_images = self.dataset.n_classes, len(self.dataset.y_val)
        if why := self.policy.stop_after_epoch(
            value, epoch, classes=classes, val_images=val_images
        ):
            return why
        floor = self.spec.refit_min_epochs
        if self._refit_planned or self.timing_only or not floor or not self.spec.refit_from_minutes:
            return None
        assert self.ends_at is not None  # refit_from_minutes: budget.minutes
        epoch_seconds = seconds / (epoch + 1)  # its first epoch's tracing and building too
        needed = policy.refit_seconds(floor, [epoch_seconds], **self._refit_speed())
        left = epochs - epoch - 1
        if not policy.ends_search_now(
            left, epoch_seconds, self.policy.deadline, self.ends_at, needed
        ):
            return None
        log.info(
            "  the search ends after %s's epoch %d: its %d more (~%.0f s each) would leave "
            "the refit fewer than refit.min_epochs (%d)",
            label,
            epoch + 1,
            left,
            epoch_seconds,
            floor,
        )
        self.policy.deadline = policy.now()
        return "timeout"

    def _refit_speed(self) -> dict[str, Any]:
        """The image counts `policy.refit_plan` scales a trial's measured speed by."""
        return {
            "trial_images": len(self.dataset.y_train),
            "refit_images": self.spec.refit_limit or self.dataset.refit_images,
            "test_images": len(self.dataset.y_test),
            "val_images": len(self.dataset.y_val),
        }

    def _noise(self, value: float) -> str:
        """ " +-SE" of an accuracy on this sweep's validation images; "" for other metrics."""
        if not self.spec.metric.endswith("accuracy"):
            return ""
        return f" +-{metrics.standard_error(value, len(self.dataset.y_val)):.4f}"

    def _plan_refit(self, label: str, epoch_seconds: list[float], val_seconds: list[float]) -> None:
        """States, once, the refit that `budget.minutes` leaves room for, as measured on the
        first complete trial (the refit's own line gives the winner's figures); where that
        is fewer than `refit.min_epochs`, the search ends early enough to leave them."""
        self._refit_planned = True
        if self.ends_at is None or not self.spec.refit_from_minutes:
            return
        search_ends = self.policy.deadline or policy.now()
        speed = {**self._refit_speed(), "val_seconds": val_seconds}
        plan = policy.refit_plan(self.ends_at - search_ends, epoch_seconds, **speed)
        floor = self.spec.refit_min_epochs
        if floor and plan.epochs < floor:
            needed = policy.refit_seconds(floor, epoch_seconds, **speed)
            if shortened := policy.shortened_search(search_ends, self.ends_at, needed):
                log.info(
                    "  the search ends %.1f min early: its share would leave the refit %d "
                    "epochs, fewer than refit.min_epochs (%d)",
                    (search_ends - shortened) / 60,
                    plan.epochs,
                    floor,
                )
                self.policy.deadline = search_ends = shortened
                plan = policy.refit_plan(self.ends_at - search_ends, epoch_seconds, **speed)
        log.info(
            "  plan: after the search, a refit of ~%d epochs (~%.0f s an epoch on %d images, "
            "as %s trained)",
            plan.epochs,
            plan.seconds_per_epoch,
            plan.images,  # all, or the sample that fills the time
            label,
        )

    def mark_front(self) -> None:
        """Tags each trial run of a multi-objective sweep `pareto=yes` or `no` as the
        engine's front now stands (the UI filters on `tags.pareto = 'yes'`)."""
        if len(self.spec.objectives) < 2:
            return
        front = set(self.engine.front())
        self.tracked.later(lambda: tracking.mark_front(self.parent.run_id, front))

    def log_front(self) -> None:
        """The front's figure and table on the parent run, as the study ends."""
        if len(self.spec.objectives) > 1:
            self.mark_front()
            self.tracked.later(lambda: self.parent.log_front(self.spec.objectives))

    def check_failures(self) -> None:
        """Raises when this process stopped because trials kept failing: a sweep that ends so
        did not do its job, whatever the store holds."""
        if failed := self.policy.failed_in_a_row():
            raise SweeperError(f"sweep {self.spec.study} stopped: {failed}")


def prepare(
    spec: SweepSpec,
    *,
    storage: str | None = None,
    data_dir: str | None = None,
    tracking_uri: str | None = None,
    deadline: float | None = None,
    started: float | None = None,
) -> SweepRun:
    """Loads the data and opens (or finds) the engine's study; the parent run is opened on
    the writer thread when first needed (`SweepRun.parent`). `started`: when the sweep's
    `budget.minutes` began (default now, before the data loads)."""
    started = policy.now() if started is None else started
    spec = dataclasses.replace(spec, precision=devices.precision(spec.precision))
    dataset = _load(spec, data_dir, spec.limit)
    if dataset.identity != dataset.name:  # a folder's experiment may need another name
        tracking.configure(tracking_uri)
        dataset = tracking.own_experiment(dataset)
    engine = engines.get(spec.engine)(spec, storage)
    # Libraries and data stay loaded for the whole sweep: the collection each trial starts
    # with (Keras' clear_session) then skips them (0.18 s a trial here, measured). `ending`
    # unfreezes them.
    gc.collect()
    gc.freeze()
    return SweepRun(spec, dataset, engine, deadline, tracking_uri, started=started)


def run_sweep(
    spec: SweepSpec,
    *,
    storage: str | None = None,
    data_dir: str | None = None,
    tracking_uri: str | None = None,
    deadline: float | None = None,
    supervised: bool = False,
    started: float | None = None,
) -> str:
    """Runs the sweep to its budget (or resumes it), then its refit; returns the parent run
    id. `supervised`: one worker of `workers.supervise`, which refits and ends the parent."""
    sweep = prepare(
        spec,
        storage=storage,
        data_dir=data_dir,
        tracking_uri=tracking_uri,
        deadline=deadline,
        started=started,
    )
    with ending(sweep, end=not supervised):
        if reason := sweep.stop_reason(sweep.engine.trials()):
            log.info("study %s already %s", spec.study, reason)
        else:
            if not supervised:  # a supervisor's workers share its deadline
                sweep.probe()
            sweep.engine.search(sweep)
        sweep.update_best(again=True)  # other workers may have written since
        sweep.mark_front()
        sweep.check_failures()
        if not supervised:
            finish(sweep, data_dir)
    return sweep.parent.run_id


@contextlib.contextmanager
def ending(sweep: SweepRun, end: bool = True) -> Iterator[None]:
    """Ends the parent run with the block: FINISHED, KILLED on Ctrl-C, FAILED on an error,
    once the writer thread has written everything before (the last trials' artifacts)."""
    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        again = None
        try:
            tracking.flush()
        except KeyboardInterrupt as error:  # Ctrl-C while the last writes go: end it anyway
            status, again = "KILLED", error
        gc.unfreeze()
        if end:
            sweep.end(status)
        if again is not None:
            raise again


def finish(sweep: SweepRun, data_dir: str | None) -> None:
    """After the search: the refit of the best trial, on all the training data; then only
    the best trials keep their models."""
    spec = sweep.spec
    sweep.log_front()
    tracking.flush()  # the search's runs, which the refit reads
    if spec.refit_epochs or spec.refit_from_minutes:  # no `data.limit`; --limit holds
        refit(
            spec,
            _load(spec, data_dir, spec.refit_limit, sweep.dataset.name),
            sweep.experiment,
            sweep.parent,
            sweep.engine.trials(),
            ends_at=sweep.ends_at,
            trial_images=len(sweep.dataset.y_train),
            claim=sweep.claim_refit,
        )
    keep_best_models(sweep)


def keep_best_models(sweep: SweepRun) -> None:
    """Deletes the models of all but the best `keep_models` complete trials (and each
    family's recipe trial): a sweep's models are most of its disk. Refits keep theirs; the
    dropped trials keep everything else, and `sweeper rerun` trains one again."""
    keep = sweep.spec.keep_models
    if keep is None:
        return
    ranked = policy.ranked(sweep.engine.trials(), sweep.spec.direction)
    kept = {t.number for t in ranked[:keep]}
    why = f"not among the sweep's best {keep} trials (keep_models: {keep})"
    dropped = 0
    try:
        for run in tracking.children(sweep.parent.run_id):
            tags = run.data.tags
            if (
                tags.get(names.KIND) == names.KIND_TRIAL
                and tags.get(names.STATE) == names.COMPLETE
                and tags.get(names.BASELINE) != "yes"
                and int(tags.get(names.TRIAL_NUMBER, -1)) not in kept
                and names.MODEL_DROPPED not in tags
            ):
                tracking.drop_model(run.info.run_id, why)
                dropped += 1
    except (tracking.TrackingError, OSError) as error:  # the sweep's work is done: a warning
        log.warning("could not drop the models of the other trials: %s", error)
    if dropped:
        log.info("models: kept the best %d trials' and the recipes', dropped %d", keep, dropped)


def _load(
    spec: SweepSpec, data_dir: str | None, limit: int | None, name: str | None = None
) -> data.Dataset:
    """The sweep's data; `name`: the experiment's name for it, where the search chose one."""
    dataset = data.load(
        spec.dataset,
        data_dir=data_dir,
        limit=limit,
        val_fraction=spec.val_fraction,
        seed=spec.seed,
        image_size=spec.image_size,
        image_dir=spec.image_dir,
    )
    return dataclasses.replace(dataset, name=name) if name else dataset


def refit(
    spec: SweepSpec,
    dataset: data.Dataset,
    experiment: str,
    parent: tracking.ParentRun,
    trials: Sequence[PastTrial],
    *,
    ends_at: float | None = None,
    trial_images: int | None = None,
    claim: Callable[[int], bool] = lambda number: True,
    why: str | None = None,
) -> tracking.TrialRecorder | None:
    """Retrains the best completed trial (chosen on validation) on all of `dataset`'s
    training and validation data (no `data.limit`) for `spec.refit_epochs`, or with
    `budget.minutes` for the epochs that fit until `ends_at` at the speed the trial
    measured on its `trial_images`, as a child run tagged `refit_of` its trial: the long
    run of a search made of short ones. Its test accuracy is measured once, after the
    choice; a sweep resumed later refits only a new best.
    """
    if not (spec.refit_epochs or spec.refit_from_minutes):
        return None
    best, chosen = policy.refit_choice(
        trials,
        spec.direction,
        recipe_trials(parent.run_id),
        val_images(spec, dataset),
    )
    why = why or chosen
    if best is None:
        return None
    log.info("refit: trial %d, %s", best.number, why)
    trial = tracking.trial_of(parent.run_id, best.number)
    if trial is None:
        return None
    if tracking.search_runs(
        {
            names.KIND: names.KIND_REFIT,
            names.REFIT_OF: trial.info.run_id,
            names.STATE: names.COMPLETE,
        }
    ):
        log.info("refit: %s is refitted already", trial.info.run_name)
        return None
    if not claim(best.number):
        log.info(
            "refit: another worker of study %s claimed the refit of %s; it refits it and "
            "ends the sweep's parent run",
            spec.study,
            trial.info.run_name,
        )
        return None
    family = trial.data.params["family"]
    params = {
        k: schema.from_text(family, k, v)
        for k, v in trial.data.params.items()
        if k in schema.params_of(family)
    }
    params["early_stopping_patience"] = 0  # nothing to watch: validation is trained on
    label = f"{trial.info.run_name} refit"
    merged = dataset.merged()
    epochs = spec.refit_epochs
    epochs_that_fit, most_epochs = None, 0
    if epochs is None:
        assert ends_at is not None and trial_images  # refit_from_minutes
        seconds_left = ends_at - policy.now()
        measured = [v for _, v in tracking.metric_history(trial.info.run_id, names.EPOCH_SECONDS)]
        validating = [v for _, v in tracking.metric_history(trial.info.run_id, names.VAL_SECONDS)]
        plan = policy.refit_plan(
            seconds_left,
            measured,
            trial_images=trial_images,
            refit_images=len(merged.y_train),
            test_images=len(merged.y_test),
            tta=schema.resolve(family, params)["tta"],
            val_images=len(dataset.y_val),  # the trial's, held out as the refit's was
            val_seconds=validating,
        )
        log.info(
            "refit: %.1f min left of %g; %s measured %.0f s an epoch on %d images, so %d "
            "epochs on %d of %d (%.1f min planned)",
            seconds_left / 60,
            spec.minutes,
            trial.info.run_name,
            plan.seconds_per_epoch * trial_images / max(1, plan.images),
            trial_images,
            plan.epochs,
            plan.images,
            len(merged.y_train),
            plan.seconds / 60,
        )
        if not plan.epochs:
            log.info(
                "refit: no time left for an epoch on more images than the trial's; the "
                "search's winner stays the result"
            )
            return None
        if plan.images < len(merged.y_train):
            merged = merged.sample(plan.images, spec.seed)
        epochs = plan.epochs
        most_epochs = math.ceil(epochs * policy.REFIT_MOST_EPOCHS)

        def epochs_that_fit(seconds: list[float], end: float = ends_at) -> int:
            """The refit's own speed re-plans it: a trial's cannot foresee its epochs."""
            return policy.refit_epochs_in_time(end - policy.now(), seconds, plan.closing_seconds)

    log.info(
        "refit: %s (%s %.4f) on training + validation data, %d epochs",
        label,
        spec.metric,
        best.value,
        epochs,
    )
    tags = {
        names.KIND: names.KIND_REFIT,
        names.REFIT_OF: trial.info.run_id,
        names.REFIT_CHOICE: why,
        names.TRIAL_NUMBER: best.number,
        names.ENGINE: spec.engine,
        names.STUDY: spec.study,
    }
    result, run = runner.tracked_trial(
        family,
        params,
        merged,
        experiment=experiment,
        run_name=label,
        epochs=epochs,
        seed=spec.seed + best.number,
        tags=tags,
        parent_run_id=parent.run_id,
        precision=spec.precision,
        epochs_that_fit=epochs_that_fit,
        most_epochs=most_epochs,
        optimizer=spec.save_optimizer,
    )
    if result.replanned:
        log.info(
            "refit: re-planned at its own speed: %d epochs where %d were planned, its "
            "schedule re-timed to end with them",
            result.replanned,
            epochs,
        )
    parent.log_refit(result.test, f"{label} ({run.run_id})", why)
    log.info(
        "  %s complete: test_accuracy=%.4f%s",
        label,
        result.test[names.TEST_ACCURACY],
        f" (flip TTA {result.test[names.TEST_ACCURACY_TTA]:.4f})"
        if names.TEST_ACCURACY_TTA in result.test
        else "",
    )
    return run


def refit_trial(
    run_id: str, *, epochs: int | None = None, data_dir: str | None = None
) -> tracking.TrialRecorder | None:
    """Refits trial `run_id` (any of its sweep's complete trials, not only the best) as
    `refit` does, from the sweep file its parent run logged: `epochs`, else the file's
    `refit.epochs`."""
    trial = tracking.get_run(run_id)
    tags = trial.data.tags if trial else {}
    if trial is None or tags.get(names.KIND) != names.KIND_TRIAL or names.PARENT not in tags:
        raise SweeperError(f"run {run_id} is no trial of a sweep")
    if tags.get(names.STATE) != names.COMPLETE:
        raise SweeperError(f"trial {trial.info.run_name} is {tags.get(names.STATE)}, not complete")
    parent = tracking.ParentRun(tags[names.PARENT])
    spec = config.from_text(parent.sweep_file(), f"the sweep file of run {parent.run_id}")
    spec = dataclasses.replace(spec, refit_epochs=epochs or spec.refit_epochs, minutes=None)
    if not spec.refit_epochs:
        raise SweeperError(
            "the sweep planned its refit in minutes: give the refit's epochs (--epochs N)"
        )
    spec = dataclasses.replace(spec, precision=devices.precision(spec.precision))
    number = int(tags[names.TRIAL_NUMBER])
    logged = names.BEST_VAL_ACCURACY if spec.metric == "val_accuracy" else spec.metric
    value = trial.data.metrics.get(logged, math.nan)
    run = refit(
        spec,
        _load(spec, data_dir, None, tags[names.DATASET]),
        trial.info.experiment_id,
        parent,
        [PastTrial(number, COMPLETE, value)],
        why=f"asked for ({trial.info.run_name})",
    )
    tracking.flush()
    return run


def val_images(spec: SweepSpec, dataset: data.Dataset) -> int | None:
    """The validation images behind the objective's noise; None: no accuracy, not known."""
    return len(dataset.y_val) if spec.metric.endswith("accuracy") else None


def recipe_trials(parent_run_id: str) -> set[int]:
    """The numbers of a sweep's recipe (baseline) trials."""
    runs = tracking.search_runs({names.PARENT: parent_run_id, names.BASELINE: "yes"})
    return {int(r.data.tags[names.TRIAL_NUMBER]) for r in runs if names.TRIAL_NUMBER in r.data.tags}


def _open_parent(spec: SweepSpec, dataset: data.Dataset, experiment: str) -> tracking.ParentRun:
    tags = {names.ENGINE: spec.engine, names.DATASET: dataset.name}
    # The baselines of this dataset only: a recipe of another dataset may be a family's first
    # trial here, but it is no baseline of this one.
    recipes = [baselines.for_family(family, spec.dataset) for family in spec.families]
    if own := [r.name for r in recipes if r and r.dataset == spec.dataset]:
        tags[names.BASELINE] = ", ".join(dict.fromkeys(own))
    params = {
        "dataset": spec.dataset,
        "engine": spec.engine,
        "sampler": spec.sampler,
        "pruner": spec.pruner,
        "objective": f"{spec.direction} {spec.metric}",
        "trials": spec.trials,
        "timeout_minutes": spec.search_minutes,
        "minutes": spec.minutes,
        "max_epochs": spec.max_epochs,
        "seed": spec.seed,
        "study": spec.study,
        "families": ",".join(spec.families),
        "precision": spec.precision,
        "target": spec.target,
        "baseline_first": spec.baseline_first,
        "skipped_images": dataset.skipped_images,
    }
    documented = [
        b.documented_accuracy
        for b in baselines.BASELINES.values()
        if b.dataset == spec.dataset and b.documented_accuracy
    ]
    metrics = {names.BASELINE_DOCUMENTED_ACCURACY: max(documented)} if documented else {}
    return tracking.ParentRun.open(
        experiment,
        spec.study,
        tags=tags,
        params=params,
        sweep_file=spec.text,
        metrics=metrics,
        dataset=dataset,
    )


def _fixed(params: dict) -> dict:
    return {k: p.value for k, p in params.items() if isinstance(p, space.Fixed)}


def _short(params: dict) -> str:
    return " ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )

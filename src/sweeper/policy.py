"""The sweep's policy, written once for every engine: the budget of finished trials, the
timeout, the target, a cap on failures in a row, and each family's recipe first."""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sweeper import baselines, metrics, schema, space
from sweeper.config import SweepSpec
from sweeper.engines.base import COMPLETE, FINISHED, PRUNED, RUNNING, PastTrial

MAX_FAILURES_IN_A_ROW = 3
# What a refit costs besides its epochs: loading all the data, building, saving and writing
# its run (measured: 5-15 s on CIFAR-10 here), with room to spare.
REFIT_MARGIN_SECONDS = 20.0
PREDICTION_SHARE = 1 / 3  # an image predicted costs about a third of one trained on
# Test-time views a refit predicts, by `tta`.
TTA_VIEWS = {"none": 1, "flip": 2, "flip+translate": 6}
# The part of an epoch's time left over that a refit spends on one epoch more, on a sample:
# on CIFAR-10, 2 epochs on 30,000 images beat 1 on all 50,000 by 1.1 points (74.43% and
# 73.36%, the ResNet recipe, 2026-12-02).
EXTRA_EPOCH_FRACTION = 0.2
# A refit that re-plans from its own speed (`refit_epochs_in_time`) trains at most this
# many times its planned epochs (a bound fit needs): a 2-epoch timing trial on 2,000 images
# planned 8 refit epochs at 240 s that ran at ~81 s (fashion_mnist, bf16 AMX, 2026-12-03).
REFIT_MOST_EPOCHS = 4
# Where a probe shows that no trial fits beside the refit's floor, the search is the first
# recipe timed on this many training images for this many epochs (the second, past the
# graph's tracing, times the refit), as the bench's "recipe alone" arm is.
TIMING_IMAGES, TIMING_EPOCHS = 2000, 2
log = logging.getLogger(__name__)


def shape(family: str, params: dict) -> tuple:
    """What sets a trial's time: its family and every searched value but the floats
    (widths, depths, batch sizes change it; learning rates and dropout hardly)."""
    return family, tuple(sorted((k, v) for k, v in params.items() if not isinstance(v, float)))


def now() -> float:
    """The wall clock of deadlines (time.time() seconds); tests replace it."""
    return time.time()


class Policy:
    def __init__(self, spec: SweepSpec, deadline: float | None = None):
        """`deadline` (time.time() seconds), when a supervisor set one for all its workers;
        else the sweep's timeout from now."""
        self.spec = spec
        if deadline is None and spec.search_minutes:
            deadline = now() + spec.search_minutes * 60
        self.deadline = deadline
        self.failures_in_a_row = 0
        self.last_error = ""
        self.fatal = ""  # a failure that every next trial would meet too (a full disk)
        self.took: dict[tuple, list[float]] = {}  # complete trials' seconds, by `shape`
        self.late = ""  # why a sampled trial was not started: the search is over

    def record(self, failed: bool, error: str = "", *, fatal: bool = False) -> None:
        """Counts this process's failures in a row; several mean something is wrong with
        every trial, not with one. A `fatal` one stops the sweep at once."""
        self.failures_in_a_row = self.failures_in_a_row + 1 if failed else 0
        self.last_error = error if failed else ""
        self.fatal = error if fatal else ""
        if self.failures_in_a_row == MAX_FAILURES_IN_A_ROW:
            log.info("stopping: %d trials failed in a row", self.failures_in_a_row)

    def trial_took(self, family: str, seconds: float, params: dict) -> None:
        """A complete trial's wall time, so no trial starts that cannot finish in time."""
        self.took.setdefault(shape(family, params), []).append(seconds)

    def too_late_for(self, family: str, params: dict) -> str | None:
        """Why a sampled trial should not start: a trial of the same shape (`shape`) took
        longer than the time left. The family's median may be far shorter than a large
        model's trial. None when it fits, or when no such trial finished yet."""
        left = self.seconds_left()
        key = shape(family, params)
        took = statistics.median(self.took[key]) if key in self.took else None
        if left is None or took is None or left >= took:
            return None
        sizes = " ".join(f"{k}={v}" for k, v in key[1])
        self.late = (
            f"has {left / 60:.1f} of its {self.spec.search_minutes:g} minutes left, less "
            f"than a {family} trial of {sizes or 'this shape'} took (~{took / 60:.1f} min)"
        )
        return self.late

    def too_late_for_a_trial(self) -> str | None:
        """Why no trial could finish before the deadline: the time left is less than any
        family's median trial (once every family has one); None otherwise."""
        left = self.seconds_left()
        by_family: dict[str, list[float]] = {}
        for (family, _), seconds in self.took.items():
            by_family.setdefault(family, []).extend(seconds)
        if left is None or not by_family or set(by_family) < set(self.spec.families):
            return None
        shortest = min(statistics.median(seconds) for seconds in by_family.values())
        if left >= shortest:
            return None
        return (
            f"has {left / 60:.1f} of its {self.spec.search_minutes:g} minutes left, less "
            f"than a trial takes (~{shortest / 60:.1f} min)"
        )

    def failed_in_a_row(self) -> str | None:
        """Why this process gave up on failures, with the last error; None when it did not."""
        if self.fatal:
            return self.fatal
        if self.failures_in_a_row < MAX_FAILURES_IN_A_ROW:
            return None
        return f"{self.failures_in_a_row} trials failed in a row; the last: {self.last_error}"

    def out_of_time(self) -> bool:
        return self.deadline is not None and now() > self.deadline

    def seconds_left(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - now())

    def target_met(self, trials: Sequence[PastTrial]) -> bool:
        """Whether a completed trial, any worker's, met the target."""
        return any(
            t.state == COMPLETE and t.value is not None and self.spec.reached(t.value)
            for t in trials
        )

    def stop_reason(self, trials: Sequence[PastTrial], *, holding: bool = False) -> str | None:
        """Why the sweep should start no more trials, as "the study ..." would go on; None
        when it should. With `holding`, running trials (other workers') use budget too."""
        if self.fatal:
            return "met a failure every trial would meet"
        if self.failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
            return f"had {self.failures_in_a_row} trials fail in a row"
        if self.target_met(trials):
            return f"met its target {self.spec.metric} {self.spec.target:g}"
        counted = (*FINISHED, RUNNING) if holding else FINISHED
        if sum(t.state in counted for t in trials) >= self.spec.trials:
            return f"has {self.spec.trials} finished trials; raise --trials to run more"
        if self.out_of_time():
            return f"used its {self.spec.search_minutes:g} minutes"
        return self.late or self.too_late_for_a_trial()

    def stop_after_epoch(
        self, value: float, epoch: int = 0, *, classes: int = 0, val_images: int = 0
    ) -> str | None:
        """Why a trial should stop after `epoch` (from 0) whose objective is `value`:
        "timeout" (the deadline passed) or "target" (met), and it completes; AT_CHANCE (a
        validation accuracy no better than guessing among `classes`, after the first
        epoch), and it is pruned. None to go on."""
        if self.out_of_time():
            return "timeout"
        if self.spec.reached(value):
            return "target"
        if epoch == 0 and self.spec.metric == "val_accuracy":
            return at_chance(value, classes, val_images)
        return None


# Why a trial at chance stops; fewer validation images than this cannot tell chance apart.
AT_CHANCE = "at chance"
CHANCE_MIN_IMAGES = 500


def at_chance(accuracy: float, classes: int, val_images: int) -> str | None:
    """AT_CHANCE when `accuracy` on `val_images` is within two standard errors of guessing
    one of `classes` (a trial that learned nothing in its first epoch: a learning rate too
    high or too low, dead units); None otherwise or when too few images to tell."""
    if classes < 2 or val_images < CHANCE_MIN_IMAGES:
        return None
    guess = 1 / classes
    return AT_CHANCE if accuracy <= guess + 2 * metrics.standard_error(guess, val_images) else None


def excess(costs: dict[str, float], bounds: dict[str, float]) -> list[float]:
    """How far each of a trial's `costs` goes beyond its bound (<= 0: kept); a cost it did
    not record (pruned early) breaks its bound."""
    return [costs.get(m, math.inf) - b for m, b in bounds.items()]


def first_points(spec: SweepSpec) -> list[tuple[str, dict]]:
    """Each family's documented recipe as a point of its space, where the space holds it
    (none when the sweep file says `baseline_first: false`)."""
    if not spec.baseline_first:
        return []
    points = []
    for family, params in spec.families.items():
        recipe = baselines.for_family(family, spec.dataset)
        if recipe is None:
            continue
        point = space.baseline_point(
            params, schema.in_terms_of(params, recipe.params), schema.defaults(family)
        )
        if point is not None:
            points.append((family, point))
    return points


def finished(trials: Sequence[PastTrial]) -> int:
    return sum(t.state in FINISHED for t in trials)


def best(trials: Sequence[PastTrial], direction: str) -> PastTrial | None:
    """The completed trial with the best value (the lowest number among equals)."""
    return next(iter(ranked(trials, direction)), None)


def ranked(trials: Sequence[PastTrial], direction: str) -> list[PastTrial]:
    """The completed trials within the constraints, best first (the lowest number first
    among equals)."""
    sign = 1 if direction == "maximize" else -1
    done = [t for t in trials if t.state == COMPLETE and t.value is not None and t.feasible]
    return sorted(done, key=lambda t: (-sign * (t.value or 0.0), t.number))


def refit_choice(
    trials: Sequence[PastTrial], direction: str, recipes: set[int], val_images: int | None
) -> tuple[PastTrial | None, str]:
    """The trial to refit, and why: the best one, unless the best recipe trial (`recipes`:
    trial numbers) is within two standard errors of it (binomial, at the recipe's accuracy
    on `val_images`; None: the objective is no accuracy, its noise unknown). A search's
    winner must beat the recipe beyond its validation noise, or the choice is the noise's."""
    best_trial = best(trials, direction)
    recipe = best([t for t in trials if t.number in recipes], direction)
    if best_trial is None or recipe is None or recipe.number == best_trial.number:
        return best_trial, "the best trial"
    if not val_images:
        return best_trial, "the best trial (the objective's noise is not known)"
    noise = metrics.standard_error(recipe.value or 0.0, val_images)
    gain = abs((best_trial.value or 0.0) - (recipe.value or 0.0))
    if gain > 2 * noise:
        return best_trial, f"it beat the recipe by {gain:.4f}, beyond noise (2 x {noise:.4f})"
    return recipe, (
        f"no trial beat the recipe beyond noise (+-{2 * noise:.4f}; the best by {gain:.4f}): "
        "refitting the recipe"
    )


def family_to_keep(
    trials: Sequence[PastTrial], families: Sequence[str], direction: str, val_images: int | None
) -> tuple[str, str] | None:
    """The one family left worth sampling, and why: once every family has a finished trial
    (its recipe comes first) and each other family's best is behind the leader's best by
    more than two standard errors (binomial, at the leader's accuracy on `val_images`). A
    family's best is its best complete trial's value; with none complete (every trial of it
    pruned, at chance say), the best value its pruned trials reached. None while any could
    still win, with one family, or where the noise is not known."""
    if len(families) < 2 or not val_images:
        return None
    sign = 1 if direction == "maximize" else -1
    shown: dict[str, tuple[float, bool]] = {}  # family -> (best value, from a complete trial)
    for family in families:
        own = [t for t in trials if t.family == family]
        complete = best(own, direction)
        pruned = [t.value for t in own if t.state == PRUNED and t.value is not None]
        if complete is not None:
            shown[family] = (complete.value or 0.0, True)
        elif pruned:
            shown[family] = (max(pruned, key=lambda v: sign * v), False)
        else:
            return None  # not tried yet
    leader = max(shown, key=lambda f: (shown[f][1], sign * shown[f][0]))
    value, leader_complete = shown[leader]
    if not leader_complete:
        return None
    noise = metrics.standard_error(value, val_images)
    behind = {f: v for f, (v, _) in shown.items() if f != leader}
    if any(sign * (value - v) <= 2 * noise for v in behind.values()):
        return None
    others = ", ".join(f"{f}'s {v:.4f}" for f, v in behind.items())
    return leader, f"{others} behind {leader}'s {value:.4f} beyond noise (2 x {noise:.4f})"


@dataclass(frozen=True)
class RefitPlan:
    epochs: int
    seconds_per_epoch: float  # on `images`
    seconds: float  # the whole refit, as planned
    images: int  # of the refit's images: all, or the share one epoch has time for
    closing_seconds: float = 0.0  # after its last epoch: test predictions, saving, logging


def refit_plan(
    seconds_left: float,
    epoch_seconds: Sequence[float],
    *,
    trial_images: int,
    refit_images: int,
    test_images: int,
    tta: str = "none",
    val_images: int = 0,
    val_seconds: Sequence[float] = (),
) -> RefitPlan:
    """The most epochs whose complete schedule fits `seconds_left`, from a trial's measured
    `epoch_seconds` on `trial_images`: its later epochs give the time an image (its first
    also traced the graphs: that extra is paid once), less the trial's `val_images`
    predictions (their measured `val_seconds` of each epoch; without them, a third of a
    training step each), scaled to `refit_images`, which have no validation; the test
    predictions (once per TTA view, at the validation's speed) and
    a margin for loading, saving and logging come off first. Where the time left over
    would be `EXTRA_EPOCH_FRACTION` of an epoch or more (or no epoch of all the images
    fits), one epoch more on a seeded sample that fills the time (a complete schedule), if
    that sample is more than the trial trained on; else no refit."""
    per_image, tracing, closing = _refit_costs(
        epoch_seconds, trial_images, test_images, tta, val_images, val_seconds
    )
    fixed = tracing + closing
    per_epoch = per_image * refit_images
    # epochs of all the images that fit (the epsilon: `refit_seconds` of N epochs plans N)
    fit = max(0.0, seconds_left - fixed) / per_epoch + 1e-9
    epochs = int(fit)
    if fit - epochs >= EXTRA_EPOCH_FRACTION or not epochs:
        images = int(fit / (epochs + 1) * refit_images)
        if images > trial_images:
            seconds = fixed + (epochs + 1) * per_image * images
            return RefitPlan(epochs + 1, per_image * images, seconds, images, closing)
    if epochs:
        return RefitPlan(epochs, per_epoch, fixed + epochs * per_epoch, refit_images, closing)
    return RefitPlan(0, per_epoch, 0.0, refit_images)  # `seconds_per_epoch`: all, for the log


def refit_seconds(
    epochs: int,
    epoch_seconds: Sequence[float],
    *,
    trial_images: int,
    refit_images: int,
    test_images: int,
    tta: str = "none",
    val_images: int = 0,
    val_seconds: Sequence[float] = (),
) -> float:
    """The time `refit_plan` counts for a refit of `epochs` epochs on `refit_images`."""
    per_image, tracing, closing = _refit_costs(
        epoch_seconds, trial_images, test_images, tta, val_images, val_seconds
    )
    return tracing + closing + epochs * per_image * refit_images


def refit_epochs_in_time(
    seconds_left: float, epoch_seconds: Sequence[float], closing_seconds: float
) -> int:
    """The epochs in all that a running refit has time for, having run `epoch_seconds`,
    with `seconds_left` and its `closing_seconds` (`RefitPlan`) still to pay after its last:
    the epochs done and the whole epochs that fit at their mean since the first (which also
    traced the graphs). The mean, not the last: refit epochs here ran at one of two speeds
    in no order (84-97 s or 140-143 s, fashion_mnist, bf16 AMX, 2026-12-02), so a plan from
    a short trial cannot foresee them (one ran 38 of its 30 minutes, another 26.6) and the
    refit re-plans from its own."""
    later = epoch_seconds[1:] or epoch_seconds
    per_epoch = statistics.mean(later)
    more = max(0.0, seconds_left - closing_seconds) / max(per_epoch, 1e-9)
    return len(epoch_seconds) + int(more)


def trial_epoch_seconds(per_image: float, trial_images: int, val_images: int) -> float:
    """A trial epoch's seconds at `per_image` seconds a trained image: its training images,
    and its validation predictions at `PREDICTION_SHARE` of one each."""
    return per_image * (trial_images + PREDICTION_SHARE * val_images)


def no_room_to_search(
    seconds_left: float,
    per_image: float,
    *,
    epochs: int,
    floor: int,
    trial_images: int,
    refit_images: int,
    test_images: int,
    tta: str = "none",
    val_images: int = 0,
) -> tuple[float, float] | None:
    """(a trial's seconds, the refit's) where a trial of `epochs` epochs and a refit of
    `floor` epochs do not both fit in `seconds_left`, at `per_image` seconds a trained image
    (a probe's, before any trial); None where they do."""
    epoch = trial_epoch_seconds(per_image, trial_images, val_images)
    refit = refit_seconds(
        floor,
        [epoch],
        trial_images=trial_images,
        refit_images=refit_images,
        test_images=test_images,
        tta=tta,
        val_images=val_images,
    )
    return None if epochs * epoch + refit <= seconds_left else (epochs * epoch, refit)


def shortened_search(planned_end: float, ends_at: float, refit_seconds: float) -> float | None:
    """When a search planned to end at `planned_end` must end instead, for a refit of
    `refit_seconds` to finish by `ends_at`: not before now; None when it need not end
    earlier (or is over already)."""
    end = max(now(), ends_at - refit_seconds)
    return end if end < planned_end else None


def ends_search_now(
    epochs_left: int,
    epoch_seconds: float,
    deadline: float | None,
    ends_at: float,
    refit_seconds: float,
) -> bool:
    """Whether a trial with `epochs_left` more epochs of `epoch_seconds` should end the
    search now: where it would go on (to its end, or to the first epoch's end past the
    search's `deadline`) too long for a refit of `refit_seconds` to finish by `ends_at`."""
    t = now()
    if deadline is not None:  # the deadline stops it at the end of the epoch that passes it
        epochs_left = min(epochs_left, max(0, math.ceil((deadline - t) / epoch_seconds)))
    return epochs_left > 0 and t + epochs_left * epoch_seconds + refit_seconds > ends_at


def _refit_costs(epoch_seconds, trial_images, test_images, tta, val_images, val_seconds):
    """(seconds a trained image, the first epoch's extra for tracing, the seconds after the
    last epoch), from a trial's `epoch_seconds` and `val_seconds` (`refit_plan` says how)."""
    first = epoch_seconds[0]
    later = statistics.median(epoch_seconds[1:]) if len(epoch_seconds) > 1 else first
    measured = val_images and len(val_seconds) == len(epoch_seconds)
    if measured:
        # a trial of 2,000 images validated on 7,500 spends much of its epoch predicting,
        # and the split is the machine's: 4.8 s epochs planned refit epochs at 63 s with a
        # guessed third, which took 84-141 s (fashion_mnist, bf16 AMX, 2026-12-02; its
        # 7,500 predictions took 2.1 s in a rerun)
        training = [e - v for e, v in zip(epoch_seconds, val_seconds, strict=True)]
        trained = statistics.median(training[1:]) if len(training) > 1 else training[0]
        predicting = statistics.median(val_seconds[1:]) if len(val_seconds) > 1 else val_seconds[0]
        per_image = max(trained, 1e-3 * later) / trial_images
        per_prediction = predicting / val_images
    else:
        per_image = later / (trial_images + PREDICTION_SHARE * val_images)
        per_prediction = per_image * PREDICTION_SHARE
    closing = per_prediction * test_images * TTA_VIEWS[tta] + REFIT_MARGIN_SECONDS
    return per_image, max(0.0, first - later), closing

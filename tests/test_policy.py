"""The sweep policy, on its own: budget, target, failures in a row, the best trial."""

import pytest

from sweeper import policy, space
from sweeper.config import SweepSpec
from sweeper.engines.base import COMPLETE, FAILED, PRUNED, RUNNING, PastTrial


def spec(**changes):
    return SweepSpec(
        **{"path": "x.yaml", "dataset": "mnist", "families": {"mlp": {"units": space.Fixed(8)}}}
        | changes
    )


def test_best_is_the_best_completed_trial_and_the_first_among_equals():
    trials = [
        PastTrial(0, COMPLETE, 0.5),
        PastTrial(1, PRUNED, 0.9),  # pruned: never the best
        PastTrial(2, COMPLETE, 0.7),
        PastTrial(3, COMPLETE, 0.7),
        PastTrial(4, RUNNING),
        PastTrial(5, FAILED),
    ]
    assert policy.best(trials, "maximize").number == 2
    assert policy.best(trials, "minimize").number == 0
    assert policy.best(trials[4:], "maximize") is None


def test_running_trials_hold_budget_only_when_asked():
    rules = policy.Policy(spec(trials=2))
    trials = [PastTrial(0, COMPLETE, 0.5), PastTrial(1, RUNNING)]
    assert rules.stop_reason(trials) is None
    assert "2 finished trials" in rules.stop_reason(trials, holding=True)


def test_a_target_met_by_any_trial_stops_and_failures_in_a_row_stop():
    rules = policy.Policy(spec(target=0.6))
    assert "target" in rules.stop_reason([PastTrial(0, COMPLETE, 0.61)])
    for _ in range(policy.MAX_FAILURES_IN_A_ROW - 1):
        rules.record(failed=True)
    assert rules.stop_reason([]) is None
    rules.record(failed=True)
    assert "fail in a row" in rules.stop_reason([])


def test_minutes_give_the_search_its_share_on_the_clock(monkeypatch):
    monkeypatch.setattr(policy, "now", lambda: 1000.0)
    rules = policy.Policy(spec(minutes=10, search_share=0.3))
    assert rules.deadline == 1000.0 + 180
    assert rules.seconds_left() == 180
    monkeypatch.setattr(policy, "now", lambda: 1181.0)
    assert rules.out_of_time()
    assert rules.stop_reason([]) == "used its 3 minutes"
    fixed = policy.Policy(spec(minutes=10, timeout_minutes=1))  # --timeout wins
    assert fixed.deadline == 1181.0 + 60


def plan_of(**changes):
    """600 s left; 1,000 trial images: 30 s for the first epoch (tracing), 10 s for each
    later one; 5,000 images to refit on, 1,000 to test."""
    return policy.refit_plan(
        600,
        [30.0, 10.0, 10.0],
        **{"trial_images": 1000, "refit_images": 5000, "test_images": 1000, **changes},
    )


def test_refit_plan_fits_whole_epochs_from_the_measured_speed():
    plan = plan_of()
    assert plan.seconds_per_epoch == 50  # 0.01 s an image, 5,000 images
    fixed = 20 + 0.01 / 3 * 1000 + policy.REFIT_MARGIN_SECONDS  # tracing, test, margin
    assert plan.epochs == int((600 - fixed) // 50) == 11
    assert plan.seconds == pytest.approx(fixed + 11 * 50) and plan.seconds <= 600
    assert plan.images == 5000  # 0.13 of an epoch left over: not worth one more
    # six TTA views cost more test predictions: 10.8 epochs of all fit, so 11 on a sample
    with_tta = plan_of(tta="flip+translate")
    fixed_tta = 20 + 0.01 / 3 * 1000 * 6 + policy.REFIT_MARGIN_SECONDS
    assert with_tta.epochs == 11 and with_tta.images == int((600 - fixed_tta) / 50 / 11 * 5000)
    assert with_tta.seconds == pytest.approx(fixed_tta + 11 * 0.01 * with_tta.images, abs=0.2)
    assert with_tta.seconds <= 600
    # the trial's epochs also predicted 3,000 validation images, as 1,000 trained ones cost
    validated = plan_of(val_images=3000)
    assert validated.seconds_per_epoch / validated.images == pytest.approx(0.005)  # an image
    assert validated.epochs == 23  # 22.33 of all fit
    # 1.5 epochs of 1,200 images fit: 2 on 900 would train on fewer than the trial's 1,000,
    # so 1 epoch of all
    margin = policy.REFIT_MARGIN_SECONDS
    small = policy.refit_plan(
        margin + 18, [10.0], trial_images=1000, refit_images=1200, test_images=0
    )
    assert (small.epochs, small.images) == (1, 1200)
    too_short = policy.refit_plan(40, [30.0], trial_images=1000, refit_images=5000, test_images=10)
    assert too_short.epochs == 0  # 0.03 s an image: ~660 images fit, fewer than the trial's


def test_refit_plan_reads_the_measured_validation_seconds_not_a_guess():
    # 2,000 images trained and 7,500 predicted in 4.8 s, 0.7 of them predicting (a split
    # for the example): a third of a training step guessed for each prediction halves the
    # time an image
    measured = {"trial_images": 2000, "refit_images": 60000, "test_images": 10000}
    epochs, validating = [10.0, 4.8, 4.8], [1.5, 0.7, 0.7]
    plan = policy.refit_plan(1800, epochs, val_images=7500, val_seconds=validating, **measured)
    assert plan.seconds_per_epoch / plan.images == pytest.approx(4.1 / 2000)
    fixed = 5.2 + 0.7 / 7500 * 10000 + policy.REFIT_MARGIN_SECONDS  # tracing, test, margin
    assert plan.epochs == 15  # 14.4 epochs of all fit: 15 on a sample
    assert plan.seconds == pytest.approx(fixed + 15 * plan.seconds_per_epoch, abs=0.2)
    assert plan.seconds <= 1800
    # as planned before (2026-12-02): 28 epochs, which took 84-141 s each, not 64
    guessed = policy.refit_plan(1800, epochs, val_images=7500, **measured)
    assert guessed.seconds_per_epoch / guessed.images == pytest.approx(4.8 / 4500)
    assert guessed.epochs == 28
    with_val = {"val_images": 7500, "val_seconds": validating, **measured}
    assert policy.refit_seconds(15, epochs, **with_val) > 1800 >= plan.seconds


def test_the_plan_keeps_apart_what_a_refit_pays_after_its_last_epoch():
    plan = policy.refit_plan(
        600, [30.0, 10.0, 10.0], trial_images=1000, refit_images=5000, test_images=1000, tta="flip"
    )
    # two views of 1,000 test images at a third of a trained image's 10 ms, and the margin
    assert plan.closing_seconds == pytest.approx(2 * 1000 * 0.01 / 3 + policy.REFIT_MARGIN_SECONDS)


def test_a_running_refit_replans_from_the_mean_of_its_own_epochs_after_the_first():
    # traced in 30 s, then 90 and 140 s (the two speeds seen here): 115 s an epoch; 560 s
    # left after the test predictions: 4 more
    assert policy.refit_epochs_in_time(600, [30.0, 90.0, 140.0], 40.0) == 3 + 4
    assert policy.refit_epochs_in_time(150, [30.0, 90.0, 140.0], 40.0) == 3  # none more
    assert policy.refit_epochs_in_time(10, [30.0, 90.0, 140.0], 40.0) == 3  # late: none
    assert policy.refit_epochs_in_time(130, [60.0], 0.0) == 1 + 2  # one epoch: its own


def test_refit_seconds_is_what_the_plan_counts_for_those_epochs():
    plan = plan_of()
    measured = {"trial_images": 1000, "refit_images": 5000, "test_images": 1000}
    assert policy.refit_seconds(plan.epochs, [30.0, 10.0, 10.0], **measured) == pytest.approx(
        plan.seconds
    )
    # the time for 20 epochs is more than 600 s, so 600 s plan fewer
    needed = policy.refit_seconds(20, [30.0, 10.0, 10.0], **measured)
    assert needed > 600
    assert policy.refit_plan(needed, [30.0, 10.0, 10.0], **measured).epochs == 20


def test_a_search_ends_early_only_where_the_refit_needs_its_time(monkeypatch):
    monkeypatch.setattr(policy, "now", lambda: 100.0)
    # the refit needs 500 s before 1,000: the search planned to end at 800 ends at 500
    assert policy.shortened_search(800.0, 1000.0, 500.0) == 500.0
    # it needs more than is left: the search ends now
    assert policy.shortened_search(800.0, 1000.0, 2000.0) == 100.0
    # the plan leaves it its time already
    assert policy.shortened_search(400.0, 1000.0, 500.0) is None
    # the search's deadline passed during its first trial: it is over, no earlier end
    assert policy.shortened_search(50.0, 1000.0, 2000.0) is None


def test_a_trial_ends_the_search_now_only_where_its_epochs_would_eat_the_refits_time(
    monkeypatch,
):
    monkeypatch.setattr(policy, "now", lambda: 100.0)
    # 3 more epochs of 100 s end at 400; a refit of 500 s still ends by 1,000: go on
    assert not policy.ends_search_now(3, 100.0, None, 1000.0, 500.0)
    # a refit of 700 s would end at 1,100: end now
    assert policy.ends_search_now(3, 100.0, None, 1000.0, 700.0)
    # a deadline at 250 stops it after 2 more epochs (at 300), which leaves 700 s
    assert not policy.ends_search_now(3, 100.0, 250.0, 1000.0, 700.0)
    # its last epoch is done, or the deadline passed: it stops anyway, nothing to end
    assert not policy.ends_search_now(0, 100.0, None, 1000.0, 2000.0)
    assert not policy.ends_search_now(3, 100.0, 50.0, 1000.0, 2000.0)


def test_no_room_to_search_where_one_trial_and_the_floors_refit_do_not_both_fit():
    # 0.01 s an image: a trial epoch of 1,000 images and 300 validated is 11 s; a refit
    # epoch of 2,000 is 20 s, its 100 test predictions 1/3 s and the margin fixed
    speed = {"trial_images": 1000, "refit_images": 2000, "test_images": 100, "val_images": 300}
    refit = 2 * 20 + 100 * 0.01 / 3 + policy.REFIT_MARGIN_SECONDS
    trial = 3 * 11
    assert policy.no_room_to_search(trial + refit + 0.2, 0.01, epochs=3, floor=2, **speed) is None
    no_room = policy.no_room_to_search(trial + refit - 0.2, 0.01, epochs=3, floor=2, **speed)
    assert no_room == pytest.approx((trial, refit))
    # a flipped view of each test image: 1/3 s more of predictions, which no longer fit
    flip = policy.no_room_to_search(
        trial + refit + 0.2, 0.01, epochs=3, floor=2, tta="flip", **speed
    )
    assert flip == pytest.approx((trial, refit + 100 * 0.01 / 3))


def test_a_refit_that_cannot_fit_an_epoch_of_all_images_takes_one_of_what_fits():
    # 0.01 s an image: an epoch of 60,000 is 600 s; 300 s are left, 43.3 s of them fixed
    plan = policy.refit_plan(
        300, [30.0, 10.0, 10.0], trial_images=1000, refit_images=60000, test_images=1000
    )
    fixed = 20 + 0.01 / 3 * 1000 + policy.REFIT_MARGIN_SECONDS
    assert plan.epochs == 1 and plan.images == int((300 - fixed) / 0.01)
    assert plan.seconds == pytest.approx(fixed + 0.01 * plan.images) and plan.seconds <= 300
    # fewer images than the trial trained on: the trial's model stands, no refit
    none = policy.refit_plan(
        50, [30.0, 10.0, 10.0], trial_images=1000, refit_images=60000, test_images=1000
    )
    assert none.epochs == 0 and none.seconds == 0
    # the refit's line prints the speed per trial epoch: 10 s on 1,000 images (not 600 x
    # 1,000, as it once did when no image fitted)
    assert none.seconds_per_epoch * 1000 / none.images == pytest.approx(10)


def test_a_challenger_within_two_standard_errors_keeps_the_recipe():
    # 2,000 validation images at 77%: one standard error is 0.94 points
    trials = [PastTrial(0, COMPLETE, 0.7719), PastTrial(1, COMPLETE, 0.7740)]
    chosen, why = policy.refit_choice(trials, "maximize", {0}, 2000)
    assert chosen == trials[0]
    assert why.startswith("no trial beat the recipe beyond noise (+-0.0188")


def test_a_challenger_beyond_two_standard_errors_is_refitted():
    trials = [PastTrial(0, COMPLETE, 0.7719), PastTrial(1, COMPLETE, 0.7940)]
    chosen, why = policy.refit_choice(trials, "maximize", {0}, 2000)
    assert chosen == trials[1] and "beyond noise" in why
    # the same gain on 200 images is noise
    assert policy.refit_choice(trials, "maximize", {0}, 200)[0] == trials[0]


def test_without_a_recipe_or_a_known_noise_the_best_trial_is_refitted():
    trials = [PastTrial(0, COMPLETE, 0.50), PastTrial(1, COMPLETE, 0.51)]
    assert policy.refit_choice(trials, "maximize", set(), 2000)[0] == trials[1]
    assert policy.refit_choice(trials, "minimize", {1}, None)[0] == trials[0]  # val_loss
    assert policy.refit_choice(trials, "maximize", {1}, 2000)[0] == trials[1]


def test_a_first_epoch_at_chance_stops_the_trial_where_enough_images_can_tell():
    # ten classes on 2,000 images: chance is 10%, two standard errors 1.34 points
    assert policy.at_chance(0.0925, 10, 2000) == policy.AT_CHANCE
    assert policy.at_chance(0.1130, 10, 2000) == policy.AT_CHANCE
    assert policy.at_chance(0.1140, 10, 2000) is None
    assert policy.at_chance(0.0925, 10, 200) is None  # too few images to tell
    rules = policy.Policy(spec())
    assert rules.stop_after_epoch(0.0925, 0, classes=10, val_images=2000) == policy.AT_CHANCE
    assert rules.stop_after_epoch(0.0925, 1, classes=10, val_images=2000) is None  # first only


def test_no_trial_starts_that_no_family_could_finish_before_the_deadline(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(policy, "now", lambda: clock[0])
    two = {"mlp": {"units": space.Fixed(8)}, "cnn": {"filters": space.Fixed(8)}}
    rules = policy.Policy(
        SweepSpec(path="x.yaml", dataset="mnist", families=two, timeout_minutes=10)
    )
    rules.trial_took("mlp", 120.0, {})
    clock[0] += 500  # 100 s left
    assert rules.stop_reason([]) is None  # cnn's time is not known yet: it may be quicker
    rules.trial_took("cnn", 90.0, {})
    rules.trial_took("cnn", 30.0, {})  # median 60 s: fits
    assert rules.stop_reason([]) is None
    clock[0] += 50  # 50 s left
    assert rules.stop_reason([]) == (
        "has 0.8 of its 10 minutes left, less than a trial takes (~1.0 min)"
    )


def test_a_sampled_trial_does_not_start_when_one_of_its_shape_took_longer_than_is_left(
    monkeypatch,
):
    clock = [1000.0]
    monkeypatch.setattr(policy, "now", lambda: clock[0])
    resnet = {"resnet": {"width": space.Fixed(8)}}
    rules = policy.Policy(
        SweepSpec(path="x.yaml", dataset="mnist", families=resnet, timeout_minutes=90)
    )
    rules.trial_took("resnet", 19 * 60, {"width": 32, "stages": 3, "learning_rate": 0.4})
    for rate in (0.1, 0.2, 0.3):
        rules.trial_took("resnet", 5 * 60, {"width": 16, "stages": 2, "learning_rate": rate})
    clock[0] += 78 * 60  # 12 min left: the family's median trial (5 min) fits
    assert rules.stop_reason([]) is None
    assert rules.too_late_for("resnet", {"width": 16, "stages": 2, "learning_rate": 0.5}) is None
    assert rules.too_late_for("resnet", {"width": 24, "stages": 3, "learning_rate": 0.1}) is None
    late = rules.too_late_for("resnet", {"width": 32, "stages": 3, "learning_rate": 0.26})
    assert late == (  # another learning rate, the same model: as long
        "has 12.0 of its 90 minutes left, less than a resnet trial of stages=3 width=32 "
        "took (~19.0 min)"
    )
    assert rules.stop_reason([]) == late  # the search is over


def test_one_family_is_kept_once_every_other_is_behind_beyond_noise():
    def trials(cnn_value):
        return [
            PastTrial(0, COMPLETE, 0.80, family="resnet"),
            PastTrial(1, COMPLETE, cnn_value, family="cnn"),
            PastTrial(2, PRUNED, 0.99, family="cnn"),  # a complete trial's value counts first
        ]

    families = ["resnet", "cnn"]
    # 2 SE at 80% on 7,500 images: 0.0092
    assert policy.family_to_keep(trials(0.795), families, "maximize", 7500) is None
    kept, why = policy.family_to_keep(trials(0.70), families, "maximize", 7500)
    assert kept == "resnet" and "cnn's 0.7000 behind resnet's 0.8000" in why
    assert policy.family_to_keep(trials(0.70), families, "maximize", None) is None  # noise?
    assert policy.family_to_keep(trials(0.70)[:1], families, "maximize", 7500) is None
    assert policy.family_to_keep(trials(0.70), ["resnet"], "maximize", 7500) is None
    # a family whose every trial was pruned (at chance) shows what its trials reached
    at_chance = [trials(0.70)[0], PastTrial(1, PRUNED, 0.10, family="cnn")]
    assert policy.family_to_keep(at_chance, families, "maximize", 7500)[0] == "resnet"
    ahead = [trials(0.70)[0], PastTrial(1, PRUNED, 0.85, family="cnn")]
    assert policy.family_to_keep(ahead, families, "maximize", 7500) is None
    assert policy.family_to_keep([ahead[1]], families, "maximize", 7500) is None  # no leader


def test_the_recipe_runs_first_in_a_space_over_the_coupled_decay():
    coupled = {
        "learning_rate": space.Float(0.05, 0.4, log=True),
        "lr_weight_decay": space.Float(1e-4, 4e-4, log=True),
    }
    recipe_first = spec(dataset="cifar10", families={"resnet": coupled})
    assert policy.first_points(recipe_first) == [
        ("resnet", {"learning_rate": 0.4, "lr_weight_decay": 2e-4})
    ]
    # the recipe's 0.4 x 5e-4 lies outside a space over smaller products: nothing to enqueue
    narrow = {**coupled, "lr_weight_decay": space.Float(1e-5, 1e-4, log=True)}
    assert policy.first_points(spec(dataset="cifar10", families={"resnet": narrow})) == []

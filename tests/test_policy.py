"""The sweep policy, on its own: budget, target, failures in a row, the best trial."""

from sweeper import policy, space
from sweeper.config import SweepSpec
from sweeper.engines.base import COMPLETE, FAILED, PRUNED, RUNNING, PastTrial


def spec(**changes):
    return SweepSpec(
        path="x.yaml", dataset="mnist", families={"mlp": {"units": space.Fixed(8)}}, **changes
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

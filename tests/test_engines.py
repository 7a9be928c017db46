"""The engine contract (`engines.base`), checked the same way for every registered engine.

A stub sweep stands in for training: each trial's value is given by the test, so these run
in seconds and check only what an engine owes the sweep: numbered trials, recipes first,
the policy's stop rule, failures and pruned trials recorded, resume from its store.
"""

import math
import subprocess
import sys
import threading
import warnings

import optuna
import pytest

from sweeper import config, engines, policy, space
from sweeper.engines import base, optuna_engine
from sweeper.errors import SweeperError
from sweeper.policy import Policy

SPACE = {
    "mlp": {"units": space.Choice((8, 16, 32, 64)), "dropout": space.Float(0.0, 0.5)},
    "cnn": {"filters": space.Int(4, 64, 4)},
}


class StubSweep:
    """A `base.Sweep` whose trials return `values(number)`; -1 raises, -2 is pruned, -3
    is not started (no time left for it)."""

    def __init__(self, spec, engine, values, first_points=()):
        self.spec, self.engine, self.values = spec, engine, values
        self.policy = Policy(spec)
        self.first_points = list(first_points)
        self.ran = []

    def run_trial(self, number, family, params, *, report=None, epochs=None, on_start=None):
        assert set(params) == {k for k, p in SPACE[family].items()}
        self.ran.append((number, family, params))
        value = self.values(number)
        if value == -3:
            self.policy.late = "has 1.0 of its 10 minutes left, less than ..."
            raise base.NotStarted(self.policy.late)
        if value == -1:
            self.policy.record(failed=True)
            raise RuntimeError("out of memory")
        self.policy.record(failed=False)
        if value == -2:
            if report:
                report(1, 0.1)
            return base.Outcome(0.99, pruned=True)  # scores best: it must not be the best
        return base.Outcome(value, pruned=False)

    def stop_reason(self, trials, *, holding=False):
        return self.policy.stop_reason(trials, holding=holding)

    def seconds_left(self):
        return self.policy.seconds_left()

    def family_to_keep(self, trials):
        kept = policy.family_to_keep(trials, list(self.spec.families), "maximize", 10_000)
        return kept and kept[0]


def make_spec(tmp_path, engine, study, **changes):
    registered = engines.registered(engine)
    spec = config.SweepSpec(
        path="stub.yaml",
        dataset="mnist",
        families=SPACE,
        engine=engine,
        sampler=registered.samplers[0] if engine == "optuna" else "random",
        study=study,
        trials=4,
        max_epochs=3,
    )
    return spec.with_overrides(**changes)


def run(spec, values, first_points=(), storage=None):
    engine = engines.get(spec.engine)(spec, storage)
    sweep = StubSweep(spec, engine, values, first_points)
    engine.search(sweep)
    return engine, sweep


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # each engine keeps its store under ./mlruns
    return tmp_path


ALL = engines.names()


@pytest.mark.parametrize("engine", ALL)
def test_trials_are_numbered_from_zero_and_first_points_run_first(in_tmp, engine):
    spec = make_spec(in_tmp, engine, "numbered")
    first = [("cnn", {"filters": 32}), ("mlp", {"units": 16, "dropout": 0.25})]
    found, sweep = run(spec, lambda n: 0.5, first)
    assert [n for n, _, _ in sweep.ran] == [0, 1, 2, 3]
    assert [(f, p) for _, f, p in sweep.ran[:2]] == first
    assert sorted((t.number, t.state) for t in found.trials()) == [
        (n, base.COMPLETE) for n in range(4)
    ]


@pytest.mark.parametrize("engine", ALL)
def test_a_failed_trial_is_recorded_and_the_search_goes_on(in_tmp, engine):
    spec = make_spec(in_tmp, engine, "failing")
    found, sweep = run(spec, lambda n: -1 if n == 1 else 0.5)
    states = {t.number: t.state for t in found.trials()}
    assert states[1] == base.FAILED
    assert sum(s == base.COMPLETE for s in states.values()) == 4  # failures use no budget


@pytest.mark.parametrize("engine", ALL)
def test_failures_in_a_row_stop_the_search(in_tmp, engine):
    spec = make_spec(in_tmp, engine, "broken", trials=10)
    _, sweep = run(spec, lambda n: -1)
    assert len(sweep.ran) == 3


@pytest.mark.parametrize("engine", ALL)
def test_a_pruned_trial_counts_as_finished(in_tmp, engine):
    spec = make_spec(in_tmp, engine, "pruned", trials=3)
    found, sweep = run(spec, lambda n: -2 if n == 0 else 0.5)
    states = {t.number: t.state for t in found.trials()}
    assert len(sweep.ran) == 3 and all(s in base.FINISHED for s in states.values())
    assert states[0] == base.PRUNED  # Keras Tuner: its STOPPED state
    assert policy.best(found.trials(), "maximize").number != 0


@pytest.mark.parametrize("engine", ALL)
def test_a_met_target_stops_the_search(in_tmp, engine):
    spec = make_spec(in_tmp, engine, "target", trials=10, target=0.9)
    found, sweep = run(spec, lambda n: 0.95 if n == 2 else 0.5)
    assert len(sweep.ran) == 3
    assert sweep.stop_reason(found.trials()).startswith("met its target")


@pytest.mark.parametrize("engine", ALL)
def test_a_trial_the_sweep_did_not_start_ends_the_search_unscored(in_tmp, engine):
    spec = make_spec(in_tmp, engine, "late", trials=10)
    found, sweep = run(spec, lambda n: -3 if n == 2 else 0.5)
    assert len(sweep.ran) == 3
    states = {t.number: t.state for t in found.trials()}
    assert states[2] == base.FAILED  # no value: samplers learn nothing from it
    assert sum(s == base.COMPLETE for s in states.values()) == 2


@pytest.mark.parametrize("engine", ALL)
def test_a_resumed_study_continues_its_numbering(in_tmp, engine):
    spec = make_spec(in_tmp, engine, "resumed", trials=2)
    run(spec, lambda n: 0.5)
    found, sweep = run(spec.with_overrides(trials=4), lambda n: 0.6)
    assert [n for n, _, _ in sweep.ran] == [2, 3]
    assert sorted(t.number for t in found.trials()) == [0, 1, 2, 3]
    values = {t.number: t.value for t in found.trials()}
    assert math.isclose(values[0], 0.5) and math.isclose(values[3], 0.6)


@pytest.mark.parametrize("engine", ALL)
def test_a_first_point_already_tried_is_not_run_again(in_tmp, engine):
    spec = make_spec(in_tmp, engine, "once", trials=1)
    first = [("cnn", {"filters": 32})]
    run(spec, lambda n: 0.5, first)
    _, sweep = run(spec.with_overrides(trials=2), lambda n: 0.5, first)
    assert len(sweep.ran) == 1 and sweep.ran[0][2] != {"filters": 32}


def test_the_registry_derives_choices_and_defaults():
    for name in ALL:
        registered = engines.registered(name)
        assert registered.default_sampler == registered.samplers[0]
        assert issubclass(engines.get(name), base.Engine)
    with pytest.raises(Exception, match="Known: optuna, keras-tuner"):
        engines.registered("hyperopt")


def test_optuna_importances_read_any_storage_url(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 'elsewhere' / 'studies.db'}"
    (tmp_path / "elsewhere").mkdir()
    spec = make_spec(tmp_path, "optuna", "far", trials=6)
    run(spec, lambda n: 0.1 * n, storage=storage)
    Engine = engines.get("optuna")
    found = Engine.importances("far", storage)
    assert set(found) <= {"mlp", "cnn"} and found
    assert all(abs(sum(v.values()) - 1) < 1e-6 for v in found.values())
    assert Engine.importances("no-such-study", storage) == {}
    assert not (tmp_path / "mlruns").exists()  # the default store was not touched


def test_a_journal_lock_left_by_a_killed_worker_is_broken_after_optunas_grace(in_tmp):
    """A worker killed while writing the default journal holds Optuna's lock for good; the
    other processes must break it after the 30 s grace, not wait forever (a CI hang)."""
    killed_while_writing = (
        "import os, optuna\n"
        "from sweeper.engines.optuna_engine import make_storage\n"
        "storage = make_storage(None)\n"
        "os.fsync = lambda fd: os._exit(9)  # dies inside the write, its lock held\n"
        "optuna.create_study(study_name='first', storage=storage)\n"
    )
    child = subprocess.run([sys.executable, "-c", killed_while_writing], cwd=in_tmp)
    assert child.returncode == 9 and (in_tmp / "mlruns" / "optuna.journal.lock").is_symlink()

    created = []
    writer = threading.Thread(
        target=lambda: created.append(
            optuna.create_study(study_name="second", storage=optuna_engine.make_storage(None))
        ),
        daemon=True,  # with the old relative path it never returns
    )
    writer.start()
    writer.join(timeout=90)
    assert created, "the stale journal lock was never broken"
    assert optuna.get_all_study_names(optuna_engine.make_storage(None)) == ["first", "second"]


def test_keras_tuner_keeps_its_project_in_the_storage_folder_given(in_tmp):
    spec = make_spec(in_tmp, "keras-tuner", "placed", trials=2)
    run(spec, lambda n: 0.5, storage=str(in_tmp / "elsewhere"))
    assert (in_tmp / "elsewhere" / "placed").is_dir()
    assert not (in_tmp / "mlruns" / "keras-tuner").exists()
    with pytest.raises(SweeperError, match="keras-tuner keeps its projects in a folder"):
        engines.get("keras-tuner")(spec, "postgresql://db/studies")


def test_a_new_study_starts_from_the_best_of_earlier_ones_after_the_recipes(in_tmp):
    first = make_spec(in_tmp, "optuna", "first", trials=4)
    earlier, _ = run(first, lambda n: [0.5, 0.9, 0.7, 0.6][n])
    best = earlier.study.trials[1].params
    recipe = ("mlp", {"units": 8, "dropout": 0.0})
    second = make_spec(in_tmp, "optuna", "second", trials=4)
    _, sweep = run(second, lambda n: 0.5, first_points=[recipe])
    family = best["family"]
    assert sweep.ran[0][1:] == recipe
    assert sweep.ran[1][1:] == (
        family,
        {k.split(".", 1)[1]: v for k, v in best.items() if k != "family"},
    )
    none = make_spec(in_tmp, "optuna", "third", trials=2, warm_start="none")
    _, cold = run(none, lambda n: 0.5, first_points=[recipe])
    assert len(cold.ran) == 2 and cold.ran[1][1:] != sweep.ran[1][1:]


def test_an_earlier_best_that_was_the_recipe_leaves_its_warm_start_to_the_next(in_tmp):
    recipe = ("mlp", {"units": 8, "dropout": 0.0})
    first = make_spec(in_tmp, "optuna", "first", trials=4)
    earlier, _ = run(first, lambda n: [0.9, 0.5, 0.7, 0.6][n], first_points=[recipe])
    second = make_spec(in_tmp, "optuna", "second", trials=4)
    _, sweep = run(second, lambda n: 0.5, first_points=[recipe])
    runner_up = earlier.study.trials[2].params
    assert [r[1:] for r in sweep.ran[:2]] == [
        recipe,
        (
            runner_up["family"],
            {k.split(".", 1)[1]: v for k, v in runner_up.items() if k != "family"},
        ),
    ]


def test_a_study_name_reused_on_another_dataset_is_refused(in_tmp):
    run(make_spec(in_tmp, "optuna", "shared", trials=1), lambda n: 0.5)
    other = make_spec(in_tmp, "optuna", "shared", trials=1, dataset="fashion_mnist")
    with pytest.raises(SweeperError, match="study 'shared' belongs to dataset mnist, not "):
        run(other, lambda n: 0.5)


def test_keras_tuner_refuses_a_warm_start_in_the_sweep_file(tmp_path):
    path = tmp_path / "kt.yaml"
    path.write_text(
        "dataset: mnist\nengine: keras-tuner\nwarm_start: all\nfamilies: {mlp: {units: 8}}\n"
    )
    with pytest.raises(SweeperError, match="warm_start: expected none with keras-tuner"):
        config.load(path)
    path.write_text("dataset: mnist\nengine: keras-tuner\nfamilies: {mlp: {units: 8}}\n")
    assert config.load(path).warm_start == "none"  # its default


def test_one_worker_of_a_study_claims_its_refit(in_tmp):
    spec = make_spec(in_tmp, "optuna", "claimed", trials=1)
    first, _ = run(spec, lambda n: 0.5)
    second = engines.get("optuna")(spec)  # another worker of the same study and store
    assert first.claim_refit(0) is True
    assert second.claim_refit(0) is False and first.claim_refit(0) is False
    assert second.claim_refit(1) is True  # a later best, after a resume: refitted again
    # the claims are no dataset's studies: a new study does not warm-start from them
    assert [
        w for *_, w in engines.get("optuna")(make_spec(in_tmp, "optuna", "new")).warm_start_points()
    ] == ["claimed #0"]


def test_optuna_samples_only_the_family_the_sweep_keeps(in_tmp):
    spec = make_spec(in_tmp, "optuna", "narrowed", sampler="random", trials=12)
    first = [("cnn", {"filters": 32}), ("mlp", {"units": 16, "dropout": 0.25})]
    values = {"cnn": 0.3, "mlp": 0.9}
    engine = engines.get("optuna")(spec, None)
    sweep = StubSweep(spec, engine, lambda n: 0.0, first)
    sweep.values = lambda n: values[next(f for m, f, _ in sweep.ran if m == n)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", optuna.exceptions.ExperimentalWarning)
        engine.search(sweep)  # the log line says it; Optuna's "experimental" would not help
    assert [f for _, f, _ in sweep.ran[2:]] == ["mlp"] * 10  # cnn is far behind after two

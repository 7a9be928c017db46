import math

import pytest

from sweeper import data, schema, train
from sweeper.errors import SweeperError


@pytest.fixture
def mnist(data_dir):
    return data.load("mnist", data_dir=data_dir)


@pytest.mark.parametrize("optimizer", sorted(train.OPTIMIZERS))
def test_every_optimizer_trains(optimizer, mnist):
    result = train.train(
        "mlp", {"units": 16, "optimizer": optimizer, "batch_size": 32}, mnist, epochs=2, seed=0
    )
    assert result.epochs == 2
    assert set(result.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert 0.0 <= result.test["test_accuracy"] <= 1.0


def test_exponential_decay_lowers_the_learning_rate(mnist):
    params = {
        "lr_schedule": "exponential",
        "learning_rate": 0.01,
        "decay_steps": 2,
        "decay_rate": 0.5,
    }
    optimizer = train.make_optimizer(schema.resolve("mlp", params), 0.01, steps=100)
    optimizer.build([])
    schedule = optimizer._learning_rate
    assert float(schedule(0)) == pytest.approx(0.01)
    assert float(schedule(4)) == pytest.approx(0.0025)


def test_a_diverged_trial_stops_at_once_and_counts_as_pruned(mnist):
    result = train.train(
        "mlp",
        {"units": 16, "optimizer": "sgd", "learning_rate": 1e12, "momentum": 0.0},
        mnist,
        epochs=10,
        seed=0,
    )
    assert result.pruned and result.stopped_by == "diverged"
    losses = result.history["loss"]  # it stopped at the first epoch that diverged
    assert result.epochs < 10 and not math.isfinite(losses[-1])
    assert all(math.isfinite(v) for v in losses[:-1])
    assert 0 <= result.test["test_accuracy"] <= 1  # scored, as the nothing it predicts


def test_pruning_hook_stops_after_the_epoch_it_says(mnist):
    result = train.train(
        "mlp", {"units": 8}, mnist, epochs=5, seed=0, should_prune=lambda epoch, logs: epoch == 1
    )
    assert result.pruned and result.epochs == 2


def test_same_seed_same_result(mnist):
    runs = [
        train.train(
            "cnn", {"filters": 4, "dense_units": 8, "batch_size": 32}, mnist, epochs=1, seed=7
        ).history["loss"][0]
        for _ in range(2)
    ]
    assert runs[0] == pytest.approx(runs[1], rel=1e-4)


def test_mse_loss_trains_on_one_hot_targets(mnist):
    result = train.train("mlp", {"units": 8, "loss": "mse"}, mnist, epochs=1, seed=0)
    assert result.test["test_loss"] < 0.2


def test_unknown_optimizer_names_the_known_ones(mnist):
    with pytest.raises(SweeperError, match="one of adam, adamax, nadam, rmsprop, sgd"):
        train.train("mlp", {"optimizer": "adagrad"}, mnist, epochs=1, seed=0)


def test_stop_when_ends_training_after_the_epoch_it_holds_for(mnist):
    seen = []

    def done(logs):
        seen.append(logs["val_accuracy"])
        return len(seen) == 2

    result = train.train(
        "mlp", {"units": 8, "early_stopping_patience": 0}, mnist, epochs=5, seed=0, stop_when=done
    )
    assert result.epochs == 2 and not result.pruned
    assert result.history["val_accuracy"] == pytest.approx(seen)

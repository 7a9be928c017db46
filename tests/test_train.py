import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from sweeper import data, policy, schema, train
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
    assert type(result.model.optimizer).__name__.lower() == optimizer  # the one asked for
    assert result.model.optimizer.iterations.numpy() == 2 * 5  # 160 images, batch 32
    predicted = result.test_probabilities.argmax(1)
    assert result.test["test_accuracy"] == pytest.approx(np.mean(predicted == mnist.y_test))


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
    # scored as the nothing it predicts: NaN outputs count as zeros, so class 0 everywhere
    assert result.test["test_accuracy"] == pytest.approx(np.mean(mnist.y_test == 0))


def test_pruning_hook_stops_after_the_epoch_it_says(mnist):
    result = train.train(
        "mlp", {"units": 8}, mnist, epochs=5, seed=0, should_prune=lambda epoch, logs: epoch == 1
    )
    assert result.pruned and result.epochs == 2


def test_each_epochs_validation_is_timed_apart_from_its_training(mnist):
    result = train.train("mlp", {"units": 8}, mnist, epochs=3, seed=0)
    assert len(result.val_seconds) == 3
    assert all(0 < v < result.train_seconds / 3 for v in result.val_seconds)
    refit = train.train("mlp", {"units": 8}, mnist.merged(), epochs=2, seed=0)
    assert refit.val_seconds == []  # no validation


def test_every_fit_and_prediction_reads_a_dataset_that_is_not_autotuned(mnist, monkeypatch):
    """Keras' array adapter autotunes, and dropping its iterator at the next epoch could wait
    out the tuner's sleep (tens of seconds): every feed is sweeper's own, untuned."""
    fed = []

    def spy(method):
        def recorded(self, *args, **kwargs):
            fed.append(args[0] if args else kwargs["x"])
            fed.extend([kwargs["validation_data"]] if kwargs.get("validation_data") else [])
            return method(self, *args, **kwargs)

        return recorded

    monkeypatch.setattr(keras.Model, "fit", spy(keras.Model.fit))
    monkeypatch.setattr(keras.Model, "predict", spy(keras.Model.predict))
    train.train("mlp", {"units": 8, "tta": "flip"}, mnist, epochs=2, seed=0)
    assert len(fed) == 5  # training, validation, test, and the test's two TTA views
    assert all(isinstance(f, tf.data.Dataset) for f in fed), fed
    assert not any(f.options().autotune.enabled for f in fed)


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
    one_hot = np.eye(10)[mnist.y_test]
    squared = np.mean((result.test_probabilities - one_hot) ** 2)
    assert result.test["test_loss"] == pytest.approx(squared)
    # the loss it trained on is the MSE too: its validation loss is the validation MSE
    val = result.model.predict(mnist.x_val, verbose=0)
    val_mse = np.mean((val - np.eye(10)[mnist.y_val]) ** 2)
    assert result.history["val_loss"][-1] == pytest.approx(val_mse, rel=1e-3)


def test_unknown_optimizer_names_the_known_ones(mnist):
    with pytest.raises(SweeperError, match="one of adam, adamax, nadam, rmsprop, sgd"):
        train.train("mlp", {"optimizer": "adagrad"}, mnist, epochs=1, seed=0)


def test_stop_when_ends_training_after_the_epoch_it_holds_for(mnist):
    seen = []

    def done(epoch, logs):
        seen.append((epoch, logs["val_accuracy"]))
        return "target" if len(seen) == 2 else None

    result = train.train(
        "mlp", {"units": 8, "early_stopping_patience": 0}, mnist, epochs=5, seed=0, stop_when=done
    )
    assert result.epochs == 2 and not result.pruned and result.stopped_by == "target"
    assert [epoch for epoch, _ in seen] == [0, 1]
    assert result.history["val_accuracy"] == pytest.approx([value for _, value in seen])


def test_a_trial_stopped_at_chance_is_pruned(mnist):
    result = train.train(
        "mlp",
        {"units": 8, "early_stopping_patience": 0},
        mnist,
        epochs=5,
        seed=0,
        stop_when=lambda epoch, logs: policy.AT_CHANCE,
    )
    assert result.epochs == 1 and result.pruned and result.stopped_by == "at chance"


def test_weight_averaging_evaluates_and_saves_the_averaged_weights(mnist):
    import keras

    momentum = 0.9
    seen = []  # the raw weights after each step, to average by hand

    class Steps(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append([v.numpy().copy() for v in self.model.trainable_variables])

    params = {
        "units": 8,
        "optimizer": "sgd",
        "learning_rate": 0.05,
        "ema_momentum": momentum,
        "early_stopping_patience": 0,  # (restoring weights would replace the average)
    }
    result = train.train("mlp", params, mnist, epochs=2, seed=0, callbacks=[Steps()])
    average = seen[0]  # Keras starts the average at the first step's weights
    for step in seen[1:]:
        average = [momentum * a + (1 - momentum) * w for a, w in zip(average, step)]
    final = [v.numpy() for v in result.model.trainable_variables]
    assert all(np.allclose(a, f, atol=1e-5) for a, f in zip(average, final))
    assert not all(np.allclose(w, f, atol=1e-5) for w, f in zip(seen[-1], final))
    # the test score is the averaged model's
    probs = result.model.predict(mnist.x_test, verbose=0)
    assert np.allclose(probs, result.test_probabilities, atol=1e-6)


def test_alternating_flips_mirror_exactly_the_images_not_mirrored_the_epoch_before():
    n, epochs = 10, 3
    # each image is its index on the left edge, 255 on the right: a mirror swaps them
    x = np.zeros((n, 2, 4, 1), np.uint8)
    x[:, :, 0, 0] = np.arange(n)[:, None]
    x[:, :, -1, 0] = 255
    batches = list(train.shuffled_batches(x, np.arange(n), 4, epochs, seed=0, alternate=True))
    assert len(batches) == epochs * 3  # ceil(10 / 4) batches an epoch, none across epochs
    mirrored_by_epoch = []
    for epoch in range(epochs):
        images = np.concatenate([b[0].numpy() for b in batches[3 * epoch : 3 * epoch + 3]])
        labels = np.concatenate([b[1].numpy() for b in batches[3 * epoch : 3 * epoch + 3]])
        assert sorted(labels) == list(range(n))  # every image once an epoch
        mirrored = images[:, 0, 0, 0] == 255
        index = np.where(mirrored, images[:, 0, -1, 0], images[:, 0, 0, 0])
        assert np.array_equal(index, labels)  # an image's label travels with it
        mirrored_by_epoch.append(set(labels[mirrored]))
    assert 0 < len(mirrored_by_epoch[0]) < n
    everything = set(range(n))
    assert mirrored_by_epoch[1] == everything - mirrored_by_epoch[0]
    assert mirrored_by_epoch[2] == mirrored_by_epoch[0]


def test_a_trial_with_alternating_flips_trains_its_epochs(mnist):
    params = {"units": 8, "flip": "alternating", "batch_size": 32, "learning_rate": 0.01}
    result = train.train("mlp", params, mnist, epochs=3, seed=0)
    assert result.epochs == 3 and len(result.history["val_accuracy"]) == 3
    assert result.history["loss"][2] < result.history["loss"][0]


def test_flip_translate_tta_averages_the_six_views():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(3, 5, 5, 1), dtype=np.uint8)
    calls = []

    def predict(views):
        calls.append(views.copy())
        # a "model" that reads two pixels, so each view gives its own answer
        a = views[:, 1, 1, 0].astype(float) / 255
        b = views[:, 2, 3, 0].astype(float) / 255
        return np.stack([a, b], axis=1)

    averaged = train.tta(predict, x, "flip+translate")
    mirror = x[:, :, ::-1]
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    up_left, down_right = padded[:, :-2, :-2], padded[:, 2:, 2:]
    assert np.array_equal(up_left[:, 1:, 1:], x[:, :-1, :-1])  # shifted by one pixel
    expected = (
        0.25 * (predict(x) + predict(mirror))
        + 0.125 * (predict(up_left) + predict(up_left[:, :, ::-1]))
        + 0.125 * (predict(down_right) + predict(down_right[:, :, ::-1]))
    )
    assert np.allclose(averaged, expected)
    assert len(calls) == 6 + 6  # six views, then the six of the expectation
    assert np.allclose(train.tta(predict, x, "flip"), (predict(x) + predict(mirror)) / 2)


def test_tta_logs_its_accuracy_beside_the_plain_one(data_dir):
    cifar = data.load("cifar10", data_dir=data_dir)
    result = train.train("mlp", {"units": 8, "tta": "flip+translate"}, cifar, epochs=1, seed=0)
    assert set(result.test) >= {"test_accuracy", "test_accuracy_tta"}


def test_the_score_is_the_saved_models_epoch_where_early_stopping_restores(mnist):
    params = {
        "units": 8,
        "learning_rate": 0.05,  # large enough to wander, so the best epoch is not always last
        "early_stopping_patience": 2,
        "early_stopping_monitor": "val_accuracy",
    }
    result = train.train("mlp", params, mnist, epochs=6, seed=3)
    history = result.history["val_accuracy"]
    assert result.model_epoch == int(np.argmax(history)) + 1
    assert result.score("val_accuracy") == max(history)
    # the model holds that epoch's weights: it scores that epoch's validation accuracy
    y_val = mnist.y_val
    probs = result.model.predict(mnist.x_val, verbose=0)
    assert float(np.mean(probs.argmax(1) == y_val)) == pytest.approx(
        history[result.model_epoch - 1], abs=1e-6
    )
    # without early stopping the model is the last epoch's, and so is its score
    last = train.train("mlp", {**params, "early_stopping_patience": 0}, mnist, epochs=3, seed=3)
    assert last.model_epoch == 3 and last.score("val_accuracy") == last.history["val_accuracy"][2]


def test_latency_is_the_median_of_the_timed_calls_after_the_warm_up():
    ticks = iter([0.0, 0.004, 1.0, 1.002, 2.0, 2.009])  # calls of 4, 2 and 9 ms
    calls = []
    found = train.latency_ms(calls.append, "image", warmup=2, calls=3, clock=lambda: next(ticks))
    assert found == pytest.approx(4.0)
    assert len(calls) == 5  # the warm-up calls are not timed


def test_costs_count_trainable_parameters_and_the_saved_size(mnist):
    result = train.train("mlp", {"units": 8, "hidden_layers": 1}, mnist, epochs=1, seed=0)
    # 784 inputs x 8 units + 8 biases, 8 x 10 + 10: the layers' trainable weights
    assert result.costs["params"] == 784 * 8 + 8 + 8 * 10 + 10
    assert 0.01 < result.costs["model_mb"] < 1 and result.costs["latency_ms"] > 0


def test_the_cosine_schedule_warms_up_then_ends_with_the_trial_s_own_steps(mnist):
    p = schema.resolve("mlp", {"lr_schedule": "cosine", "warmup_fraction": 0.2})
    optimizer = train.make_optimizer(p, 0.1, steps=50)  # a trial of 50 steps in all
    schedule = optimizer._learning_rate
    assert float(schedule(0)) == pytest.approx(0.0)
    assert float(schedule(10)) == pytest.approx(0.1)  # warm by a fifth of the trial
    assert float(schedule(50)) == pytest.approx(0.0, abs=1e-7)  # over when the trial is
    assert 0.0 < float(schedule(30)) < 0.1


COSINE = {
    "units": 8,
    "lr_schedule": "cosine",
    "learning_rate": 0.1,
    "final_lr_fraction": 0.1,
    "early_stopping_patience": 0,
    "batch_size": 32,
}


def test_a_run_slower_than_planned_ends_on_time_with_its_cosine_complete(mnist):
    asked = []

    def epochs_that_fit(seconds):
        asked.append(list(seconds))
        return 3  # of the 6 planned: its epochs were slower than its plan's

    result = train.train("mlp", COSINE, mnist, epochs=6, seed=0, epochs_that_fit=epochs_that_fit)
    assert result.epochs == 3 and result.stopped_by == "timeout" and not result.pruned
    assert result.replanned == 3
    assert [len(s) for s in asked] == [1, 2, 3] and all(v > 0 for v in asked[-1])
    planned = train.schedule(schema.resolve("mlp", COSINE), 0.1, steps=6 * 5)  # 160 images
    optimizer = result.model.optimizer
    assert optimizer.iterations.numpy() == 3 * 5
    # at its new last step the rate is the schedule's end, not its middle
    assert float(optimizer.learning_rate) == pytest.approx(float(planned(30)))
    assert float(planned(30)) == pytest.approx(0.01) and float(planned(15)) > 0.05


def test_a_run_faster_than_planned_trains_more_epochs_up_to_its_most(mnist):
    grown = train.train(
        "mlp", COSINE, mnist, epochs=2, seed=0, epochs_that_fit=lambda s: 4, most_epochs=5
    )
    assert grown.epochs == 4 and grown.replanned == 4 and grown.stopped_by is None
    planned = train.schedule(schema.resolve("mlp", COSINE), 0.1, steps=2 * 5)
    # the 2 epochs' schedule stretched over 4: it still ends at its end
    assert float(grown.model.optimizer.learning_rate) == pytest.approx(float(planned(10)))
    capped = train.train(
        "mlp", COSINE, mnist, epochs=2, seed=0, epochs_that_fit=lambda s: 100, most_epochs=3
    )
    assert capped.epochs == 3


def test_a_run_that_keeps_its_time_trains_as_without_a_deadline(mnist):
    kept = train.train("mlp", COSINE, mnist, epochs=4, seed=0, epochs_that_fit=lambda s: 100)
    plain = train.train("mlp", COSINE, mnist, epochs=4, seed=0)
    assert kept.epochs == 4 and kept.stopped_by is None and kept.replanned is None
    assert kept.history["loss"] == pytest.approx(plain.history["loss"])
    assert kept.test == pytest.approx(plain.test)


def test_a_run_with_no_time_for_another_epoch_stops_after_the_one_it_ran(mnist):
    result = train.train("mlp", COSINE, mnist, epochs=4, seed=0, epochs_that_fit=lambda s: 0)
    assert result.epochs == 1 and result.stopped_by == "timeout"


def test_a_resizable_schedule_saves_with_its_optimizer_and_loads(mnist, tmp_path):
    result = train.train("mlp", COSINE, mnist, epochs=2, seed=0, epochs_that_fit=lambda s: 1)
    result.model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    rate = loaded.optimizer.get_config()["learning_rate"]
    assert rate["class_name"] == "Resizable" and rate["config"]["steps"] == 2 * 5


def test_label_smoothing_reaches_the_loss(mnist):
    result = train.train("mlp", {"units": 8, "label_smoothing": 0.2}, mnist, epochs=1, seed=0)
    assert result.model.loss.get_config()["label_smoothing"] == pytest.approx(0.2)
    # the smoothed loss: above the plain cross-entropy of the same predictions
    val = result.model.predict(mnist.x_val, verbose=0)
    plain = -np.mean(np.log(val[np.arange(len(val)), mnist.y_val]))
    smoothed = np.eye(10)[mnist.y_val] * 0.8 + 0.02
    expected = -np.mean(np.sum(smoothed * np.log(val), axis=1))
    assert result.history["val_loss"][-1] == pytest.approx(expected, rel=1e-3)
    assert expected != pytest.approx(plain)


def test_mixed_bfloat16_computes_in_bf16_and_answers_in_float32(mnist):
    import keras

    try:
        result = train.train(
            "mlp", {"units": 8}, mnist, epochs=1, seed=0, precision="mixed_bfloat16"
        )
        dense = result.model.get_layer("dense_1")
        assert dense.compute_dtype == "bfloat16" and dense.variable_dtype == "float32"
        assert result.model.output.dtype == "float32"
        assert result.test_probabilities.dtype == np.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")

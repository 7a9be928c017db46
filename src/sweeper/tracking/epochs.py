"""The Keras callback that hands a trial's epochs to its recorder (imports Keras: loaded on
first use, so `sweeper ui` and `sweeper best` never load TensorFlow)."""

from __future__ import annotations

import keras

from sweeper.tracking import names
from sweeper.tracking.recorder import TrialRecorder
from sweeper.train import EpochClock


class EpochLogger(EpochClock):
    """Hands each epoch's metrics, learning rate, duration and validation seconds (its
    `EpochClock`) to the recorder in one write (not per batch). Opens the run when
    training begins, and stops training at an epoch's end once the run is known not to
    have opened (a store that cannot be written)."""

    def __init__(self, recorder: TrialRecorder):
        super().__init__()
        self.recorder = recorder

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.recorder.start()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        values = {k: float(v) for k, v in (logs or {}).items() if k != names.LEARNING_RATE}
        values[names.LEARNING_RATE] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        validated = len(self.val_seconds)
        super().on_epoch_end(epoch, logs)
        values[names.EPOCH_SECONDS] = self.epoch_seconds[-1]
        if len(self.val_seconds) > validated:  # the refit's plan reads it (`policy.refit_plan`)
            values[names.VAL_SECONDS] = self.val_seconds[-1]
        self.recorder.log_epoch(values, epoch + 1)
        self.recorder.opened()  # raises why the run could not open

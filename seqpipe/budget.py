"""A training budget that fits the data, for a pipeline that leaves it to seqpipe.

``[training] batch_size = 64`` and ``epochs = 20`` suit a few thousand examples. On a few dozen
(a UCR time-series set: 36 training series) they give one optimizer step per epoch and twenty in
all, and the model stops at chance. When the pipeline sets none of batch_size, epochs and patience
itself, each one it leaves unset is fitted to the training split's size: batches small enough for
several steps per epoch, enough epochs for :data:`MIN_STEPS` steps, and patience in proportion.
On a few thousand examples the static defaults come out unchanged.
"""

from __future__ import annotations

import math

from seqpipe.config import TrainingConfig

MIN_STEPS = 500  # optimizer steps the fitted epochs reach at least (up to MAX_EPOCHS)
STEPS_PER_EPOCH = 8  # batches per epoch the fitted batch size aims for, down to MIN_BATCH examples a batch
MIN_BATCH = 8
MAX_EPOCHS = 200
FITTED = ("batch_size", "epochs", "patience")


def fitted_budget(training: TrainingConfig, train_examples: int) -> tuple[TrainingConfig, str | None]:
    """``training`` with each of batch_size, epochs and patience that the pipeline left unset fitted
    to ``train_examples``, and a line saying what was chosen (None when the static defaults stand)."""
    unset = [key for key in FITTED if key not in training.model_fields_set]
    if not unset or train_examples < 1:
        return training, None
    defaults = {key: TrainingConfig.model_fields[key].default for key in FITTED}
    batch = training.batch_size
    if "batch_size" in unset:
        batch = min(defaults["batch_size"], max(MIN_BATCH, math.ceil(train_examples / STEPS_PER_EPOCH)))
    steps = math.ceil(train_examples / batch)
    epochs = training.epochs
    if "epochs" in unset:
        epochs = min(MAX_EPOCHS, max(defaults["epochs"], math.ceil(MIN_STEPS / steps)))
    patience = training.patience
    if "patience" in unset:
        patience = max(defaults["patience"], epochs // 5)
    chosen = {"batch_size": batch, "epochs": epochs, "patience": patience}
    changed = {key: value for key, value in chosen.items() if key in unset and value != defaults[key]}
    if not changed:
        return training, None
    fitted = training.model_copy(update=changed)
    said = ", ".join(f"{key} {value}" for key, value in changed.items())
    return fitted, (
        f"training: {train_examples} training examples: {said} (fitted to the data for {steps} steps an epoch, "
        f"{steps * epochs} in all at most; set training.{'/'.join(changed)} to choose)"
    )

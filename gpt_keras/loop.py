"""A custom `strategy.run` training loop with `model.fit`'s interface.

Keras 3's `fit` breaks under `MultiWorkerMirroredStrategy`
(keras-team/keras#20585), so multi-worker training runs this loop instead.
It drives the very same replica step (`gpt_keras.step.train_step`) and the
same Keras callbacks (progress bar, checkpoints, TensorBoard, CSV), so
checkpoints, resume and logs behave as with `fit`.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from gpt_keras import step


def _reduce(strategy: tf.distribute.Strategy, logs: dict) -> dict:
    # The step returns global values already (identical on every replica).
    return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in logs.items()}


def _make_step_fn(model, strategy, fn):
    # No XLA here: the step's cross-replica sums are collectives, which stay
    # outside compiled clusters.
    def replica_fn(data):
        return fn(model, data)

    @tf.function
    def distributed(iterator):
        return _reduce(strategy, strategy.run(replica_fn, args=(next(iterator),)))

    return distributed


def _distribute(strategy, data: tf.data.Dataset):
    options = tf.data.Options()
    # Every worker reads the same global batches and keeps its slice, so
    # N workers see exactly what one process sees.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return iter(strategy.experimental_distribute_dataset(data.with_options(options)))


def custom_fit(model: keras.Model, strategy: tf.distribute.Strategy, stream: tf.data.Dataset, *,
               epochs: int, initial_epoch: int, steps_per_epoch: int, callbacks: list,
               validation_data: tf.data.Dataset | None = None, verbose="auto") -> keras.callbacks.History:
    """Train `model` (compiled, built under `strategy`) like `model.fit` on an
    infinite `stream` of global batches."""
    callback_list = keras.callbacks.CallbackList(
        callbacks, add_history=True, add_progbar=verbose != 0, model=model,
        verbose=1 if verbose == "auto" else verbose, epochs=epochs, steps=steps_per_epoch)
    train_fn = _make_step_fn(model, strategy, step.train_step)
    eval_fn = _make_step_fn(model, strategy, step.test_step)
    iterator = _distribute(strategy, stream)
    model.stop_training = False
    callback_list.on_train_begin()
    logs = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        for batch in range(steps_per_epoch):
            callback_list.on_train_batch_begin(batch)
            logs = train_fn(iterator)
            callback_list.on_train_batch_end(batch, logs)
        epoch_logs = {k: float(v) for k, v in logs.items()}
        if validation_data is not None:
            epoch_logs.update({f"val_{k}": v for k, v in evaluate(model, strategy, validation_data, eval_fn).items()})
        callback_list.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    return model.history


def evaluate(model, strategy, data: tf.data.Dataset, eval_fn=None) -> dict:
    """Metrics over one pass of `data` with the shared test step."""
    eval_fn = eval_fn or _make_step_fn(model, strategy, step.test_step)
    model.reset_metrics()
    n = int(data.cardinality().numpy())
    if n <= 0:
        raise ValueError("validation data must be finite with a known number of batches")
    iterator = _distribute(strategy, data)
    logs = {}
    for _ in range(n):
        logs = eval_fn(iterator)
    model.reset_metrics()
    return {k: float(v) for k, v in logs.items()}

"""The one training/evaluation step, shared by `model.fit` and custom
`strategy.run` loops (Keras 3 `fit` breaks under MultiWorkerMirroredStrategy,
keras-team/keras#20585, so a custom loop must be able to drive the same step).

A model provides `loss_terms(data, training) -> (terms, metric_sums)`, both
`{name: (sum, count)}`.
Every term is normalised by its *global* count, summed across replicas, so
that replicas with more padding (or fewer examples) do not get a larger say:

    loss_replica = sum_k  w_k * loss_sum_k(replica) / count_k(all replicas)

The optimizer sums gradients over replicas, which gives exactly the gradient
of the global loss; `gpt_keras.optim.OpenAIAdam` clips after that sum.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf

LossTerms = dict  # {name: (loss_sum, count)}


def _all_reduce_sum(values: list):
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return values
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, values)


def _loss_weights(model) -> dict:
    return model.loss_weights() if hasattr(model, "loss_weights") else {}


def replica_loss(model, terms: LossTerms, extra: LossTerms | None = None):
    """(this replica's share of the global loss, {name: global mean}) for `terms`.

    `extra` holds metric sums (e.g. correct predictions) reduced the same way.
    """
    extra = extra or {}
    names = sorted(terms) + sorted(extra)
    pairs = [{**extra, **terms}[n] for n in names]
    sums = [tf.cast(s, tf.float32) for s, _ in pairs]
    counts = [tf.cast(c, tf.float32) for _, c in pairs]
    global_counts = _all_reduce_sum(counts)
    shares = {n: s / tf.maximum(c, 1.0) for n, s, c in zip(names, sums, global_counts)}
    weights = _loss_weights(model)
    loss = tf.add_n([weights.get(n, 1.0) * shares[n] for n in sorted(terms)])
    # Global values, identical on every replica, for logging.
    global_values = _all_reduce_sum([loss] + [shares[n] for n in names])
    logs = {"loss": global_values[0]}
    logs.update({n: v for n, v in zip(names, global_values[1:])})
    return loss, logs, dict(zip(names, global_counts))


def train_step(model, data) -> dict:
    """One optimisation step in replica context; returns the logs."""
    with tf.GradientTape() as tape:
        terms, extra = model.loss_terms(data, training=True)
        loss, logs, counts = replica_loss(model, terms, extra)
        # Loss scaling (float16): the optimizer unscales the summed gradients
        # before clipping and skips steps that overflowed; as Keras's train_step.
        scaled_loss = model.optimizer.scale_loss(loss)
    grads = tape.gradient(scaled_loss, model.trainable_variables)
    if hasattr(model, "mask_gradients"):  # transfer modes that freeze part of a variable
        grads = model.mask_gradients(grads)
    # Dense all-reduce: sparse (IndexedSlices) gathers need equal shapes on all
    # replicas and the tied embedding gradient is dense anyway.
    grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
    model.optimizer.apply(grads, model.trainable_variables)
    return update_metrics(model, logs, counts)


def test_step(model, data) -> dict:
    """One evaluation step in replica context; returns the logs."""
    terms, extra = model.loss_terms(data, training=False)
    _, logs, counts = replica_loss(model, terms, extra)
    return update_metrics(model, logs, counts)


# ---- metrics -------------------------------------------------------------
# Trackers are created once per model (outside tf.function) and weighted by
# the global counts, so epoch averages are exact token/example averages.

def create_metric_trackers(model) -> None:
    """Call at the end of a model's `__init__` (state must exist before build)."""
    names = ["loss"] + [f"{n}_loss" for n in sorted(_loss_names(model))]
    family = getattr(model, "family", None)
    if family is not None and not family.is_regression:
        names.append("accuracy")
    model._step_trackers = {n: keras.metrics.Mean(name=n) for n in names}


def metric_trackers(model) -> list:
    return list(model._step_trackers.values())


def _loss_names(model) -> list:
    weights = _loss_weights(model)
    if not weights:
        return ["lm"]
    return [n for n, w in weights.items() if w > 0]


def update_metrics(model, logs: dict, counts: dict) -> dict:
    trackers = model._step_trackers
    trackers["loss"].update_state(logs["loss"])
    out = {}
    for name, value in logs.items():
        key = name if name in ("loss", "accuracy") else f"{name}_loss"
        if key in trackers and key != "loss":
            trackers[key].update_state(value, sample_weight=counts[name])
    for key, tracker in trackers.items():
        out[key] = tracker.result()
    if "lm_loss" in out:
        out["perplexity"] = tf.exp(tf.minimum(out["lm_loss"], math.log(1e30)))
    return out

"""The paper's optimizer and learning-rate schedules.

`OpenAIAdam` is the update of the original release's `opt.py`, written as a
Keras optimizer because Keras's `AdamW` differs in two ways that matter for
fidelity and for multi-replica equivalence:
  * the original decays with the *bias-corrected* step size,
      p -= lr_t * (m_t / (sqrt(v_t) + eps) + l2 * p),
    lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t); Keras's AdamW uses plain lr;
  * Keras clips gradients (`global_clipnorm`) *before* the cross-replica sum,
    i.e. per replica; here the global norm is taken after the sum, as a single
    device would.

Dynamic loss scaling (for `mixed_float16`) lives here too, for the same
reason: Keras's `LossScaleOptimizer` checks the gradients for inf/NaN per
replica *before* the cross-replica sum and must run the inner update in a
cross-replica `cond`; here the check is on the summed gradients, identical on
every replica, and the unscaling comes before the clipping.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="gpt_keras")
class OpenAIAdam(keras.optimizers.Optimizer):
    """Adam with decoupled L2 (w = 0.01) on every weight of rank >= 2.

    Args:
      learning_rate: float or schedule.
      l2: decoupled weight decay; never applied to biases or LayerNorm gains
        (rank-1 weights).
      decay_embeddings: whether the token/position embeddings (rank 2) are
        decayed, as in the original code (default True).
      max_grad_norm: clip the summed gradient to this global norm (<= 0: off).
      dynamic_loss_scale: scale the loss (`scale_loss`, which the training
        step calls) by a factor that halves whenever the summed gradients hold
        an inf/NaN, a step then skipped (weights and moments unchanged; the
        step still counts in `iterations`, so resume and schedules stay on the
        data stream), and doubles after `loss_scale_growth_steps` finite
        steps, as Keras's `LossScaleOptimizer` does. The scale is an
        optimizer variable, so checkpoints carry it. Needed for float16.
      initial_loss_scale, loss_scale_growth_steps: Keras's defaults.
    """

    def __init__(self, learning_rate=6.25e-5, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-8, l2: float = 0.01, decay_embeddings: bool = True,
                 max_grad_norm: float = 1.0, dynamic_loss_scale: bool = False,
                 initial_loss_scale: float = 2.0 ** 15, loss_scale_growth_steps: int = 2000,
                 name: str = "openai_adam", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if dynamic_loss_scale and self.loss_scale_factor is not None:
            raise ValueError("dynamic_loss_scale and a fixed loss_scale_factor exclude each other; choose one")
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.l2 = l2
        self.decay_embeddings = decay_embeddings
        self.max_grad_norm = max_grad_norm
        self.dynamic_loss_scale = dynamic_loss_scale
        self.initial_loss_scale = initial_loss_scale
        self.loss_scale_growth_steps = loss_scale_growth_steps

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._m, self._v = self.add_optimizer_variables(var_list, ["m", "v"])
        self._decay = [self._decays(v) for v in var_list]  # by variable index
        if self.dynamic_loss_scale:
            # Same value on every replica (updated from the summed gradients),
            # so the first replica's write stands for all, as for `iterations`.
            self.loss_scale = self.add_variable(
                (), initializer=keras.initializers.Constant(self.initial_loss_scale), dtype="float32",
                aggregation="only_first_replica", name="loss_scale")
            self._finite_steps = self.add_variable(
                (), initializer="zeros", dtype="int", aggregation="only_first_replica", name="finite_steps")

    def scale_loss(self, loss):
        """The loss times the current loss scale (Keras's own `train_step` calls this too)."""
        if not self.dynamic_loss_scale:
            return super().scale_loss(loss)
        scale = self.loss_scale if self.built else self.initial_loss_scale
        return loss * ops.cast(scale, loss.dtype)

    def _decays(self, variable) -> bool:
        if len(variable.shape) < 2:
            return False
        return self.decay_embeddings or "embeddings" not in variable.path

    def _all_reduce_sum_gradients(self, grads_and_vars):
        # TF backend hook that runs right after the cross-replica sum: the
        # only place where the *global* gradient norm is available.
        grads_and_vars = super()._all_reduce_sum_gradients(grads_and_vars)
        grads, variables = (list(x) for x in zip(*grads_and_vars))
        if self.dynamic_loss_scale:
            grads = self._unscale(grads)
        if self.max_grad_norm and self.max_grad_norm > 0:
            grads, _ = tf.clip_by_global_norm(grads, self.max_grad_norm)
        return list(zip(grads, variables))

    def _unscale(self, grads: list) -> list:
        """Summed gradients divided by the loss scale, and the scale updated.

        A step with any inf/NaN comes back with *every* gradient NaN, the
        signal `update_step` skips on: each variable's update then sees it
        without state shared between replicas or update calls.
        """
        grads = [tf.convert_to_tensor(g) for g in grads]  # IndexedSlices: the check needs dense values
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
        scale = tf.convert_to_tensor(self.loss_scale)
        grow = tf.logical_and(finite, tf.convert_to_tensor(self._finite_steps) + 1 >= self.loss_scale_growth_steps)
        self.loss_scale.assign(tf.where(grow, scale * 2.0, tf.where(finite, scale, scale * 0.5)))
        steps = tf.convert_to_tensor(self._finite_steps)
        self._finite_steps.assign(tf.where(tf.logical_and(finite, tf.logical_not(grow)), steps + 1, tf.zeros_like(steps)))
        signal = tf.where(finite, 1.0 / scale, float("nan"))
        return [g * tf.cast(signal, g.dtype) for g in grads]

    def update_step(self, gradient, variable, learning_rate):
        if not self.dynamic_loss_scale:
            return self._adam_update(gradient, variable, learning_rate)
        # All gradients are NaN after an overflow (`_unscale`): skip the update.
        finite = tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(gradient)))
        tf.cond(finite, lambda: self._adam_update(gradient, variable, learning_rate), lambda: None)

    def _adam_update(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        # Densify (tied-embedding gradients arrive as IndexedSlices), as the original code does.
        gradient = ops.cast(tf.convert_to_tensor(gradient), variable.dtype)
        t = ops.cast(self.iterations + 1, variable.dtype)
        key = self._get_variable_index(variable)
        m, v = self._m[key], self._v[key]
        lr_t = lr * ops.sqrt(1 - ops.power(self.beta_2, t)) / (1 - ops.power(self.beta_1, t))
        hyper = ops.convert_to_tensor([self.beta_1, self.beta_2, self.epsilon, self.l2 if self._decay[key] else 0.0],
                                      variable.dtype)
        new_variable, new_m, new_v = _fused_adam(tf.convert_to_tensor(variable), gradient, tf.convert_to_tensor(m),
                                                 tf.convert_to_tensor(v), lr_t, hyper)
        self.assign(m, new_m)
        self.assign(v, new_v)
        self.assign(variable, new_variable)

    def get_config(self):
        config = super().get_config()
        config.update(beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon, l2=self.l2,
                      decay_embeddings=self.decay_embeddings, max_grad_norm=self.max_grad_norm,
                      dynamic_loss_scale=self.dynamic_loss_scale, initial_loss_scale=self.initial_loss_scale,
                      loss_scale_growth_steps=self.loss_scale_growth_steps)
        return config


@tf.function(jit_compile=True)
def _fused_adam(variable, gradient, m, v, lr_t, hyper):
    """One Adam + decoupled-L2 update as a single XLA loop over the weight.

    Written as TF ops, the update is ~10 elementwise passes over every weight
    (about 10% of a bf16 training step on CPU, where the step runs without
    XLA so that matmuls use oneDNN); fused, it reads g, m, v, w once and
    writes m, v, w once. Inside an XLA step it is simply inlined.
    """
    beta_1, beta_2, epsilon, l2 = hyper[0], hyper[1], hyper[2], hyper[3]
    m = beta_1 * m + (1 - beta_1) * gradient
    v = beta_2 * v + (1 - beta_2) * tf.square(gradient)
    return variable - lr_t * (m / (tf.sqrt(v) + epsilon) + l2 * variable), m, v


def warmup_cosine(peak_lr: float, warmup_steps: int, total_steps: int):
    """Pre-training schedule: linear warmup over `warmup_steps`, then cosine to 0
    at `total_steps` (Keras's CosineDecay does exactly this)."""
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"need 0 <= warmup_steps ({warmup_steps}) < total_steps ({total_steps})")
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, decay_steps=total_steps - warmup_steps, alpha=0.0,
        warmup_target=peak_lr, warmup_steps=warmup_steps)


@keras.saving.register_keras_serializable(package="gpt_keras")
class WarmupLinear(keras.optimizers.schedules.LearningRateSchedule):
    """Fine-tuning schedule: linear warmup over `warmup_fraction` of the steps,
    then linear decay to 0 at `total_steps` (the paper: 0.2% warmup)."""

    def __init__(self, peak_lr: float, total_steps: int, warmup_fraction: float = 0.002):
        if total_steps <= 0 or not 0 <= warmup_fraction < 1:
            raise ValueError(f"need total_steps > 0 and 0 <= warmup_fraction < 1, "
                             f"got {total_steps}, {warmup_fraction}")
        self.peak_lr, self.total_steps, self.warmup_fraction = peak_lr, total_steps, warmup_fraction

    def __call__(self, step):
        step = ops.cast(step, "float32")
        total = float(self.total_steps)
        warmup = max(math.ceil(self.warmup_fraction * total), 0)
        up = (step + 1.0) / float(max(warmup, 1))
        down = ops.maximum(total - step, 0.0) / max(total - warmup, 1.0)
        return self.peak_lr * ops.where(step < warmup, up, ops.minimum(down, 1.0))

    def get_config(self):
        return {"peak_lr": self.peak_lr, "total_steps": self.total_steps,
                "warmup_fraction": self.warmup_fraction}


def warmup_linear(peak_lr: float, total_steps: int, warmup_fraction: float = 0.002) -> WarmupLinear:
    return WarmupLinear(peak_lr, total_steps, warmup_fraction)

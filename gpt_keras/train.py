"""`pretrain` and `finetune`: `model.fit` under a `tf.distribute` strategy.

Training is measured in optimizer steps. An "epoch" here is
`steps_per_epoch` steps of a continuous (repeated) data stream and is also the
checkpoint interval: after an interruption, training restores the last
checkpoint (weights, optimizer moments, step) and skips the batches already
consumed, so it continues the same stream instead of starting over. At most
the steps since that checkpoint are lost.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from typing import Callable, Sequence

import keras
import tensorflow as tf

from gpt_keras import precision
from gpt_keras.config import GPTConfig
from gpt_keras.loop import custom_fit
from gpt_keras.model import GPTBackbone, GPTLMModel, GPTTaskModel, with_special_tokens
from gpt_keras.optim import OpenAIAdam, warmup_cosine, warmup_linear
from gpt_keras.transfer import DEFAULT_LORA_RANK, check_mode

log = logging.getLogger(__name__)

SCHEDULES = ("warmup_cosine", "warmup_linear", "constant")


@dataclasses.dataclass
class TrainSettings:
    """Optimisation settings. Defaults are the paper's fine-tuning values.

    `warmup` is a number of steps for `warmup_cosine` and a fraction of all
    steps for `warmup_linear`. `dtype_policy` is float32, mixed_bfloat16,
    mixed_float16 or "auto": bf16 where the machine computes it in hardware and
    the model is wide enough to gain (`gpt_keras.precision.resolve_policy`,
    resolved when the model is built); `jit_compile` None picks XLA or not by
    policy and device (`precision.default_jit_compile`).
    """

    learning_rate: float = 6.25e-5
    schedule: str = "warmup_linear"
    warmup: float = 0.002
    epochs: int = 3
    steps_per_epoch: int | None = None
    l2: float = 0.01
    decay_embeddings: bool = True
    max_grad_norm: float = 1.0
    checkpoint_dir: str | None = None
    log_dir: str | None = None
    jit_compile: bool | None = False
    dtype_policy: str = precision.AUTO
    verbose: str | int = "auto"
    loop: str = "auto"  # "fit", "custom" (strategy.run loop), or "auto": custom under multi-worker

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Unknown schedule {self.schedule!r}; expected one of {SCHEDULES}")
        if self.epochs <= 0 or (self.steps_per_epoch is not None and self.steps_per_epoch <= 0):
            raise ValueError("epochs and steps_per_epoch must be positive")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.loop not in ("auto", "fit", "custom"):
            raise ValueError(f"loop must be auto, fit or custom; got {self.loop!r}")
        precision.check_policy(self.dtype_policy, allow_auto=True)

    @property
    def use_xla(self) -> bool:
        """`jit_compile`, or the policy's default when it is None."""
        return precision.default_jit_compile(self.dtype_policy) if self.jit_compile is None else self.jit_compile

    def make_optimizer(self, total_steps: int) -> OpenAIAdam:
        if self.schedule == "warmup_cosine":
            lr = warmup_cosine(self.learning_rate, int(self.warmup), total_steps)
        elif self.schedule == "warmup_linear":
            lr = warmup_linear(self.learning_rate, total_steps, float(self.warmup))
        else:
            lr = self.learning_rate
        return OpenAIAdam(lr, l2=self.l2, decay_embeddings=self.decay_embeddings,
                          max_grad_norm=self.max_grad_norm,
                          dynamic_loss_scale=precision.needs_loss_scaling(self.dtype_policy))


@functools.lru_cache(maxsize=None)
def default_strategy() -> tf.distribute.Strategy:
    """`MirroredStrategy` over all local devices, one per process.

    With `TF_CONFIG` set (a cluster with workers), `MultiWorkerMirroredStrategy`.

    Cached because TF numbers collective ops per strategy instance: a second
    MirroredStrategy in the same process reuses the first one's collective
    keys and fails with "Shape mismatch in the collective instance". Callers
    passing their own strategy should likewise create it once.
    """
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    if len(cluster.get("worker", [])) + len(cluster.get("chief", [])) > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.MirroredStrategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes final artifacts (always, outside multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                              and "chief" not in resolver.cluster_spec().as_dict())


def _worker_dir(directory: str, strategy: tf.distribute.Strategy) -> str:
    """Non-chief workers write to a private scratch directory (removed after)."""
    if is_chief(strategy):
        return directory
    return os.path.join(directory, f".worker-{strategy.cluster_resolver.task_id}")


def pretrain(config: GPTConfig | GPTBackbone, train_data: tf.data.Dataset, settings: TrainSettings,
             val_data: tf.data.Dataset | None = None, strategy: tf.distribute.Strategy | None = None,
             callbacks: Sequence[keras.callbacks.Callback] = ()) -> tuple[GPTLMModel, keras.callbacks.History]:
    """Generative pre-training (L1) of a language model.

    Args:
      config: a `GPTConfig` (fresh weights) or a backbone to continue from.
        A fresh model has no special-token rows (`n_special=0`, whatever the
        config says): in pre-training they would only be wrong answers in the
        softmax, shrinking under weight decay; `finetune` adds them fresh,
        as the paper and the original code do.
      train_data: batches of {"token_ids", "padding_mask"} int32 [batch, len]
        (global batch size; the strategy splits it across replicas).
      settings: `TrainSettings`; the paper uses `warmup_cosine`, lr 2.5e-4, 2000 warmup steps.
        `settings.dtype_policy` chooses mixed precision for this model only:
        the returned model computes in it, saved weights stay float32.
    """
    cfg = config.config if isinstance(config, GPTBackbone) else config.replace(n_special=0)

    def build() -> GPTLMModel:
        return GPTLMModel(_fresh_backbone(cfg, config if isinstance(config, GPTBackbone) else None))

    return _fit(build, cfg, train_data, settings, val_data, strategy, callbacks)


def finetune(backbone: GPTBackbone, family: str, train_data: tf.data.Dataset, settings: TrainSettings,
             num_labels: int | None = None, num_choices: int | None = None, lm_weight: float = 0.5,
             val_data: tf.data.Dataset | None = None, strategy: tf.distribute.Strategy | None = None,
             callbacks: Sequence[keras.callbacks.Callback] = (), transfer: str = "full",
             lora_rank: int = DEFAULT_LORA_RANK, label_names: Sequence[str] | None = None,
             n_transfer: int | None = None, seed: int | None = None,
             ) -> tuple[GPTTaskModel, keras.callbacks.History]:
    """Discriminative fine-tuning with L3 = L2 + lm_weight * L1 (eq. 5).

    The pre-trained weights are copied into a new backbone built under the
    strategy (special-token rows are added when missing), so `backbone` itself
    is left untouched. Batches are {"token_ids", "padding_mask"} of shape
    [batch, n_sequences, len] plus "label" (or `(x, y)` pairs). `transfer`
    chooses what learns (`gpt_keras.transfer`: full, frozen, lora, layer_mix).
    Missing special-token rows are drawn N(0, 0.02) from `seed` (None: NumPy's
    global generator). `n_transfer` (the paper's Figure 2, the original's
    `--n_transfer`): the embeddings and the first n blocks keep the
    pre-trained weights, the other blocks start fresh; None transfers all.
    """
    source = transfer_blocks(with_special_tokens(backbone, seed=seed), n_transfer)
    cfg = source.config
    if check_mode(transfer, lora_rank) != "full":
        # The masked token embedding keeps its BPE rows only without weight decay.
        settings = dataclasses.replace(settings, decay_embeddings=False)

    def build() -> GPTTaskModel:
        return GPTTaskModel(_fresh_backbone(cfg, source), family, num_labels=num_labels,
                            num_choices=num_choices, lm_weight=lm_weight, label_names=label_names,
                            transfer=transfer, lora_rank=lora_rank)

    return _fit(build, cfg, train_data, settings, val_data, strategy, callbacks)


def transfer_blocks(backbone: GPTBackbone, n_transfer: int | None) -> GPTBackbone:
    """`backbone` with blocks `n_transfer`.. re-initialised (the embeddings
    always transfer, as in the original code); None or n_layer: as is. A
    pre-LN model's `ln_f` normalises the last block's output, so it starts
    fresh with that block (gain 1, shift 0) unless every block transfers."""
    n_layer = backbone.config.n_layer
    if n_transfer is None or n_transfer == n_layer:
        return backbone
    if isinstance(n_transfer, bool) or not isinstance(n_transfer, int) or not 0 <= n_transfer <= n_layer:
        raise ValueError(f"n_transfer must be an integer in 0..{n_layer} (blocks of this model), got {n_transfer!r}")
    fresh = GPTBackbone(**backbone.config.to_dict())  # initialised as the paper says: N(0, 0.02), zero biases
    fresh.embed.set_weights(backbone.embed.get_weights())
    for source, target in zip(backbone.blocks[:n_transfer], fresh.blocks):
        target.set_weights(source.get_weights())
    return fresh


def _fresh_backbone(cfg: GPTConfig, source: GPTBackbone | None) -> GPTBackbone:
    backbone = GPTBackbone(**cfg.to_dict())
    if source is not None:
        backbone.set_weights(source.get_weights())
    return backbone


def checked_dataset(data: tf.data.Dataset, config: GPTConfig) -> tf.data.Dataset:
    """Validate token ids and lengths in tf.data, outside the (possibly XLA) step,
    where an out-of-range gather would silently return a row."""
    limit = config.total_vocab_size

    def check(*batch):
        x = batch[0]
        ids = x["token_ids"]
        deps = [
            tf.debugging.assert_non_negative(ids, message="negative token id in the data"),
            tf.debugging.assert_less(ids, tf.cast(limit, ids.dtype),
                                     message=f"token id >= vocabulary size {limit}: the data was "
                                             "tokenized with a different vocabulary than the model"),
            tf.debugging.assert_less_equal(tf.shape(ids)[-1], config.n_ctx,
                                           message=f"sequence longer than n_ctx={config.n_ctx}"),
        ]
        with tf.control_dependencies(deps):
            out = tf.nest.map_structure(tf.identity, batch)
        return out if len(out) > 1 else out[0]

    return data.map(check)


def _fit(build: Callable[[], keras.Model], cfg: GPTConfig, train_data: tf.data.Dataset,
         settings: TrainSettings, val_data, strategy, callbacks):
    strategy = strategy or default_strategy()
    settings = dataclasses.replace(settings, dtype_policy=precision.resolve_policy(settings.dtype_policy, cfg.n_embd))
    steps_per_epoch = settings.steps_per_epoch or _cardinality(train_data)
    total_steps = steps_per_epoch * settings.epochs
    with strategy.scope():
        # The policy applies to this model only: later stages build float32.
        with precision.dtype_policy(settings.dtype_policy):
            model = build()
        optimizer = settings.make_optimizer(total_steps)
        # OpenAIAdam scales the loss itself (after the cross-replica sum), so
        # Keras must not wrap it in a LossScaleOptimizer under mixed_float16.
        model.compile(optimizer=optimizer, jit_compile=settings.use_xla, auto_scale_loss=False)
        optimizer.build(model.trainable_variables)

    manager = None
    initial_step = 0
    chief = is_chief(strategy)
    if settings.checkpoint_dir:
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
        # Every worker restores the chief's checkpoint; only the chief's saves are kept.
        latest = tf.train.latest_checkpoint(settings.checkpoint_dir)
        manager = tf.train.CheckpointManager(checkpoint, _worker_dir(settings.checkpoint_dir, strategy),
                                             max_to_keep=3)
        if latest:
            checkpoint.restore(latest).assert_existing_objects_matched()
            initial_step = int(optimizer.iterations.numpy())
            log.info("Resumed from %s at step %d", latest, initial_step)
            print(f"Resuming from {latest} (step {initial_step}/{total_steps})")
    if initial_step >= total_steps:
        return model, keras.callbacks.History()

    # A continuous stream: resuming skips exactly the batches already consumed.
    stream = checked_dataset(train_data, cfg).repeat().skip(initial_step)
    val = None if val_data is None else checked_dataset(val_data, cfg)
    all_callbacks = list(callbacks)
    if manager is not None:
        all_callbacks.append(_SaveCheckpoint(manager, optimizer, remove_after=not chief))
    if settings.log_dir and chief:
        all_callbacks.append(keras.callbacks.TensorBoard(settings.log_dir, update_freq="epoch"))
        all_callbacks.append(keras.callbacks.CSVLogger(os.path.join(settings.log_dir, "history.csv"),
                                                       append=initial_step > 0))
    fit_args = dict(epochs=settings.epochs, initial_epoch=initial_step // steps_per_epoch,
                    steps_per_epoch=steps_per_epoch, callbacks=all_callbacks, verbose=settings.verbose)
    custom = settings.loop == "custom" or (
        settings.loop == "auto" and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy))
    if custom:
        history = custom_fit(model, strategy, stream, validation_data=val, **fit_args)
    else:
        history = model.fit(stream, validation_data=val, shuffle=False, **fit_args)
    if settings.log_dir and chief:
        with open(os.path.join(settings.log_dir, "history.json"), "w") as f:
            json.dump(history.history, f, indent=2)
    return model, history


def _cardinality(data: tf.data.Dataset) -> int:
    n = int(data.cardinality().numpy())
    if n <= 0:
        raise ValueError("The dataset size is unknown or infinite; set TrainSettings.steps_per_epoch.")
    return n


class _SaveCheckpoint(keras.callbacks.Callback):
    """Checkpoint (weights + optimizer state + step) at the end of every epoch."""

    def __init__(self, manager: tf.train.CheckpointManager, optimizer: keras.optimizers.Optimizer,
                 remove_after: bool = False):
        super().__init__()
        self.manager, self.optimizer, self.remove_after = manager, optimizer, remove_after

    def on_epoch_end(self, epoch, logs=None):
        # All workers must save (it is a collective); non-chief copies are scratch.
        self.manager.save(checkpoint_number=int(self.optimizer.iterations.numpy()))
        if self.remove_after:
            tf.io.gfile.rmtree(self.manager.directory)

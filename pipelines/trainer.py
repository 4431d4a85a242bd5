"""The pipeline's trainer: a config section and data directories -> a saved model.

`pretrain(spec, start, ...)` and `finetune(spec, start, ...)` read the records
the preprocess stages wrote, turn the `PretrainSpec` or `FinetuneSpec` into
`gpt_keras.train.TrainSettings` (`train_settings`: passes and step caps become
steps and evaluation intervals), train under the default `tf.distribute`
strategy, save a model directory (chief only) and return a small typed result
for the stage to record. `start` is a `GPTConfig` (fresh weights) or a
`GPTBackbone` (weights to continue from, or to fine-tune).
"""
from __future__ import annotations

import dataclasses
import math
import os
import time

import keras
import tensorflow as tf

from gpt_keras import data as gk_data
from gpt_keras import saving
from gpt_keras import train
from gpt_keras.config import GPTConfig
from gpt_keras.model import GPTBackbone
from gpt_keras.tokenizer import GPTTokenizer
from gpt_keras.transfer import trainable_parameters
from pipelines.config.training import FinetuneSpec, OptimSpec, PretrainSpec

# Fine-tuning evaluates on the validation split at most this many times.
MAX_EVALUATIONS = 20


@dataclasses.dataclass(frozen=True)
class PretrainResult:
    """What one pre-training run did."""
    steps: int                    # optimizer steps taken
    planned_steps: int            # steps the config asked for
    stopped_by_time_budget: bool  # `pretrain.max_minutes` ended it early
    history: dict[str, list[float]]


@dataclasses.dataclass(frozen=True)
class FinetuneResult:
    """What one fine-tuning run did; the saved model is its best evaluation's."""
    history: dict[str, list[float]]
    trainable_parameters: int  # counted while training (a saved LoRA model is merged)
    train_examples: int        # labelled examples it trained on
    monitor: str               # the validation metric selected on: val_accuracy, or val_loss (regression)
    best: float | None         # its best value (None: never evaluated)

    @property
    def validation_score(self) -> float:
        """Higher is better: the best validation accuracy, or minus the best validation loss."""
        if self.best is None:
            return -math.inf
        return -self.best if self.monitor == "val_loss" else self.best


def train_settings(optim: OptimSpec, steps_per_pass: int, checkpoint_dir: str | None = None,
                   log_dir: str | None = None) -> train.TrainSettings:
    """An optimisation section -> `TrainSettings`: passes and step caps become
    (steps_per_epoch, epochs). Fine-tuning evaluates once per pass (every
    few passes when there are more than `MAX_EVALUATIONS`: a few hundred
    labelled examples make passes of a few steps) and runs at least
    `min_steps` (in whole passes);
    pre-training checkpoints every `steps_per_checkpoint` steps."""
    total = max(1, math.ceil(optim.epochs * steps_per_pass))
    if getattr(optim, "min_steps", 0) > total:  # fine-tuning: whole passes, so each ends with an evaluation
        total = math.ceil(optim.min_steps / steps_per_pass) * steps_per_pass
    if optim.max_steps:
        total = min(total, optim.max_steps)
    interval = (steps_per_pass * math.ceil(total / steps_per_pass / MAX_EVALUATIONS) if isinstance(optim, FinetuneSpec)
                else optim.steps_per_checkpoint)
    interval = max(1, min(interval, total))
    warmup = optim.warmup
    if optim.schedule == "warmup_cosine":
        warmup = min(int(warmup), max(0, math.ceil(total / interval) * interval - 1))
    return train.TrainSettings(
        learning_rate=optim.learning_rate, schedule=optim.schedule, warmup=warmup,
        epochs=math.ceil(total / interval), steps_per_epoch=interval, l2=optim.l2,
        max_grad_norm=optim.max_grad_norm, checkpoint_dir=checkpoint_dir, log_dir=log_dir,
        jit_compile=optim.jit_compile, dtype_policy=optim.dtype_policy)


def _capped(val, optim: OptimSpec):
    """The first `validation_batches` batches (always the same ones: the
    validation split is read unshuffled), so that frequent evaluations stay
    cheap; the evaluate stage still scores the whole split."""
    return val.take(optim.validation_batches) if optim.validation_batches else val


def _setup(seed: int, data_dir: str, vocab_dir: str):
    """(the data's metadata, the tokenizer, the strategy) of a run, with every random generator seeded."""
    keras.utils.set_random_seed(seed)
    # The vocabulary's files record their encoding mode; the datasets check the data's fingerprint against it.
    return gk_data.load_metadata(data_dir), GPTTokenizer.load(vocab_dir), train.default_strategy()


def pretrain(spec: PretrainSpec, start: GPTConfig | GPTBackbone, corpus_dir: str, vocab_dir: str, model_dir: str,
             log_dir: str, *, seed: int = 0, checkpoint_dir: str | None = None,
             snapshot_dir: str | None = None) -> PretrainResult:
    """Pre-train (L1) on the packed corpus in `corpus_dir` and save the LM's
    backbone, with the model's own dropout, to `model_dir`.

    `start`: a config (from scratch) or a backbone (continued pre-training).
    `checkpoint_dir`: where an interrupted run resumes from; `snapshot_dir`:
    where `spec.snapshots` log-spaced model directories go; `log_dir`:
    TensorBoard logs."""
    metadata, tokenizer, strategy = _setup(seed, corpus_dir, vocab_dir)
    config = start.config if isinstance(start, GPTBackbone) else start
    if config.vocab_size != tokenizer.n_vocab:
        raise ValueError(f"the model's vocab_size={config.vocab_size} disagrees with the tokenizer's "
                         f"{tokenizer.n_vocab} BPE tokens in {vocab_dir}")
    batch = spec.batch_size
    common = dict(expected_fingerprint=tokenizer.fingerprint, config=config)
    data = gk_data.pretrain_dataset(corpus_dir, "train", batch, shuffle=True, seed=seed, drop_remainder=True, **common)
    val = _capped(gk_data.pretrain_dataset(corpus_dir, "validation", batch, **common), spec)
    steps_per_pass = max(1, metadata.splits["train"].records // batch)
    settings = train_settings(spec, steps_per_pass, checkpoint_dir, log_dir)
    total = settings.epochs * settings.steps_per_epoch
    callbacks = []
    if snapshot_dir and spec.snapshots and train.is_chief(strategy):
        callbacks.append(Snapshots(snapshot_dir, snapshot_steps(total, spec.snapshots), tokenizer, config))
    budget = None
    if spec.max_minutes:
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):  # workers would stop at different steps
            raise ValueError("pretrain.max_minutes is for one machine; across workers set pretrain.max_steps")
        budget = TimeBudget(spec.max_minutes)
        callbacks.append(budget)
    if spec.dropout is not None:
        start = _with_dropout(start, spec.dropout)
    model, history = train.pretrain(start, data, settings, val_data=val, strategy=strategy, callbacks=callbacks)
    if train.is_chief(strategy):
        # Saved with the model's own dropout, which fine-tuning then uses.
        saving.save_model(_with_dropout(model.backbone, config), model_dir, tokenizer)
    steps = int(model.optimizer.iterations.numpy())
    stopped = bool(budget and budget.stopped)
    if stopped:
        print(f"pre-training stopped at step {steps} of {total}: pretrain.max_minutes={spec.max_minutes:g} "
              "was reached (a faster machine runs more steps; raise it or lower pretrain.max_steps)")
    return PretrainResult(steps, total, stopped, history.history)


class TimeBudget(keras.callbacks.Callback):
    """Stops training at the first step that ends past `minutes` of wall-clock
    time (counted from the start of training, compilation included)."""

    def __init__(self, minutes: float):
        super().__init__()
        self.seconds, self.stopped = minutes * 60.0, False

    def on_train_begin(self, logs=None):
        self._start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() - self._start > self.seconds:
            self.stopped = self.model.stop_training = True


def _with_dropout(start: GPTConfig | GPTBackbone, dropout: float | GPTConfig) -> GPTConfig | GPTBackbone:
    """`start` with the dropout rates of `dropout` (a rate, or a config's rates); a backbone keeps its weights."""
    rates = (dict(embd_pdrop=dropout, attn_pdrop=dropout, resid_pdrop=dropout) if isinstance(dropout, float)
             else {k: getattr(dropout, k) for k in ("embd_pdrop", "attn_pdrop", "resid_pdrop")})
    if isinstance(start, GPTConfig):
        return start.replace(**rates)
    backbone = GPTBackbone(**start.config.replace(**rates).to_dict())
    backbone.set_weights(start.get_weights())
    return backbone


def snapshot_steps(total: int, count: int) -> list[int]:
    """Step 0 and `count` log-spaced steps ending at `total` (e.g. 1000, 6 ->
    0, 10, 25, 63, 158, 398, 1000): pre-training changes fastest early on."""
    if count <= 0:
        return []
    start = min(10, total)
    fractions = [i / (count - 1) for i in range(count)] if count > 1 else [1.0]
    return [0] + sorted({round(start * (total / start) ** f) for f in fractions})


class Snapshots(keras.callbacks.Callback):
    """Saves the backbone as a model directory `step_<n>` at the given steps.

    On a resumed run, the snapshots of steps before the resume point are the
    ones the interrupted run wrote (if it got that far)."""

    def __init__(self, directory: str, steps: list[int], tokenizer: GPTTokenizer, config: GPTConfig):
        super().__init__()
        self.directory, self.steps, self.tokenizer, self.config = directory, set(steps), tokenizer, config

    def _save(self) -> None:
        step = int(self.model.optimizer.iterations.numpy())
        if step in self.steps:
            saving.save_model(_with_dropout(self.model.backbone, self.config),
                              os.path.join(self.directory, f"step_{step:07d}"), self.tokenizer)

    def on_train_begin(self, logs=None):
        self._save()

    def on_train_batch_end(self, batch, logs=None):
        self._save()


def finetune(spec: FinetuneSpec, start: GPTConfig | GPTBackbone, task_dir: str, vocab_dir: str, model_dir: str,
             log_dir: str, *, seed: int = 0, train_examples: int | None = None) -> FinetuneResult:
    """Fine-tune on the task records in `task_dir` and save the task model of
    the best evaluation on the validation split to `model_dir`.

    `start`: the pre-trained backbone, or a config (the ablation: the same
    architecture without pre-training). `seed` draws the head, the
    special-token rows, dropout and the order of batches (and, with
    `train_examples`, which training examples are used: unset, all of them).
    `log_dir`: TensorBoard logs and the best weights so far."""
    metadata, tokenizer, strategy = _setup(seed, task_dir, vocab_dir)
    pretrained = isinstance(start, GPTBackbone)
    if spec.dropout is not None:
        start = _with_dropout(start, float(spec.dropout))
    backbone = start if pretrained else GPTBackbone(**start.to_dict())
    batch = spec.batch_size
    # Under XLA every new shape compiles anew: pad batches to one length.
    common = dict(expected_family=metadata.family, expected_fingerprint=tokenizer.fingerprint,
                  config=backbone.config, pad_to_max_length=spec.jit_compile)
    # Without XLA, batches of similar lengths: about 1.6x fewer padded tokens on Rotten Tomatoes.
    data = gk_data.task_dataset(task_dir, "train", batch, shuffle=True, seed=seed,
                                group_by_length=not spec.jit_compile, examples=train_examples, subset_seed=seed,
                                **common)
    val = _capped(gk_data.task_dataset(task_dir, "validation", batch, **common), spec)
    examples = min(metadata.splits["train"].records, train_examples or math.inf)
    settings = train_settings(spec, math.ceil(examples / batch), None, log_dir)
    monitor, mode = ("val_loss", "min") if metadata.is_regression else ("val_accuracy", "max")
    best_path = os.path.join(log_dir, "best.weights.h5")
    callbacks = [keras.callbacks.ModelCheckpoint(best_path, monitor=monitor, save_best_only=True,
                                                 save_weights_only=True, mode=mode)]
    if spec.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, mode=mode,
                                                       patience=spec.early_stopping_patience))
    classes = metadata.is_regression or metadata.family == "multiple_choice"
    model, history = train.finetune(
        backbone, metadata.family, data, settings, num_labels=None if classes else len(metadata.label_names),
        num_choices=metadata.num_choices, lm_weight=spec.lm_weight, val_data=val, strategy=strategy,
        callbacks=callbacks, label_names=None if classes else metadata.label_names, transfer=spec.transfer,
        lora_rank=spec.lora_rank, n_transfer=spec.n_transfer if pretrained else None, seed=seed)
    if os.path.exists(best_path):  # keep the best epoch by the validation metric
        model.load_weights(best_path)
    if train.is_chief(strategy):
        saving.save_model(model, model_dir, tokenizer, vocabulary_format="hf")
    scores = history.history.get(monitor, [])
    best = (min(scores) if metadata.is_regression else max(scores)) if scores else None
    return FinetuneResult(history.history, trainable_parameters(model), examples, monitor, best)

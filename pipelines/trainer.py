"""The trainer, in TFX's `run_fn(fn_args)` convention.

TFX's Trainer component (and Vertex pipelines built on it) import a module
file and call `run_fn(fn_args)`, where `fn_args` carries `train_files`,
`eval_files`, `serving_model_dir`, `model_run_dir`, `train_steps` and a
`custom_config` dict. This module follows that shape without depending on
tfx (it does not install here): the runner's `pretrain` and `finetune/<task>`
stages call `run_fn` with the experiment config's typed sections as they are.

custom_config keys:
  mode: "pretrain" | "finetune"
  optim: the `OptimSpec` (pretrain) or `FinetuneSpec` (finetune) section
  model: the `GPTConfig` to train (pretrain), or to build the ablation from
         when `init_model_dir` is "" (finetune)
  init_model_dir: the model directory to start from: the pre-trained model
         (finetune; "" = no pre-training), or a released one to continue (pretrain)
  vocab_dir: tokenizer directory
  checkpoint_dir, seed
  train_examples: fine-tune on only this many training examples, drawn with
         `seed` (finetune; unset: all of them)

A TFX pipeline, whose custom_config travels as JSON, may pass `optim` and
`model` as plain dicts; they are read into the same types.
"""
from __future__ import annotations

import dataclasses
import math
import time
import os
from typing import Any

import keras
import tensorflow as tf

from gpt_keras import data as gk_data
from gpt_keras.config import GPTConfig
from gpt_keras import saving
from gpt_keras.transfer import trainable_parameters
from gpt_keras.model import GPTBackbone
from gpt_keras.tokenizer import GPTTokenizer
from gpt_keras.train import TrainSettings, finetune, is_chief, default_strategy, pretrain
from pipelines.config import FinetuneSpec, OptimSpec, PretrainSpec, build_section


@dataclasses.dataclass
class FnArgs:
    """The subset of `tfx.components.FnArgs` that this trainer reads."""
    train_files: list[str]
    eval_files: list[str]
    serving_model_dir: str
    model_run_dir: str
    train_steps: int | None = None
    custom_config: dict[str, Any] = dataclasses.field(default_factory=dict)


def _data_dir(files) -> str:
    # TFX passes lists of file patterns; ours name a preprocessed directory.
    path = files[0] if isinstance(files, (list, tuple)) else files
    return path if os.path.isdir(path) else os.path.dirname(path)


# Fine-tuning evaluates on the validation split at most this many times.
MAX_EVALUATIONS = 20


def train_settings(optim: OptimSpec, steps_per_pass: int, train_steps: int | None = None,
                   checkpoint_dir: str | None = None, log_dir: str | None = None) -> TrainSettings:
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
    if train_steps:
        total = train_steps
    interval = (steps_per_pass * math.ceil(total / steps_per_pass / MAX_EVALUATIONS) if isinstance(optim, FinetuneSpec)
                else optim.steps_per_checkpoint)
    interval = max(1, min(interval, total))
    warmup = optim.warmup
    if optim.schedule == "warmup_cosine":
        warmup = min(int(warmup), max(0, math.ceil(total / interval) * interval - 1))
    return TrainSettings(
        learning_rate=optim.learning_rate, schedule=optim.schedule, warmup=warmup,
        epochs=math.ceil(total / interval), steps_per_epoch=interval, l2=optim.l2,
        max_grad_norm=optim.max_grad_norm, checkpoint_dir=checkpoint_dir, log_dir=log_dir,
        jit_compile=optim.jit_compile, dtype_policy=optim.dtype_policy)


def _capped(val, optim: OptimSpec):
    """The first `validation_batches` batches (always the same ones: the
    validation split is read unshuffled), so that frequent evaluations stay
    cheap; the evaluate stage still scores the whole split."""
    return val.take(optim.validation_batches) if optim.validation_batches else val


def run_fn(fn_args: FnArgs) -> dict[str, Any]:
    """Train as `fn_args.custom_config["mode"]` says; writes the model to
    `fn_args.serving_model_dir` (chief only) and returns a small summary."""
    cc = fn_args.custom_config
    mode = cc["mode"]
    if mode not in ("pretrain", "finetune"):
        raise ValueError(f"custom_config['mode'] must be 'pretrain' or 'finetune', got {mode!r}")
    optim = cc["optim"]
    if isinstance(optim, dict):
        optim = build_section(FinetuneSpec if mode == "finetune" else PretrainSpec, optim, "optim")
    model = cc.get("model")
    if isinstance(model, dict):
        model = GPTConfig.from_dict(model)
    seed = cc.get("seed", 0)
    keras.utils.set_random_seed(seed)
    train_dir = _data_dir(fn_args.train_files)
    metadata = gk_data.load_metadata(train_dir)
    # The vocabulary's files record their encoding mode; the data's fingerprint is checked below.
    tokenizer = GPTTokenizer.load(cc["vocab_dir"])
    strategy = default_strategy()
    if mode == "pretrain":
        if cc.get("init_model_dir"):  # continued pre-training of a released (or earlier) model
            model = saving.load_backbone(cc["init_model_dir"])
        return _pretrain(fn_args, model, optim, seed, cc.get("checkpoint_dir"), tokenizer, metadata, strategy)
    return _finetune(fn_args, model, optim, seed, cc.get("init_model_dir", ""), tokenizer, metadata, strategy,
                     cc.get("train_examples"))


def _pretrain(fn_args: FnArgs, start: GPTConfig | GPTBackbone, optim: OptimSpec, seed: int,
              checkpoint_dir: str | None, tokenizer: GPTTokenizer, metadata, strategy) -> dict:
    config = start.config if isinstance(start, GPTBackbone) else start
    if config.vocab_size != tokenizer.n_vocab:
        raise ValueError(f"custom_config['model'].vocab_size={config.vocab_size} disagrees with the tokenizer's "
                         f"{tokenizer.n_vocab} BPE tokens in {fn_args.custom_config['vocab_dir']}")
    train_dir, eval_dir = _data_dir(fn_args.train_files), _data_dir(fn_args.eval_files)
    batch = optim.batch_size
    common = dict(expected_fingerprint=tokenizer.fingerprint, config=config)
    train = gk_data.pretrain_dataset(train_dir, "train", batch, shuffle=True, seed=seed, drop_remainder=True, **common)
    val = _capped(gk_data.pretrain_dataset(eval_dir, "validation", batch, **common), optim)
    steps_per_pass = max(1, metadata.splits["train"].records // batch)
    settings = train_settings(optim, steps_per_pass, fn_args.train_steps, checkpoint_dir, fn_args.model_run_dir)
    total = settings.epochs * settings.steps_per_epoch
    callbacks = []
    snapshot_dir = fn_args.custom_config.get("snapshot_dir")
    if snapshot_dir and optim.snapshots and is_chief(strategy):
        callbacks.append(Snapshots(snapshot_dir, snapshot_steps(total, optim.snapshots), tokenizer, config))
    budget = None
    if optim.max_minutes:
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):  # workers would stop at different steps
            raise ValueError("pretrain.max_minutes is for one machine; across workers set pretrain.max_steps")
        budget = TimeBudget(optim.max_minutes)
        callbacks.append(budget)
    if optim.dropout is not None:
        start = _with_dropout(start, optim.dropout)
    model, history = pretrain(start, train, settings, val_data=val, strategy=strategy, callbacks=callbacks)
    if is_chief(strategy):
        # Saved with the model's own dropout, which fine-tuning then uses.
        saving.save_model(_with_dropout(model.backbone, config), fn_args.serving_model_dir, tokenizer)
    steps = int(model.optimizer.iterations.numpy())
    if budget is not None and budget.stopped:
        print(f"pre-training stopped at step {steps} of {total}: pretrain.max_minutes={optim.max_minutes:g} "
              "was reached (a faster machine runs more steps; raise it or lower pretrain.max_steps)")
    return {"steps": steps, "planned_steps": total, "stopped_by_time_budget": bool(budget and budget.stopped),
            "history": history.history}


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


def _finetune(fn_args: FnArgs, config: GPTConfig | None, optim: FinetuneSpec, seed: int, init_model_dir: str,
              tokenizer: GPTTokenizer, metadata, strategy, train_examples: int | None = None) -> dict:
    if init_model_dir:
        backbone = saving.load_backbone(init_model_dir)
    else:  # the ablation: same architecture, no pre-training
        backbone = GPTBackbone(**config.to_dict())
    train_dir = _data_dir(fn_args.train_files)
    batch = optim.batch_size
    # Under XLA every new shape compiles anew: pad batches to one length.
    common = dict(expected_family=metadata.family, expected_fingerprint=tokenizer.fingerprint,
                  config=backbone.config, pad_to_max_length=optim.jit_compile)
    # Without XLA, batches of similar lengths: about 1.6x fewer padded tokens on Rotten Tomatoes.
    train = gk_data.task_dataset(train_dir, "train", batch, shuffle=True, seed=seed,
                                 group_by_length=not optim.jit_compile, examples=train_examples, subset_seed=seed,
                                 **common)
    val = _capped(gk_data.task_dataset(train_dir, "validation", batch, **common), optim)
    examples = min(metadata.splits["train"].records, train_examples or math.inf)
    steps_per_pass = math.ceil(examples / batch)
    settings = train_settings(optim, steps_per_pass, fn_args.train_steps, None, fn_args.model_run_dir)
    monitor, mode = ("val_loss", "min") if metadata.is_regression else ("val_accuracy", "max")
    best_path = os.path.join(fn_args.model_run_dir, "best.weights.h5")
    callbacks = [keras.callbacks.ModelCheckpoint(best_path, monitor=monitor, save_best_only=True,
                                                 save_weights_only=True, mode=mode)]
    if optim.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, mode=mode,
                                                       patience=optim.early_stopping_patience))
    classes = metadata.is_regression or metadata.family == "multiple_choice"
    model, history = finetune(
        backbone, metadata.family, train, settings, num_labels=None if classes else len(metadata.label_names),
        num_choices=metadata.num_choices, lm_weight=optim.lm_weight, val_data=val, strategy=strategy,
        callbacks=callbacks, label_names=None if classes else metadata.label_names, transfer=optim.transfer,
        lora_rank=optim.lora_rank, n_transfer=optim.n_transfer if init_model_dir else None, seed=seed)
    if os.path.exists(best_path):  # keep the best epoch by the validation metric
        model.load_weights(best_path)
    if is_chief(strategy):
        saving.save_model(model, fn_args.serving_model_dir, tokenizer, vocabulary_format="hf")
    best = history.history.get(monitor, [])
    return {"steps": settings.epochs * settings.steps_per_epoch, "history": history.history,
            "trainable_parameters": trainable_parameters(model), "train_examples": examples,
            "best_" + monitor: (min(best) if metadata.is_regression else max(best)) if best else None}

"""The trainer, in TFX's `run_fn(fn_args)` convention.

TFX's Trainer component (and Vertex pipelines built on it) import a module
file and call `run_fn(fn_args)`, where `fn_args` carries `train_files`,
`eval_files`, `serving_model_dir`, `model_run_dir`, `train_steps` and a
`custom_config` dict. This module follows that shape without depending on
tfx (it does not install here): the runner's `pretrain` and `finetune`
stages call `run_fn` with a `FnArgs` built from the experiment config, and a
TFX pipeline can pass its own `fn_args` with the same fields.

custom_config keys:
  mode: "pretrain" | "finetune"
  model: {"preset": str, "overrides": {...}}     (pretrain)
  init_model_dir: project-format backbone dir      (finetune; "" = no pre-training)
  vocab_dir: tokenizer directory
  optim: OptimSpec / FinetuneSpec fields as a dict
  checkpoint_dir, seed
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import keras

from gpt_keras import data as gk_data
from gpt_keras.config import GPTConfig
from gpt_keras.convert import load_pretrained, save_pretrained
from gpt_keras.model import GPTBackbone
from gpt_keras.tokenizer import GPTTokenizer
from gpt_keras.train import TrainSettings, finetune, is_chief, default_strategy, pretrain


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


def _settings(optim: dict, steps_per_pass: int, train_steps: int | None, checkpoint_dir: str | None,
              log_dir: str, evaluate_every_pass: bool) -> TrainSettings:
    """Turn passes/step caps into (steps_per_epoch, epochs) for `TrainSettings`."""
    total = max(1, math.ceil(optim["epochs"] * steps_per_pass))
    if optim.get("max_steps"):
        total = min(total, optim["max_steps"])
    if train_steps:
        total = train_steps
    # Fine-tuning evaluates once per pass; pre-training checkpoints every N steps.
    interval = steps_per_pass if evaluate_every_pass else optim["steps_per_checkpoint"]
    interval = max(1, min(interval, total))
    warmup = optim["warmup"]
    if optim["schedule"] == "warmup_cosine":
        warmup = min(int(warmup), max(0, math.ceil(total / interval) * interval - 1))
    return TrainSettings(
        learning_rate=optim["learning_rate"], schedule=optim["schedule"], warmup=warmup,
        epochs=math.ceil(total / interval), steps_per_epoch=interval, l2=optim["l2"],
        max_grad_norm=optim["max_grad_norm"], checkpoint_dir=checkpoint_dir, log_dir=log_dir,
        jit_compile=optim.get("jit_compile", False), verbose=optim.get("verbose", "auto"))


def _capped(val, optim: dict):
    """The first `validation_batches` batches (always the same ones: the
    validation split is read unshuffled), so that frequent evaluations stay
    cheap; the evaluate stage still scores the whole split."""
    n = optim.get("validation_batches") or 0
    return val.take(n) if n else val


def run_fn(fn_args: FnArgs) -> dict[str, Any]:
    """Train as `fn_args.custom_config["mode"]` says; writes the model to
    `fn_args.serving_model_dir` (chief only) and returns a small summary."""
    cc = fn_args.custom_config
    keras.utils.set_random_seed(cc.get("seed", 0))
    train_dir, eval_dir = _data_dir(fn_args.train_files), _data_dir(fn_args.eval_files)
    # The data records which encoding mode produced its ids; train with the same.
    tokenizer = GPTTokenizer.load(cc["vocab_dir"], mode=gk_data.load_metadata(train_dir).vocab.mode)
    optim = cc["optim"]
    strategy = default_strategy()
    if cc["mode"] == "pretrain":
        return _pretrain(fn_args, cc, tokenizer, train_dir, eval_dir, optim, strategy)
    if cc["mode"] == "finetune":
        return _finetune(fn_args, cc, tokenizer, train_dir, optim, strategy)
    raise ValueError(f"custom_config['mode'] must be 'pretrain' or 'finetune', got {cc['mode']!r}")


def _pretrain(fn_args, cc, tokenizer, train_dir, eval_dir, optim, strategy) -> dict:
    metadata = gk_data.load_metadata(train_dir)
    model_cfg = cc["model"]
    overrides = {"n_ctx": metadata.max_length, **model_cfg.get("overrides", {}), "vocab_size": tokenizer.n_vocab}
    config = GPTConfig.from_preset(model_cfg["preset"], **overrides)
    batch = optim["batch_size"]
    common = dict(expected_fingerprint=tokenizer.fingerprint, config=config)
    train = gk_data.pretrain_dataset(train_dir, "train", batch, shuffle=True, seed=cc.get("seed", 0),
                                     drop_remainder=True, **common)
    val = _capped(gk_data.pretrain_dataset(eval_dir, "validation", batch, **common), optim)
    steps_per_pass = max(1, metadata.splits["train"].records // batch)
    settings = _settings(optim, steps_per_pass, fn_args.train_steps, cc.get("checkpoint_dir"),
                         fn_args.model_run_dir, evaluate_every_pass=False)
    model, history = pretrain(config, train, settings, val_data=val, strategy=strategy)
    if is_chief(strategy):
        save_pretrained(model.backbone, fn_args.serving_model_dir, tokenizer)
    return {"steps": settings.epochs * settings.steps_per_epoch, "history": history.history}


def _finetune(fn_args, cc, tokenizer, train_dir, optim, strategy) -> dict:
    metadata = gk_data.load_metadata(train_dir)
    if cc.get("init_model_dir"):
        backbone, _ = load_pretrained(cc["init_model_dir"])
    else:  # the ablation: same architecture, no pre-training
        config = GPTConfig.from_dict(cc["backbone_config"])
        backbone = GPTBackbone(**config.to_dict())
    batch = optim["batch_size"]
    # Under XLA every new shape compiles anew: pad batches to one length.
    common = dict(expected_family=metadata.family, expected_fingerprint=tokenizer.fingerprint,
                  config=backbone.config, pad_to_max_length=bool(optim.get("jit_compile")))
    train = gk_data.task_dataset(train_dir, "train", batch, shuffle=True, seed=cc.get("seed", 0), **common)
    val = _capped(gk_data.task_dataset(train_dir, "validation", batch, **common), optim)
    steps_per_pass = math.ceil(metadata.splits["train"].records / batch)
    settings = _settings(optim, steps_per_pass, fn_args.train_steps, None, fn_args.model_run_dir,
                         evaluate_every_pass=True)
    monitor, mode = ("val_loss", "min") if metadata.is_regression else ("val_accuracy", "max")
    best_path = os.path.join(fn_args.model_run_dir, "best.weights.h5")
    callbacks = [keras.callbacks.ModelCheckpoint(best_path, monitor=monitor, save_best_only=True,
                                                 save_weights_only=True, mode=mode)]
    if optim.get("early_stopping_patience"):
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, mode=mode,
                                                       patience=optim["early_stopping_patience"]))
    model, history = finetune(
        backbone, metadata.family, train, settings, num_labels=None if metadata.is_regression or
        metadata.family == "multiple_choice" else len(metadata.label_names), num_choices=metadata.num_choices,
        lm_weight=optim["lm_weight"], val_data=val, strategy=strategy, callbacks=callbacks)
    if os.path.exists(best_path):  # keep the best epoch by the validation metric
        model.load_weights(best_path)
    if is_chief(strategy):
        os.makedirs(fn_args.serving_model_dir, exist_ok=True)
        model.save(os.path.join(fn_args.serving_model_dir, "model.keras"))
        tokenizer.save(fn_args.serving_model_dir, format="hf")
    best = history.history.get(monitor, [])
    return {"steps": settings.epochs * settings.steps_per_epoch, "history": history.history,
            "best_" + monitor: (min(best) if metadata.is_regression else max(best)) if best else None}

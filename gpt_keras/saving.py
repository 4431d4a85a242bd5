"""The one model directory: what every stage, CLI and `from_preset(dir)` reads and writes.

    <dir>/config.json            {"format": "gpt_keras", "format_version": 2, "class_name": ..., "module": ...,
                                  "config": GPTConfig fields, "task": {"class_name": ..., "module": ...}}
    <dir>/model.weights.h5       the backbone's weights (Keras)
    <dir>/<vocabulary files>     the tokenizer's files; `gpt_keras_tokenizer.json` records its mode
                                 and fingerprint (written by `GPTTokenizer.save`)
    <dir>/task.json              fine-tuned models only: family, num_labels, num_choices, label_names, lm_weight,
                                 transfer (never lora: LoRA is merged into the kernels before saving)
    <dir>/task.weights.h5        fine-tuned models only: the head's weights

A fine-tuned directory is also a pre-trained one: its backbone loads on its
own (`GPTBackbone.from_preset(dir)`), so a fine-tuned model can be the start
of another fine-tuning.

Why not keras-hub's preset layout? Its `config.json` is the whole serialized
Keras object and its tokenizer is a Keras layer; this project's tokenizer must
stay importable without Keras (Beam workers), and a keras-hub `config.json`
would be indistinguishable from a HF one for `detect_format`. The file names
follow keras-hub's where they mean the same thing, and so does the rebuilding
(below).

Only this layout (format_version 2) is read. Foreign formats (the original
release, HF `openai-gpt`) are `gpt_keras.convert`'s.

This module sits below the models it writes and reads: it never imports
`gpt_keras.model`. `config.json` names the backbone's class (and, for a
fine-tuned model, the task model's) by its Keras registered name
(`keras.saving.register_keras_serializable(package="gpt_keras")`) and the
module that registers it, and a model is rebuilt as `cls.from_config(config)`
from Keras' registry, as keras-hub's `preset_utils` does. When that module has
not been imported yet, it is imported by the name the file records (Keras'
own deserializer does the same for Keras' modules), so `load_model(dir)`
works from a bare `from gpt_keras import saving`. Directories written before
the class names were recorded (the shipped `demo_imdb`) carry none: theirs are
the backbone, and the task model where `task.json` is present.
"""
from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any, Sequence, Union

import h5py
import keras
import numpy as np

from gpt_keras import transfer
from gpt_keras.config import GPTConfig
from gpt_keras.preprocessor import check_tokenizer

PathLike = Union[str, "os.PathLike[str]"]
FORMAT = "gpt_keras"
FORMAT_VERSION = 2
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
TASK_FILE = "task.json"
TASK_WEIGHTS_FILE = "task.weights.h5"
# The classes of a directory that names none (written before they were recorded).
LEGACY_BACKBONE_CLASS = {"class_name": "gpt_keras>GPTBackbone", "module": "gpt_keras.model"}
LEGACY_TASK_CLASS = {"class_name": "gpt_keras>GPTTaskModel", "module": "gpt_keras.model"}


class ModelDirectoryError(ValueError):
    """A checkpoint directory that cannot be read (missing or bad files, wrong
    format); `gpt_keras.convert.ConversionError` is the same class."""


def detect_format(path: PathLike) -> str:
    """'gpt_keras', 'hf' or 'original' for a checkpoint directory."""
    path = Path(path)
    if not path.is_dir():
        raise ModelDirectoryError(f"{path} is not a directory")
    if (path / "params_shapes.json").is_file():
        return "original"
    if (path / CONFIG_FILE).is_file():
        return "gpt_keras" if _read_json(path / CONFIG_FILE).get("format") == FORMAT else "hf"
    raise ModelDirectoryError(f"{path} is neither an original release (params_shapes.json), a HF checkpoint "
                              "nor a gpt_keras model (config.json)")


# ---- write -------------------------------------------------------------------

def save_model(model: Any, directory: PathLike, tokenizer: Any = None, vocabulary_format: str = "original") -> Path:
    """Writes `model` (a `GPTBackbone`, a `GPTLMModel` or a fine-tuned
    `GPTTaskModel`) and its tokenizer as one model directory; returns its path.

    What is asked of `model`: a backbone is one (it has `config`); a language
    or task model has `backbone`; a task model has `task_section()` (what
    `task.json` records) and its head's weights are its own weights that are
    not the backbone's.

    The tokenizer is required in practice (every reader needs it to turn text
    into ids); `None` writes weights only, for converted checkpoints that
    carry no vocabulary.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    is_task = callable(getattr(model, "task_section", None))
    if is_task:
        # LoRA adapters are written into the kernels first, so the task section
        # describes the plain model saved: it reloads without adapters.
        model = transfer.merged(model)
    task = model.task_section() if is_task else None
    backbone = getattr(model, "backbone", model)
    if tokenizer is not None:
        check_tokenizer(tokenizer, backbone.config)
    backbone.save_weights(str(directory / WEIGHTS_FILE))
    if tokenizer is not None:
        tokenizer.save(str(directory), format=vocabulary_format)
    for stale in (TASK_FILE, TASK_WEIGHTS_FILE):
        (directory / stale).unlink(missing_ok=True)
    if task is not None:
        _write_json(directory / TASK_FILE, task)
        _save_head(model, directory / TASK_WEIGHTS_FILE)
    # config.json last: a directory without it is not mistaken for a finished model.
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **_class_of(backbone),
            "config": backbone.config.to_dict()}
    if task is not None:
        meta["task"] = _class_of(model)
    _write_json(directory / CONFIG_FILE, meta)
    return directory


def _class_of(obj: Any) -> dict[str, str]:
    """How `config.json` names the class of `obj`: its Keras registered name and module."""
    return {"class_name": keras.saving.get_registered_name(type(obj)), "module": type(obj).__module__}


def _head_weights(model: Any) -> dict[str, Any]:
    """The task model's own variables (not the backbone's), by path below the model."""
    backbone = {id(v) for v in model.backbone.weights}
    return {v.path.split("/", 1)[-1]: v for v in model.weights if id(v) not in backbone}


def _save_head(model: Any, path: Path) -> None:
    with h5py.File(path, "w") as f:
        for name, variable in _head_weights(model).items():
            f.create_dataset(name, data=np.asarray(variable.numpy()))


def _load_head(model: Any, path: Path) -> None:
    wanted, stored = _head_weights(model), {}

    def read(name: str, item: Any) -> None:
        if isinstance(item, h5py.Dataset):
            stored[name] = item[()]

    if not path.is_file():
        raise ModelDirectoryError(f"{path} is missing; the model was not saved completely")
    with h5py.File(path, "r") as f:
        f.visititems(read)
    if set(stored) != set(wanted):
        raise ModelDirectoryError(f"{path}: holds head weights {sorted(stored)}, but the model in {TASK_FILE} has "
                                  f"{sorted(wanted)}; the directory is inconsistent, re-save the model")
    for name, variable in wanted.items():
        if tuple(stored[name].shape) != tuple(variable.shape):
            raise ModelDirectoryError(f"{path}: {name} has shape {stored[name].shape}, expected {variable.shape}")
        variable.assign(stored[name])


# ---- read --------------------------------------------------------------------

def read_config(directory: PathLike) -> GPTConfig:
    """The backbone config of a model directory (no weights are read)."""
    return GPTConfig.from_dict(_model_meta(Path(directory))["config"])


def read_task(directory: PathLike) -> dict[str, Any] | None:
    """The task section of a fine-tuned model directory, or None for a pre-trained one."""
    path = Path(directory) / TASK_FILE
    return _read_json(path) if path.is_file() else None


def load_backbone(directory: PathLike) -> Any:
    """The backbone (`GPTBackbone`) of a model directory (pre-trained or
    fine-tuned), with its weights."""
    directory = Path(directory)
    meta = _model_meta(directory)
    named = {k: meta[k] for k in LEGACY_BACKBONE_CLASS if k in meta} or LEGACY_BACKBONE_CLASS
    backbone = _registered_class(directory, named).from_config(GPTConfig.from_dict(meta["config"]).to_dict())
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelDirectoryError(f"{directory}: {WEIGHTS_FILE} is missing; the model was not saved completely")
    backbone.load_weights(str(weights))
    return backbone


def load_tokenizer(directory: PathLike) -> Any:
    """The tokenizer saved in a model directory (None when it has no vocabulary)."""
    from gpt_keras.tokenizer import GPTTokenizer, vocab_io  # pylint: disable=g-import-not-at-top

    directory = Path(directory)
    try:
        vocab_io.find_files(str(directory))
    except FileNotFoundError:
        return None
    return GPTTokenizer.load(str(directory))


def load_task_model(directory: PathLike) -> Any:
    """The fine-tuned task model (`GPTTaskModel`) of a directory that has a task section."""
    directory = Path(directory)
    task = read_task(directory)
    if task is None:
        raise ModelDirectoryError(f"{directory} holds a pre-trained model without a task head ({TASK_FILE}); "
                                  "give the head: GPTTaskModel.from_preset(dir, family=..., num_labels=...)")
    backbone = load_backbone(directory)
    cls = _registered_class(directory, _model_meta(directory).get("task") or LEGACY_TASK_CLASS)
    model = cls.from_config({**task, "backbone": backbone})
    _load_head(model, directory / TASK_WEIGHTS_FILE)
    return model


def _registered_class(directory: Path, named: Any) -> Any:
    """The class `config.json` names ({"class_name": registered name, "module": ...}),
    from Keras' registry; its module is imported first when it has not been
    (only a module of this package)."""
    if not isinstance(named, dict) or not isinstance(named.get("class_name"), str):
        raise ModelDirectoryError(f"{directory / CONFIG_FILE}: a class is named by {{'class_name', 'module'}}, "
                                  f"got {named!r}")
    cls = keras.saving.get_registered_object(named["class_name"])
    module = named.get("module")
    if cls is None and isinstance(module, str) and module.partition(".")[0] == FORMAT:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ModelDirectoryError(f"{directory}: the module {module!r} of {named['class_name']} "
                                      f"cannot be imported ({err})") from None
        cls = keras.saving.get_registered_object(named["class_name"])
    if cls is None:
        raise ModelDirectoryError(f"{directory}: no class is registered as {named['class_name']!r} "
                                  f"(module {module!r}); import the module that defines it first")
    return cls


def is_fine_tuned(directory: PathLike) -> bool:
    """True when the directory holds a task head (a fine-tuned model)."""
    return (Path(directory) / TASK_FILE).is_file()


def load_model(directory: PathLike) -> tuple[Any, Any]:
    """(model, tokenizer): a `GPTTaskModel` when the directory has a task
    section, else its `GPTBackbone`."""
    model = load_task_model(directory) if is_fine_tuned(directory) else load_backbone(directory)
    return model, load_tokenizer(directory)


def _model_meta(directory: Path) -> dict[str, Any]:
    if not directory.is_dir():
        raise ModelDirectoryError(f"model directory not found: {directory}")
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise ModelDirectoryError(f"{directory} has no {CONFIG_FILE}: it is not a gpt_keras model directory "
                                  "(foreign checkpoints: python -m gpt_keras.convert import SRC DST)")
    meta = _read_json(path)
    if meta.get("format") != FORMAT:
        raise ModelDirectoryError(f"{directory} is not a gpt_keras model directory (a HF checkpoint? convert it: "
                                  "python -m gpt_keras.convert import SRC DST)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelDirectoryError(f"{directory} has format_version {meta.get('format_version')!r}; this gpt_keras "
                                  f"reads format_version {FORMAT_VERSION} only")
    if not isinstance(meta.get("config"), dict):
        raise ModelDirectoryError(f"{path} has no 'config' object")
    return meta


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelDirectoryError(f"{path} is not readable JSON ({err}); the model directory is damaged") from None
    if not isinstance(value, dict):
        raise ModelDirectoryError(f"{path} must hold a JSON object")
    return value


def _write_json(path: Path, value: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")


__all__: Sequence[str] = ["save_model", "load_model", "load_backbone", "load_task_model", "load_tokenizer",
                          "read_config", "read_task", "detect_format", "is_fine_tuned",
                          "ModelDirectoryError"]

"""gpt_keras: GPT-1 (Radford et al., 2018) generative pre-training and
discriminative fine-tuning in TensorFlow/Keras.

The public names are loaded on first use (PEP 562), so that light modules
(`gpt_keras.tokenizer`, `gpt_keras.schema`) import without TensorFlow or Keras:
Beam workers that only tokenize and pack start in well under a second.
"""
import importlib as _importlib
import os as _os

_os.environ.setdefault("KERAS_BACKEND", "tensorflow")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# public name -> the module that defines it
_LAZY = {
    "GPTConfig": "gpt_keras.config", "PRESETS": "gpt_keras.config", "SPECIAL_TOKENS": "gpt_keras.config",
    "GPTBackbone": "gpt_keras.model", "GPTLMModel": "gpt_keras.model", "GPTTaskModel": "gpt_keras.model",
    "with_special_tokens": "gpt_keras.model",
    "TaskFamily": "gpt_keras.tasks", "build_inputs": "gpt_keras.tasks",
    "TaskPreprocessor": "gpt_keras.preprocessor", "predict": "gpt_keras.preprocessor",
    "save_model": "gpt_keras.saving", "load_model": "gpt_keras.saving",
    "LMScorer": "gpt_keras.scoring",
}

__all__ = list(_LAZY)
__version__ = "0.1.0"


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:  # a submodule, e.g. `gk.losses.lm_loss_sum` after a bare `import gpt_keras`
        try:
            return _importlib.import_module(f"gpt_keras.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"gpt_keras.{name}":
                raise
            raise AttributeError(f"module 'gpt_keras' has no attribute {name!r}") from None
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))

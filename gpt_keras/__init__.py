"""gpt_keras: GPT-1 (Radford et al., 2018) generative pre-training and
discriminative fine-tuning in TensorFlow/Keras."""
import os as _os

_os.environ.setdefault("KERAS_BACKEND", "tensorflow")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from gpt_keras.config import PRESETS, SPECIAL_TOKENS, GPTConfig  # noqa: E402
from gpt_keras.model import GPTBackbone, GPTLMModel, GPTTaskModel, with_special_tokens  # noqa: E402
from gpt_keras.tasks import TaskFamily, build_inputs, pad_inputs  # noqa: E402

__all__ = ["GPTConfig", "PRESETS", "SPECIAL_TOKENS", "GPTBackbone", "GPTLMModel", "GPTTaskModel",
           "with_special_tokens", "TaskFamily", "build_inputs", "pad_inputs"]
__version__ = "0.1.0"

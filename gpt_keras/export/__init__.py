"""SavedModel export for TF Serving: raw text in, predictions or text out.

    from gpt_keras.export import export_task_model, export_lm
    path = export_task_model(task_model, tokenizer, "models", "sentiment")  # label names: the model's own
    # -> models/sentiment/1/ (the next free version), written atomically
    path = export_lm(lm_model, tokenizer, "models", "gpt", max_new_tokens=64)

The tokenizer tables, the task preprocessor (`gpt_keras.preprocessor`, the
same object training data went through) and the model all live in the graph, which uses core TF ops only and no XLA,
so the stock `tensorflow_model_server` serves it and a process that imports
only `tensorflow` (+ `tensorflow_text`) loads it. Signatures, inputs and
outputs: see `task.py` and `lm.py`, and docs/serving.md.

Long text: each task field is first cut to its first `max_text_bytes` bytes
(default 64 * n_ctx), then tokenized; the transform truncates to the context
exactly as in training (`build_inputs`: the first n_ctx - 2 tokens of a
single text, longest-first for a pair), and the `truncated` output says so.
A prompt for generation keeps its *last* `max_text_bytes` bytes and then its
last tokens: generation continues from the end.
"""
from __future__ import annotations

from typing import Any, Sequence

import tensorflow as tf

from gpt_keras import precision
from gpt_keras.export import layout
from gpt_keras.export.layout import existing_versions, next_version, read_metadata
from gpt_keras.export.lm import LMServingModule
from gpt_keras.export.task import TaskServingModule
from gpt_keras.model import GPTBackbone, GPTTaskModel
from gpt_keras.tokenizer import GPTTokenizer

__all__ = ["export_task_model", "export_lm", "TaskServingModule", "LMServingModule", "existing_versions",
           "next_version", "read_metadata"]


def _common_metadata(kind: str, tokenizer: GPTTokenizer, config, max_text_bytes: int) -> dict[str, Any]:
    # Descriptive only: the tokenizer's tables (and so its mode) are in the graph.
    return {"kind": kind, "n_ctx": config.n_ctx, "max_text_bytes": max_text_bytes,
            "tokenizer_fingerprint": tokenizer.fingerprint, "tokenizer_mode": tokenizer.mode,
            "format": "gpt_keras.export/1"}


def export_task_model(model: GPTTaskModel, tokenizer: GPTTokenizer, base_dir: str, model_name: str,
                      version: int | None = None, label_names: Sequence[str] | None = None,
                      max_text_bytes: int | None = None, call_cost_tokens: int | None = None) -> str:
    """Exports a fine-tuned task model as `<base_dir>/<model_name>/<version>/`.

    Args:
      model: the `GPTTaskModel` (any family).
      tokenizer: the tokenizer the model was trained with.
      base_dir: TF Serving's model base directory (parent of the model dir).
      model_name: served model name (directory name).
      version: integer version; None = one more than the highest existing.
      label_names: class names of a classification-like model (default: the
        model's own `label_names`, else "0".."n-1").
      max_text_bytes: per-string byte cut before tokenizing (default 64 * n_ctx).
      call_cost_tokens: the fixed cost of one model call, in padded tokens;
        a served batch runs as two length buckets when that saves more
        (`gpt_keras.export.bucketing`; None = estimated from the model width).
    Returns:
      The version directory. Raises FileExistsError if that version exists.
    """
    if not isinstance(model, GPTTaskModel):
        raise TypeError(f"export_task_model needs a GPTTaskModel, got {type(model).__name__}; "
                        "use export_lm for language models")
    target, _ = layout.resolve_version_dir(base_dir, model_name, version)  # fail fast, before tracing
    module = TaskServingModule(model, tokenizer, label_names, max_text_bytes, call_cost_tokens)
    signatures = module.signatures()
    family = module.family
    example_sig = "regress" if family.is_regression else "classify"
    method = layout.REGRESS_METHOD if family.is_regression else layout.CLASSIFY_METHOD
    texts = module.warmup_texts()
    first_row = {name: values[0] for name, values in texts.items()}
    warmup = [("predict", "serving_default",
               {name: tf.make_tensor_proto(values, tf.string) for name, values in texts.items()}),
              (example_sig, example_sig, {"examples": [layout.example_bytes(first_row)]})]
    metadata = {**_common_metadata("task", tokenizer, model.backbone.config, module.max_text_bytes),
                "family": family.value, "fields": list(family.fields), "label_names": module.label_names,
                "num_labels": model.num_labels, "num_choices": model.num_choices,
                "call_cost_tokens": module.call_cost_tokens,
                "signatures": sorted(signatures)}
    return layout.save(module, target, signatures, {"serving_default": layout.PREDICT_METHOD, example_sig: method},
                       warmup, metadata)


def export_lm(model: Any, tokenizer: GPTTokenizer, base_dir: str, model_name: str, version: int | None = None,
              max_new_tokens: int = 64, stop_token_ids: Sequence[int] = (),
              max_text_bytes: int | None = None, weights: str = "fp32") -> str:
    """Exports a language model (`GPTLMModel` or `GPTBackbone`) for generation
    (`serving_default`, `generate`) and scoring (`score`, `score_continuation`).

    Args:
      model: the language model or its backbone.
      tokenizer: its tokenizer.
      base_dir, model_name, version: as in `export_task_model`.
      max_new_tokens: upper bound on new tokens per request (larger requested
        values are clipped); prompts keep their last n_ctx - max_new_tokens tokens.
      stop_token_ids: ids that end a row (not part of the output).
      max_text_bytes: per-prompt byte cut before tokenizing (default 64 * n_ctx).
      weights: "fp32", or "bf16" to serve bf16 copies of the matrices and
        the LM head (`gpt_keras.compress`; half the bytes per decode step);
        "auto": what `gpt_keras.precision.resolve_weights` picks for one-row
        requests on the exporting machine (serve it on the same kind of CPU).
    Returns:
      The version directory.
    """
    weights = precision.resolve_weights(weights, batch_size=1)
    backbone = model if isinstance(model, GPTBackbone) else getattr(model, "backbone", None)
    if not isinstance(backbone, GPTBackbone):
        raise TypeError(f"export_lm needs a GPTLMModel or GPTBackbone, got {type(model).__name__}")
    target, _ = layout.resolve_version_dir(base_dir, model_name, version)
    module = LMServingModule(backbone, tokenizer, max_new_tokens, stop_token_ids, max_text_bytes, weights)
    signatures = module.signatures()
    text = lambda value: tf.make_tensor_proto([value], tf.string)  # noqa: E731
    warmup = [("predict", "serving_default", {"prompt": text("a short prompt"),
                                               "max_new_tokens": tf.make_tensor_proto([2], tf.int32)}),
              ("predict", "score", {"text": text("a short text")}),
              ("predict", "score_continuation", {"context": text("a short"), "continuation": text(" text")})]
    metadata = {**_common_metadata("lm", tokenizer, backbone.config, module.max_text_bytes),
                "max_new_tokens": module.budget, "max_prompt_tokens": module.max_prompt_tokens,
                "stop_token_ids": module.stop_token_ids, "signatures": sorted(signatures), "weights": weights}
    methods = {key: layout.PREDICT_METHOD for key in signatures}
    return layout.save(module, target, signatures, methods, warmup, metadata)

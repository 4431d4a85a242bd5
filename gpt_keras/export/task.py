"""The serving module of a fine-tuned `GPTTaskModel`: raw text in, named
predictions out, with the tokenizer and the task transform inside the graph.

Signatures (all inputs and outputs have the batch as first dimension, so TF
Serving's batching can merge requests):

| family | `serving_default` inputs | outputs |
|---|---|---|
| classification | `text` | `probabilities`, `logits`, `label_id`, `label`, `label_names`, `truncated` |
| entailment | `premise`, `hypothesis` | same |
| similarity | `text_a`, `text_b` | same |
| multiple_choice | `context` [b], `choices` [b, K] | `probabilities`, `logits`, `choice`, `truncated` |
| regression | `text_a`, `text_b` | `score`, `truncated` |

`classify` (classification-like families): `inputs` = serialized tf.Examples
with one bytes feature per field (`choices`: K values) -> `classes` [b, n]
(label names, or choice indices "0".."K-1") and `scores` [b, n]
(probabilities). `regress` (regression): `inputs` -> `outputs` [b].
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from gpt_keras.export.bucketing import estimated_call_cost, forward_in_buckets
from gpt_keras.model import GPTTaskModel
from gpt_keras.preprocessor import TaskPreprocessor, head_outputs, pad
from gpt_keras.tasks import TaskFamily
from gpt_keras.tokenizer import GPTTokenizer
from gpt_keras.transfer import merged


def resolve_label_names(model: GPTTaskModel, label_names: Sequence[str] | None) -> list[str] | None:
    """Label names of a classification-like model (given, else the model's own,
    else "0".."n-1"); choice indices for multiple choice; None for regression."""
    family = model.family
    if family is TaskFamily.MULTIPLE_CHOICE:
        if label_names:
            raise ValueError("multiple_choice answers are choice indices; label_names does not apply")
        return [str(i) for i in range(model.num_choices)]
    names = family.validate_label_names(label_names, model.num_labels) if label_names else model.label_names
    if family.is_regression:
        return None
    return names or [str(i) for i in range(model.num_labels)]


class TaskServingModule(tf.Module):
    """tf.Module holding tokenizer tables, transform and model for export.

    `call_cost_tokens`: the fixed cost of one model call in padded tokens'
    worth (`gpt_keras.export.bucketing`; None = estimated from the width).
    A served batch runs as two length buckets when that saves more."""

    def __init__(self, model: GPTTaskModel, tokenizer: GPTTokenizer, label_names: Sequence[str] | None = None,
                 max_text_bytes: int | None = None, call_cost_tokens: int | None = None):
        super().__init__(name="gpt_task_serving")
        model = merged(model)  # LoRA adapters written into the kernels: serving costs nothing extra
        self.model = model
        self.preprocessor = TaskPreprocessor.for_model(model, tokenizer, in_graph=True, max_text_bytes=max_text_bytes)
        self.tokenizer = self.preprocessor.graph_tokenizer  # tracked here, so its tables are saved
        self.family = model.family
        self.num_choices = model.num_choices
        self.label_names = resolve_label_names(model, label_names)
        self.max_text_bytes = self.preprocessor.max_text_bytes
        self._label_table = None if self.label_names is None else tf.constant(self.label_names)
        # A batch splits into two length buckets when that saves more padded tokens than this.
        self.call_cost_tokens = int(estimated_call_cost(model.backbone.config.n_embd) if call_cost_tokens is None
                                    else call_cost_tokens)

    # ----------------------------------------------------------- input specs

    def input_specs(self) -> dict[str, tf.TensorSpec]:
        """Named string inputs of `serving_default` for this family."""
        specs = {}
        for field in self.family.fields:
            shape = [None, self.num_choices] if field == "choices" else [None]
            specs[field] = tf.TensorSpec(shape, tf.string, name=field)
        return specs

    def example_features(self) -> dict:
        """tf.Example feature spec of the `classify`/`regress` signatures."""
        return {field: tf.io.FixedLenFeature([self.num_choices] if field == "choices" else [], tf.string)
                for field in self.family.fields}

    # ----------------------------------------------------------------- graph

    def predictions(self, fields: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        pre = self.preprocessor
        built = pre.transform(pre.tokenize(fields))
        # Padded per length bucket, not to n_ctx: padding never changes a result.
        head_out = forward_in_buckets(lambda ids: self.model(pad(ids), training=False), built["token_ids"],
                                      self.call_cost_tokens)
        out = head_outputs(self.family, head_out, self.label_names)
        out["truncated"] = built["truncated"]
        if "label" in out:
            out["label_names"] = tf.tile(self._label_table[None, :], [tf.shape(out["label"])[0], 1])
        return out

    def parse_examples(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        return tf.io.parse_example(serialized, self.example_features())

    # ------------------------------------------------------------ signatures

    def signatures(self) -> dict:
        """{signature key: concrete function} for `tf.saved_model.save`."""
        # autograph=False: the code is plain TF ops, and conversion would double the export time.
        serve = tf.function(self.predictions, input_signature=[self.input_specs()], autograph=False)
        examples = [tf.TensorSpec([None], tf.string, name="inputs")]

        def example_function(fn):
            return tf.function(fn, input_signature=examples, autograph=False).get_concrete_function()

        signatures = {"serving_default": serve.get_concrete_function()}
        if self.family.is_regression:
            def regress(inputs):  # calls `serve`: its graph is traced once and shared
                return {"outputs": serve(self.parse_examples(inputs))["score"]}
            signatures["regress"] = example_function(regress)
        else:
            def classify(inputs):
                scores = serve(self.parse_examples(inputs))["probabilities"]
                classes = tf.tile(self._label_table[None, :], [tf.shape(scores)[0], 1])
                return {"classes": classes, "scores": scores}
            signatures["classify"] = example_function(classify)
        return signatures

    def warmup_texts(self) -> dict[str, list]:
        """One small request per field (a real request shape for warm-up)."""
        return {field: [["a possible answer"] * self.num_choices] if field == "choices" else ["a short text"]
                for field in self.family.fields}

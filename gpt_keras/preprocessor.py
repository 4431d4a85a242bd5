"""The one task preprocessor: raw task fields -> model inputs.

    tokenize (the project's GPTTokenizer) -> build_inputs (the paper's
    transform, `gpt_keras.tasks`) -> pad (id 0 plus a mask)

`TaskPreprocessor` is built from (tokenizer, family, n_ctx) and used by every
path that turns task text into ids: the Beam task pipeline (Python
tokenizer, ragged records), tf.data (`pad`), the exported SavedModel (graph
tokenizer, `in_graph=True`) and `predict` here. `pad` is the one padding
function, right-aligned for training and left-aligned for generation.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow as tf

from gpt_keras.tasks import TaskFamily, build_inputs

# Texts are cut to this many bytes per context position before graph
# tokenization. The transform keeps at most n_ctx tokens of a text, and a BPE
# token of English averages ~5 bytes, so the cut only matters for texts
# averaging more than this many bytes per token; it bounds the tokenizer's
# work on huge inputs, also under the real TF Serving.
BYTES_PER_POSITION = 64


def pad(token_ids: tf.RaggedTensor, length: int | None = None, side: str = "right") -> dict[str, tf.Tensor]:
    """Dense `token_ids` + `padding_mask` (id 0 plus a mask) from ragged ids.

    Args:
      token_ids: ragged int ids, [batch, (tokens)] or [batch, n_seq, (tokens)].
      length: pad (and cut) the last axis to this length; None = the longest row.
      side: "right" (training, classification) or "left" (prompts for
        generation: the last real token of every row is in the last column).
    """
    token_ids = tf.cast(token_ids, tf.int32)
    if side == "right":
        shape = None if length is None else [None] * (token_ids.shape.rank - 1) + [length]
        return {"token_ids": token_ids.to_tensor(0, shape=shape),
                "padding_mask": tf.ones_like(token_ids, tf.int32).to_tensor(0, shape=shape)}
    if side != "left":
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    if token_ids.shape.rank != 2:
        raise ValueError(f"left padding takes [batch, (tokens)] prompts, got rank {token_ids.shape.rank}")
    if length is not None:
        token_ids = token_ids[:, -length:] if length else token_ids[:, :0]
    lengths = tf.cast(token_ids.row_lengths(), tf.int32)
    dense = token_ids.to_tensor(0)
    width = tf.shape(dense)[1] if length is None else length
    if length is not None:  # to_tensor gives the longest row's width
        dense = tf.pad(dense, [[0, 0], [0, length - tf.shape(dense)[1]]])
    source = tf.range(width)[None, :] - (width - lengths)[:, None]  # the column each slot reads
    mask = tf.cast(source >= 0, tf.int32)
    return {"token_ids": tf.gather(dense, tf.maximum(source, 0), batch_dims=1) * mask, "padding_mask": mask}


def cut_text(texts: tf.Tensor, max_bytes: int) -> tf.Tensor:
    """The first `max_bytes` bytes of each string (a UTF-8 character cut at
    the end becomes U+FFFD, past what the model reads)."""
    return tf.strings.substr(tf.reshape(texts, [-1]), 0, max_bytes, unit="BYTE")


def last_bytes(texts: tf.Tensor, max_bytes: int) -> tf.Tensor:
    """The last `max_bytes` bytes of each string: a prompt keeps its end, the
    part generation continues from. A UTF-8 character cut at the front becomes
    U+FFFD in the first, partial word, which the token cut then drops unless
    the text averages over `max_bytes / max_prompt_tokens` bytes per token."""
    texts = tf.reshape(texts, [-1])
    start = tf.maximum(tf.strings.length(texts) - max_bytes, 0)
    return tf.strings.substr(texts, start, tf.fill(tf.shape(texts), max_bytes))


def ragged_ids(rows: Sequence) -> tf.RaggedTensor:
    """[batch][tokens] or [batch][K][tokens] id lists -> a ragged int32 tensor
    (built from flat numpy arrays: `tf.ragged.constant` is ~10x slower)."""
    if rows and rows[0] and isinstance(rows[0][0], (list, tuple)):  # choices
        inner = ragged_ids([seq for row in rows for seq in row])
        return tf.RaggedTensor.from_row_lengths(inner, np.array([len(r) for r in rows], np.int64))
    values = np.fromiter((t for seq in rows for t in seq), np.int32)
    return tf.RaggedTensor.from_row_lengths(values, np.array([len(s) for s in rows], np.int64))


def check_tokenizer(tokenizer: Any, config: Any) -> None:
    """Raise if the tokenizer's vocabulary does not fit the model's config."""
    if tokenizer.n_vocab != config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.n_vocab} BPE tokens but the model's vocab_size is "
                         f"{config.vocab_size}; use the tokenizer the model was trained with")


class TaskPreprocessor:
    """Raw fields of one task family -> the task model's inputs.

    Args:
      tokenizer: the model's `GPTTokenizer` (its special ids are the model's).
      family: the task family (or its name).
      n_ctx: the context the transform truncates to.
      num_choices: K, for multiple choice.
      in_graph: tokenize with the TF graph tokenizer (SavedModels, tf.data);
        otherwise with the Python one (Beam, `predict`). Both give the same ids.
      max_text_bytes: graph mode cuts each text to its first this many bytes
        before tokenizing (default BYTES_PER_POSITION * n_ctx); a
        multiple-choice context to its last ones, like the transform.
    """

    def __init__(self, tokenizer: Any, family: "str | TaskFamily", n_ctx: int, num_choices: int | None = None,
                 *, in_graph: bool = False, max_text_bytes: int | None = None):
        self.tokenizer = tokenizer
        self.family = TaskFamily.parse(family)
        self.n_ctx = int(n_ctx)
        self.num_choices = self.family.validate_num_choices(num_choices)
        self.special_ids = (tokenizer.start_id, tokenizer.delimiter_id, tokenizer.classify_id)
        self.max_text_bytes = int(max_text_bytes or BYTES_PER_POSITION * self.n_ctx)
        self.graph_tokenizer = tokenizer.graph_layer() if in_graph else None

    @classmethod
    def for_model(cls, model: Any, tokenizer: Any, **kwargs: Any) -> "TaskPreprocessor":
        """The preprocessor of a `GPTTaskModel`: its family, context and K."""
        config = model.backbone.config
        check_tokenizer(tokenizer, config)
        return cls(tokenizer, model.family, config.n_ctx, model.num_choices, **kwargs)

    # ---------------------------------------------------------------- steps

    def tokenize(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Text fields -> token ids: ragged tensors in graph mode, id lists otherwise
        (`choices`: [batch, K] texts -> [batch, K, (ids)])."""
        self._check_fields(fields)
        if self.graph_tokenizer is None:
            return {name: [[self.tokenizer.encode(t) for t in row] if name == "choices" else
                           self.tokenizer.encode(row) for row in _rows(fields[name])]
                    for name in self.family.fields}
        out = {}
        for name in self.family.fields:
            # A multiple-choice context keeps its end (the question), as the transform does.
            cut = last_bytes if (name == "context" and self.family is TaskFamily.MULTIPLE_CHOICE) else cut_text
            ids = self.graph_tokenizer(cut(fields[name], self.max_text_bytes))
            out[name] = tf.RaggedTensor.from_uniform_row_length(ids, self.num_choices) if name == "choices" else ids
        return out

    def transform(self, ids: Mapping[str, Any]) -> dict[str, Any]:
        """Token ids per field -> {"token_ids": ragged [batch, n_seq, (len)], "truncated": bool [batch]}."""
        fields = {name: value if isinstance(value, tf.RaggedTensor) else ragged_ids(value)
                  for name, value in ids.items()}
        return build_inputs(self.family, fields, self.n_ctx, self.special_ids)

    def traced_transform(self, example_ids: Mapping[str, tf.RaggedTensor]):
        """`transform` as one traced graph for ragged inputs shaped like
        `example_ids` (~10x faster per batch; tracing costs a few seconds)."""
        spec = {k: tf.RaggedTensorSpec([None] * v.shape.rank, v.dtype, v.ragged_rank, v.row_splits.dtype)
                for k, v in example_ids.items()}
        return tf.function(self.transform, input_signature=[spec])

    def __call__(self, fields: Mapping[str, Any], length: int | None = None) -> dict[str, tf.Tensor]:
        """Raw fields -> {"token_ids", "padding_mask"} [batch, n_seq, len] and "truncated" [batch]."""
        built = self.transform(self.tokenize(fields))
        return {**pad(built["token_ids"], length), "truncated": built["truncated"]}

    def _check_fields(self, fields: Mapping[str, Any]) -> None:
        missing = [f for f in self.family.fields if f not in fields]
        if missing:
            raise ValueError(f"{self.family.value} inputs need the fields {list(self.family.fields)}; "
                             f"missing {missing}")


def _rows(value: Any) -> list:
    if isinstance(value, (tf.Tensor, np.ndarray)):
        value = np.asarray(value).tolist()
    if isinstance(value, (str, bytes)):
        raise TypeError("task fields are batches: wrap a single text in a list")
    return [v.decode("utf-8") if isinstance(v, bytes) else
            [c.decode("utf-8") if isinstance(c, bytes) else c for c in v] if isinstance(v, list) else v
            for v in value]


def head_outputs(family: TaskFamily, head_out: tf.Tensor, label_names: Sequence[str] | None) -> dict[str, tf.Tensor]:
    """The named predictions of a head output, as the SavedModel serves them:
    `probabilities`, `logits`, `label_id`/`label` (classification-like),
    `choice` (multiple choice), or `score` (regression)."""
    logits = tf.cast(head_out, tf.float32)
    if family.is_regression:
        return {"score": logits}
    best = tf.argmax(logits, axis=-1, output_type=tf.int32)
    out = {"probabilities": tf.nn.softmax(logits, axis=-1), "logits": logits}
    if family is TaskFamily.MULTIPLE_CHOICE:
        out["choice"] = best
    else:
        names = tf.constant(list(label_names) if label_names else [str(i) for i in range(logits.shape[-1])])
        out["label_id"] = best
        out["label"] = tf.gather(names, best)
    return out


def predict(model: Any, tokenizer: Any, fields: Mapping[str, Any], batch_size: int = 64) -> dict[str, np.ndarray]:
    """Predictions of a fine-tuned `GPTTaskModel` for raw text fields (numpy,
    named as the SavedModel's outputs), batch by batch."""
    preprocessor = TaskPreprocessor.for_model(model, tokenizer)
    preprocessor._check_fields(fields)  # pylint: disable=protected-access
    n = len(fields[model.family.fields[0]])
    chunks = []
    for start in range(0, n, batch_size):
        part = {name: _rows(fields[name])[start:start + batch_size] for name in model.family.fields}
        x = preprocessor(part)
        out = head_outputs(model.family, model(x, training=False), model.label_names)
        chunks.append({**{k: v.numpy() for k, v in out.items()}, "truncated": x["truncated"].numpy()})
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]} if chunks else {}

"""Task families and their traversal-style input transforms (paper section 3.3, Figure 1).

| family          | model input                                           |
|-----------------|-------------------------------------------------------|
| classification  | [s] text [e]                                          |
| entailment      | [s] premise [$] hypothesis [e]                        |
| similarity      | [s] a [$] b [e] and [s] b [$] a [e]; states added     |
| multiple_choice | [s] context [$] answer_k [e] for each k; softmax over k |
| regression      | a similarity pair with a scalar target                |

`build_inputs` is the one implementation of these transforms. It is written in
TF ragged ops so that Beam preprocessing, tf.data and the exported SavedModel
all run the same code (DESIGN.md: never a second copy).
"""
from __future__ import annotations

import enum
from typing import Mapping

import keras
import tensorflow as tf
from keras import ops


class TaskFamily(str, enum.Enum):
    CLASSIFICATION = "classification"
    ENTAILMENT = "entailment"
    SIMILARITY = "similarity"
    MULTIPLE_CHOICE = "multiple_choice"
    REGRESSION = "regression"

    @classmethod
    def parse(cls, value: "str | TaskFamily") -> "TaskFamily":
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"Unknown task family {value!r}; expected one of "
                             f"{[f.value for f in cls]}") from None

    @property
    def fields(self) -> tuple[str, ...]:
        """Names of the text fields a row of this family has."""
        return _FIELDS[self]

    @property
    def is_regression(self) -> bool:
        return self is TaskFamily.REGRESSION

    @property
    def is_pair(self) -> bool:
        return self in (TaskFamily.SIMILARITY, TaskFamily.REGRESSION)

    def num_sequences(self, num_choices: int | None = None) -> int:
        if self is TaskFamily.MULTIPLE_CHOICE:
            return num_choices
        return 2 if self.is_pair else 1

    def validate_num_labels(self, num_labels: int | None) -> int | None:
        if self in (TaskFamily.REGRESSION, TaskFamily.MULTIPLE_CHOICE):
            if num_labels not in (None, 1) and self.is_regression:
                raise ValueError(f"regression predicts one score; got num_labels={num_labels}")
            return None
        if not isinstance(num_labels, int) or num_labels < 2:
            raise ValueError(f"{self.value} needs num_labels >= 2, got {num_labels!r}")
        return num_labels

    def validate_num_choices(self, num_choices: int | None) -> int | None:
        if self is not TaskFamily.MULTIPLE_CHOICE:
            return None
        if not isinstance(num_choices, int) or num_choices < 2:
            raise ValueError(f"multiple_choice needs num_choices >= 2, got {num_choices!r}")
        return num_choices

    def validate_label_names(self, label_names, num_labels: int | None) -> list[str] | None:
        """Class names of a classification-like head (None: unnamed); regression
        and multiple choice have none (answers are a score or a choice index)."""
        if label_names is None:
            return None
        names = [str(n) for n in label_names]
        if num_labels is None:
            raise ValueError(f"{self.value} has no label names (its output is "
                             f"{'a score' if self.is_regression else 'a choice index'}); got {names!r}")
        if len(names) != num_labels or len(set(names)) != num_labels:
            raise ValueError(f"label_names must be {num_labels} distinct names (num_labels={num_labels}), "
                             f"got {names!r}")
        return names

    def check_input_rank(self, token_ids, num_choices: int | None) -> None:
        """Raise if inputs are not [batch, n_sequences, length] for this family."""
        shape = token_ids.shape
        expected = self.num_sequences(num_choices)
        if len(shape) != 3:
            raise ValueError(f"{self.value} inputs must be [batch, {expected}, length] "
                             f"(use gpt_keras.tasks.build_inputs); got shape {tuple(shape)}")
        if shape[1] is not None and shape[1] != expected:
            what = "choices (K)" if self is TaskFamily.MULTIPLE_CHOICE else "sequences"
            raise ValueError(f"{self.value} model expects {expected} {what} per example, "
                             f"but the data has {shape[1]}")

    def head_units(self, num_labels: int | None) -> int:
        return num_labels if num_labels else 1

    def head_output(self, head: keras.layers.Layer, h_clf):
        """Head on the extract-token states `h_clf` [batch, n_sequences, n_embd]."""
        if self is TaskFamily.MULTIPLE_CHOICE:
            return ops.squeeze(head(h_clf), -1)              # [batch, K]: one score per choice
        if self.is_pair:
            h_clf = ops.sum(h_clf, axis=1, keepdims=True)      # both orders, added
        out = head(h_clf[:, 0])
        return out[:, 0] if self.is_regression else out

    def loss_sum(self, head_out, labels):
        """(summed task loss, number of examples): cross-entropy, or squared error."""
        head_out = ops.cast(head_out, "float32")
        count = ops.cast(ops.shape(head_out)[0], "float32")
        if self.is_regression:
            err = head_out - ops.cast(ops.reshape(labels, (-1,)), "float32")
            return ops.sum(err * err), count
        losses = keras.losses.sparse_categorical_crossentropy(
            ops.reshape(labels, (-1,)), head_out, from_logits=True)
        return ops.sum(losses), count

    def metric_sums(self, head_out, labels) -> dict:
        """Per-step metric numerators/denominators, reduced across replicas by the step."""
        count = ops.cast(ops.shape(head_out)[0], "float32")
        if self.is_regression:
            return {}
        pred = ops.argmax(head_out, axis=-1)
        correct = ops.cast(ops.equal(ops.cast(pred, "int32"), ops.cast(ops.reshape(labels, (-1,)), "int32")),
                           "float32")
        return {"accuracy": (ops.sum(correct), count)}


_FIELDS = {
    TaskFamily.CLASSIFICATION: ("text",),
    TaskFamily.ENTAILMENT: ("premise", "hypothesis"),
    TaskFamily.SIMILARITY: ("text_a", "text_b"),
    TaskFamily.REGRESSION: ("text_a", "text_b"),
    TaskFamily.MULTIPLE_CHOICE: ("context", "choices"),
}


def _as_ragged(value) -> tf.RaggedTensor:
    if isinstance(value, tf.RaggedTensor):
        return tf.cast(value, tf.int32)
    if isinstance(value, tf.Tensor):
        return tf.RaggedTensor.from_tensor(tf.cast(value, tf.int32))
    return tf.ragged.constant(value, dtype=tf.int32)


def _take_prefix(rt: tf.RaggedTensor, n) -> tf.RaggedTensor:
    """The first n[i] tokens of each row i."""
    keep = tf.ragged.range(rt.row_lengths()) < tf.expand_dims(tf.cast(n, rt.row_splits.dtype), 1)
    return tf.ragged.boolean_mask(rt, keep)


def _take_suffix(rt: tf.RaggedTensor, n) -> tf.RaggedTensor:
    """The last n[i] tokens of each row i."""
    lengths = rt.row_lengths()
    keep = tf.ragged.range(lengths) >= tf.expand_dims(lengths - tf.cast(n, rt.row_splits.dtype), 1)
    return tf.ragged.boolean_mask(rt, keep)


def _pair_lengths(la, lb, budget):
    """Longest-first truncation of a pair to at most `budget` tokens.

    Matches removing one token at a time from the longer segment (from the
    second on ties), the usual `longest_first` rule; both segments survive.
    """
    shorter = tf.minimum(la, lb)
    fits = la + lb <= budget
    shorter_whole = 2 * shorter <= budget
    a = tf.where(fits, la, tf.where(shorter_whole, tf.where(la <= lb, la, budget - lb), (budget + 1) // 2))
    b = tf.where(fits, lb, tf.where(shorter_whole, tf.where(la <= lb, budget - la, lb), budget // 2))
    return a, b


def _sequences(first: tf.RaggedTensor, second: tf.RaggedTensor | None, n_ctx: int, specials):
    """[s] first ([$] second) [e], truncated to n_ctx; returns (ragged ids, truncated flags)."""
    start, delim, clf = specials
    batch = first.nrows()
    col = lambda token: tf.fill([batch, 1], tf.constant(token, first.dtype))  # noqa: E731
    la = first.row_lengths()
    if second is None:
        ta = tf.minimum(la, n_ctx - 2)
        pieces = [col(start), _take_prefix(first, ta), col(clf)]
        truncated = ta < la
    else:
        lb = second.row_lengths()
        ta, tb = _pair_lengths(la, lb, tf.cast(n_ctx - 3, la.dtype))
        pieces = [col(start), _take_prefix(first, ta), col(delim), _take_prefix(second, tb), col(clf)]
        truncated = tf.logical_or(ta < la, tb < lb)
    return tf.concat(pieces, axis=1), truncated


def build_inputs(family: "str | TaskFamily", fields: Mapping[str, tf.RaggedTensor], n_ctx: int,
                 special_ids: tuple[int, int, int]) -> dict[str, tf.Tensor | tf.RaggedTensor]:
    """Apply a family's input transform to a batch of tokenized fields.

    Args:
      family: task family.
      fields: ragged int token ids per field ([batch, None]; `choices` is
        [batch, K, None] with the same K for every row).
      n_ctx: maximum sequence length (the model context).
      special_ids: ids of (`_start_`, `_delimiter_`, `_classify_`).
    Returns:
      {"token_ids": ragged [batch, n_sequences, None] int32,
       "truncated": bool [batch]}.  `gpt_keras.preprocessor.pad` makes them dense.
    """
    family = TaskFamily.parse(family)
    missing = [f for f in family.fields if f not in fields]
    if missing:
        raise ValueError(f"{family.value} needs fields {list(family.fields)}; missing {missing}")
    if n_ctx < 4:
        raise ValueError(f"n_ctx must be at least 4 to hold the special tokens, got {n_ctx}")
    f = {k: _as_ragged(fields[k]) for k in family.fields}
    if family is TaskFamily.CLASSIFICATION:
        seq, truncated = _sequences(f["text"], None, n_ctx, special_ids)
        groups = [seq]
    elif family is TaskFamily.ENTAILMENT:
        seq, truncated = _sequences(f["premise"], f["hypothesis"], n_ctx, special_ids)
        groups = [seq]
    elif family.is_pair:
        ab, truncated = _sequences(f["text_a"], f["text_b"], n_ctx, special_ids)
        ba, _ = _sequences(f["text_b"], f["text_a"], n_ctx, special_ids)
        groups = [ab, ba]
    else:
        return _multiple_choice(f["context"], f["choices"], n_ctx, special_ids)
    token_ids = tf.stack(groups, axis=1)
    return {"token_ids": token_ids, "truncated": truncated}


def _multiple_choice(context: tf.RaggedTensor, choices: tf.RaggedTensor, n_ctx: int, special_ids):
    """`[s] context [$] choice_k [e]` for each k, truncated so that every
    choice sees the same context, and the context keeps its end.

    RACE puts the question at the end of the context, so a long context loses
    its beginning. Lengths follow the longest-first rule between the context
    and the longest choice (`_pair_lengths`): the context keeps the same last
    tokens for every k, and each choice keeps its first tokens, at most as
    many as the longest choice got. The original code (finetune-transformer-lm,
    ROCStories) instead cuts story and ending each to a fixed n_ctx // 2 - 2
    first tokens; for segments shorter than that the two rules agree, and when
    both are long each still gets about half the context.
    """
    if choices.ragged_rank != 2:
        raise ValueError("multiple_choice `choices` must be [batch, K, tokens] (a list of candidates per row)")
    counts = choices.row_lengths(axis=1)
    tf.debugging.assert_equal(counts, counts[:1],
                              message="every multiple_choice row must have the same number of choices")
    start, delim, clf = special_ids
    flat_choices = choices.merge_dims(0, 1)
    choice_lengths = flat_choices.row_lengths()
    longest = tf.reduce_max(tf.RaggedTensor.from_row_lengths(choice_lengths, counts), axis=1)
    context_lengths = context.row_lengths()
    keep_context, keep_choice = _pair_lengths(context_lengths, tf.maximum(longest, 0),
                                              tf.cast(n_ctx - 3, context_lengths.dtype))
    rows = tf.repeat(tf.range(context.nrows()), counts)
    kept_choice = tf.minimum(choice_lengths, tf.gather(keep_choice, rows))
    col = lambda token: tf.fill([tf.size(rows), 1], tf.constant(token, context.dtype))  # noqa: E731
    seq = tf.concat([col(start), tf.gather(_take_suffix(context, keep_context), rows), col(delim),
                     _take_prefix(flat_choices, kept_choice), col(clf)], axis=1)
    token_ids = tf.RaggedTensor.from_row_lengths(seq, counts)
    truncated = tf.logical_or(keep_context < context_lengths, tf.reduce_any(
        tf.RaggedTensor.from_row_lengths(kept_choice < choice_lengths, counts), axis=1))
    return {"token_ids": token_ids, "truncated": truncated}

"""Task families: the paper's input transforms, truncation, and heads that learn."""
import numpy as np
import pytest
import tensorflow as tf
from helpers import tiny_config

import gpt_keras as gk
from gpt_keras.preprocessor import pad
from gpt_keras.train import TrainSettings, finetune

S, D, E = 97, 98, 99  # _start_, _delimiter_, _classify_ for the tiny preset (vocab 97)
SPECIALS = (S, D, E)


def _rows(result):
    return result["token_ids"].to_list()


def test_classification_is_start_text_extract():
    out = gk.build_inputs("classification", {"text": [[5, 6, 7], [8]]}, 32, SPECIALS)
    assert _rows(out) == [[[S, 5, 6, 7, E]], [[S, 8, E]]]
    assert out["truncated"].numpy().tolist() == [False, False]


def test_entailment_is_premise_delimiter_hypothesis():
    out = gk.build_inputs("entailment", {"premise": [[1, 2]], "hypothesis": [[3]]}, 32, SPECIALS)
    assert _rows(out) == [[[S, 1, 2, D, 3, E]]]


@pytest.mark.parametrize("family", ["similarity", "regression"])
def test_similarity_has_both_orders(family):
    out = gk.build_inputs(family, {"text_a": [[1, 2]], "text_b": [[3]]}, 32, SPECIALS)
    assert _rows(out) == [[[S, 1, 2, D, 3, E], [S, 3, D, 1, 2, E]]]


def test_multiple_choice_pairs_context_with_each_answer():
    out = gk.build_inputs("multiple_choice", {"context": [[1, 2], [3]],
                                              "choices": [[[4], [5, 6]], [[7], [8]]]}, 32, SPECIALS)
    assert _rows(out) == [[[S, 1, 2, D, 4, E], [S, 1, 2, D, 5, 6, E]],
                          [[S, 3, D, 7, E], [S, 3, D, 8, E]]]
    with pytest.raises(tf.errors.InvalidArgumentError, match="same number of choices"):
        gk.build_inputs("multiple_choice", {"context": [[1], [2]], "choices": [[[4], [5]], [[6]]]}, 32, SPECIALS)


def test_multiple_choice_truncation_keeps_the_question_for_every_choice():
    context = list(range(1, 21))  # RACE-like: the question is at the end
    out = gk.build_inputs("multiple_choice", {"context": [context], "choices": [[[30], [31, 32, 33]]]}, 12, SPECIALS)
    kept = [15, 16, 17, 18, 19, 20]  # the same last tokens for both choices, whatever their lengths
    assert _rows(out) == [[[S, *kept, D, 30, E], [S, *kept, D, 31, 32, 33, E]]]
    assert out["truncated"].numpy().tolist() == [True]
    # Long choices: longest-first between the context and the longest choice; each choice keeps its start.
    out = gk.build_inputs("multiple_choice", {"context": [context], "choices": [[[30] * 10, [31]]]}, 12, SPECIALS)
    assert _rows(out) == [[[S, 16, 17, 18, 19, 20, D, 30, 30, 30, 30, E], [S, 16, 17, 18, 19, 20, D, 31, E]]]


def test_served_multiple_choice_cut_keeps_the_question_like_python():
    from gpt_keras.preprocessor import TaskPreprocessor
    from gpt_keras.tokenizer import count_words, train_bpe

    story = "the old man walked to the river and sat down by the water . " * 30
    question = "where did the man sit ?"
    tok = train_bpe(count_words([story, question, "by the river", "at home"]), num_merges=80)
    fields = {"context": [story + question], "choices": [["by the river", "at home"]]}
    python = TaskPreprocessor(tok, "multiple_choice", 24, num_choices=2)(fields)
    # The served graph also cuts the context's bytes first: it must keep the end there too.
    served = TaskPreprocessor(tok, "multiple_choice", 24, num_choices=2, in_graph=True, max_text_bytes=200)(fields)
    np.testing.assert_array_equal(served["token_ids"].numpy(), python["token_ids"].numpy())
    q = tok.encode(question)
    for row in python["token_ids"].numpy()[0]:
        ids = row[row != 0].tolist()
        delim = ids.index(tok.delimiter_id)
        assert ids[delim - len(q):delim] == q


def test_truncation_keeps_both_segments_longest_first():
    n_ctx = 11  # budget of 8 content tokens for a pair
    a, b = list(range(1, 11)), [50, 51]
    out = gk.build_inputs("entailment", {"premise": [a], "hypothesis": [b]}, n_ctx, SPECIALS)
    assert _rows(out) == [[[S, 1, 2, 3, 4, 5, 6, D, 50, 51, E]]]
    assert out["truncated"].numpy().tolist() == [True]
    # Both long: split evenly (first segment keeps the odd token).
    out = gk.build_inputs("entailment", {"premise": [list(range(1, 20))], "hypothesis": [list(range(60, 70))]},
                          12, SPECIALS)
    assert _rows(out) == [[[S, 1, 2, 3, 4, 5, D, 60, 61, 62, 63, E]]]
    single = gk.build_inputs("classification", {"text": [list(range(1, 40))]}, 8, SPECIALS)
    assert _rows(single) == [[[S, 1, 2, 3, 4, 5, 6, E]]]
    with pytest.raises(ValueError, match="needs fields \\['premise', 'hypothesis'\\]; missing \\['hypothesis'\\]"):
        gk.build_inputs("entailment", {"premise": [[1]]}, 8, SPECIALS)


def test_pad_uses_id_zero_and_a_mask():
    out = pad(gk.build_inputs("classification", {"text": [[5, 6], [7]]}, 32, SPECIALS)["token_ids"])
    assert out["token_ids"].numpy().tolist() == [[[S, 5, 6, E]], [[S, 7, E, 0]]]
    assert out["padding_mask"].numpy().tolist() == [[[1, 1, 1, 1]], [[1, 1, 1, 0]]]


def test_left_pad_right_aligns_prompts_and_cuts_from_the_left():
    ids = tf.ragged.constant([[1, 2, 3], [4]])
    out = pad(ids, side="left")
    assert out["token_ids"].numpy().tolist() == [[1, 2, 3], [0, 0, 4]]
    assert out["padding_mask"].numpy().tolist() == [[1, 1, 1], [0, 0, 1]]
    out = pad(ids, 2, side="left")
    assert out["token_ids"].numpy().tolist() == [[2, 3], [0, 4]]
    out = pad(ids, 5, side="left")
    assert out["token_ids"].numpy().tolist() == [[0, 0, 1, 2, 3], [0, 0, 0, 0, 4]]
    with pytest.raises(ValueError, match="side must be"):
        pad(ids, side="middle")


def _synthetic(family: str, n: int, rng):
    """A learnable task: the label is whether token 5 occurs in the (first) text."""
    labels = rng.integers(0, 2, n)
    fields, targets = {}, labels

    def text(has):
        body = list(rng.integers(10, 90, 4))
        if has:
            body[rng.integers(0, 4)] = 5
        return body

    if family == "classification":
        fields["text"] = [text(y) for y in labels]
    elif family == "entailment":
        fields = {"premise": [text(y) for y in labels], "hypothesis": [text(0) for _ in labels]}
    elif family in ("similarity", "regression"):
        fields = {"text_a": [text(y) for y in labels], "text_b": [text(0) for _ in labels]}
        if family == "regression":
            targets = labels.astype("float32") * 2.0 - 1.0
    else:  # multiple_choice: the right answer is the one containing token 5
        fields = {"context": [text(0) for _ in labels],
                  "choices": [[text(y == 0), text(y == 1)] for y in labels]}
    x = pad(gk.build_inputs(family, fields, 32, SPECIALS)["token_ids"])
    return tf.data.Dataset.from_tensor_slices((x, targets)).batch(16)


@pytest.mark.parametrize("family", ["classification", "entailment", "similarity", "multiple_choice", "regression"])
def test_each_head_trains(family):
    rng = np.random.default_rng(7)
    data = _synthetic(family, 128, rng)
    backbone = gk.GPTBackbone(**tiny_config().to_dict())
    kwargs = {"num_choices": 2} if family == "multiple_choice" else ({} if family == "regression" else {"num_labels": 2})
    settings = TrainSettings(learning_rate=1e-2, schedule="constant", epochs=6, verbose=0)
    model, history = finetune(backbone, family, data, settings, lm_weight=0.5, **kwargs)
    losses = history.history["task_loss"]
    assert losses[-1] < 0.7 * losses[0], losses
    assert "lm_loss" in history.history  # the auxiliary L1 is on by default
    if family != "regression":
        assert history.history["accuracy"][-1] > 0.8


def test_lm_weight_zero_turns_the_auxiliary_loss_off():
    model = gk.GPTTaskModel(gk.GPTBackbone(**tiny_config().to_dict()), "classification", num_labels=2, lm_weight=0)
    x = pad(gk.build_inputs("classification", {"text": [[5, 6]]}, 32, SPECIALS)["token_ids"])
    terms, metrics = model.loss_terms((x, np.array([1])), training=False)
    assert set(terms) == {"task"} and set(metrics) == {"accuracy"}

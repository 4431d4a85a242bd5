"""LM scoring and the zero/few-shot solvers: scores equal a full forward
pass, padding and batching never change them, and each solver gets a
synthetic task right once a tiny LM has learned to prefer the right word."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import gpt_keras as gk
from gpt_keras.preprocessor import pad, ragged_ids
from gpt_keras.scoring import LMScorer
from gpt_keras.tokenizer import count_words, train_bpe
from gpt_keras.train import TrainSettings, pretrain
from gpt_keras.zeroshot import (AcceptabilityClassifier, LabelWordClassifier, MultipleChoiceSolver, PronounResolver,
                                best_threshold, mark_pronoun)
from helpers import tiny_config

GOOD, BAD = ["great", "wonderful", "superb", "lovely"], ["awful", "dull", "terrible", "boring"]
ANIMALS = {"cat": "meow", "dog": "woof", "cow": "moo", "duck": "quack"}
CORPUS = ([f"the movie was {a} very positive ." for a in GOOD] + [f"the movie was {a} very negative ." for a in BAD]
          + [f"the {k} says {v} ." for k, v in ANIMALS.items()]
          + ["the cat was hungry .", "the mouse was scared .", "the cat chased the mouse ."])


@pytest.fixture(scope="module")
def tok():
    return train_bpe(count_words(CORPUS * 5), num_merges=150)


@pytest.fixture(scope="module")
def trained(tok):
    """A tiny LM trained on the synthetic corpus until it has learned it."""
    keras.utils.set_random_seed(0)
    config = tiny_config(vocab_size=tok.n_vocab, n_special=0, n_ctx=32)
    # Packed windows of shuffled sentences, as in pre-training: every position
    # and multi-sentence contexts (few-shot prompts) are seen.
    rng = np.random.default_rng(0)
    stream = [t for _ in range(40) for i in rng.permutation(len(CORPUS)) for t in tok.encode(CORPUS[i])]
    rows = [stream[i:i + 32] for i in range(0, len(stream) - 32, 32)]
    x = pad(ragged_ids(rows))
    data = tf.data.Dataset.from_tensor_slices({k: v.numpy() for k, v in x.items()}).shuffle(256, seed=0).batch(16)
    settings = TrainSettings(learning_rate=3e-3, schedule="warmup_cosine", warmup=50, epochs=150,
                             steps_per_epoch=len(rows) // 16, verbose=0, l2=0.0)
    lm, _ = pretrain(config, data.repeat(), settings, strategy=tf.distribute.OneDeviceStrategy("/cpu:0"))
    return lm


@pytest.fixture(scope="module")
def scorer(trained, tok):
    return LMScorer(trained, tok, batch_size=4)


def test_scores_equal_the_log_softmax_of_a_full_forward_pass(scorer, trained, tok):
    rows = [tok.encode(t) for t in ["the movie was great very positive .", "the dog says", "the cat"]]
    for row, lp in zip(rows, scorer.score_ids(rows)):
        logits = trained({"token_ids": np.array([row], np.int32), "padding_mask": np.ones((1, len(row)), np.int32)})
        logp = tf.nn.log_softmax(logits[0, :, :tok.n_vocab]).numpy()
        np.testing.assert_allclose(lp, [logp[t, row[t + 1]] for t in range(len(row) - 1)], rtol=1e-5, atol=1e-5)


def test_batching_and_padding_never_change_a_score(scorer, tok):
    rows = [tok.encode(t) for t in CORPUS[:7]]
    together = scorer.score_ids(rows)
    alone = [scorer.score_ids([r])[0] for r in rows]
    for a, b in zip(together, alone):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_continuation_scores_are_the_tail_of_the_joint_score(scorer, tok):
    context, continuation = tok.encode("the dog says"), tok.encode(" woof .")
    cond = scorer.score_id_continuations([context], [continuation])[0]
    joint = scorer.score_ids([context + continuation])[0]
    np.testing.assert_allclose(cond.token_logprobs, joint[len(context) - 1:], rtol=1e-6)
    assert cond.num_tokens == len(continuation) and not cond.truncated
    np.testing.assert_allclose(cond.total, joint[len(context) - 1:].sum(), rtol=1e-6)


def test_long_inputs_are_cut_and_reported(scorer, tok):
    long_text = " ".join(CORPUS)  # well over n_ctx = 32 tokens
    score = scorer.score_texts([long_text])[0]
    assert score.truncated and score.num_tokens == 31  # the last 32 tokens; the first has no context
    cond = scorer.score_continuations([long_text], [" woof ."])[0]
    assert cond.truncated and cond.num_tokens == len(tok.encode(" woof ."))


def test_bad_inputs_get_clear_errors(scorer, tok):
    with pytest.raises(ValueError, match="has no tokens"):
        scorer.score_texts([""])
    with pytest.raises(TypeError, match="wrap a single text in a list"):
        scorer.score_texts("a text")
    with pytest.raises(ValueError, match="not BPE token ids.*special tokens are not text"):
        scorer.score_ids([[1, 2, tok.n_vocab]])
    with pytest.raises(ValueError, match="more than the context n_ctx=32"):
        scorer.score_ids([[1] * 33])
    with pytest.raises(ValueError, match="context 0 is empty"):
        scorer.score_continuations([""], [" woof"])
    with pytest.raises(ValueError, match="must be under n_ctx=32"):
        scorer.score_id_continuations([[1]], [[2] * 32])
    with pytest.raises(ValueError, match="2 contexts but 1 continuations"):
        scorer.score_continuations(["a", "b"], [" c"])


def test_label_words_zero_and_few_shot(scorer):
    texts = [f"the movie was {a}" for a in GOOD + BAD]
    labels = [1] * len(GOOD) + [0] * len(BAD)
    clf = LabelWordClassifier(scorer, ["negative", "positive"])  # the paper's template: "{text} very"
    assert clf.predict(texts).predictions.tolist() == labels
    demos = list(zip(texts, labels))
    few_shot = LabelWordClassifier(scorer, ["negative", "positive"], demonstrations=demos, k=2)
    few = few_shot.predict(texts)
    assert set(few.demonstrations.tolist()) <= {0, 1, 2}  # 32 tokens hold at most 2 demonstrations
    # Each row's scores are the LM's log-probabilities of the label words after that row's prompt.
    words = [scorer.tokenizer.encode(" negative"), scorer.tokenizer.encode(" positive")]
    for row, text in enumerate(texts):
        ids, _ = few_shot.prompt_ids(row, f"{text} very", scorer.n_ctx - max(map(len, words)))
        expected = [s.total for s in scorer.score_id_continuations([ids] * 2, words)]
        np.testing.assert_allclose(few.scores[row], expected, rtol=1e-5)
    # Given one demonstration of each label, the prompt favours neither, and every held-out row is right.
    balanced = LabelWordClassifier(scorer, ["negative", "positive"], demonstrations=[demos[0], demos[-1]], k=2)
    held_out = balanced.predict(texts[1:-1])
    assert held_out.demonstrations.tolist() == [2] * (len(texts) - 2)
    assert held_out.predictions.tolist() == labels[1:-1]
    # With two same-label demonstrations the tiny LM may copy their label; offsets fitted on labels fix that.
    assert few_shot.calibrate(texts, labels).predict(texts).predictions.tolist() == labels
    assert clf.calibrate(texts, labels).predict(texts).predictions.tolist() == labels
    with pytest.raises(ValueError, match="k=9 demonstrations per query, but only 8"):
        LabelWordClassifier(scorer, ["negative", "positive"], demonstrations=demos, k=9)


def test_candidate_label_words_are_chosen_on_the_data_given_to_calibrate(scorer):
    texts = [f"the movie was {a}" for a in GOOD + BAD]
    labels = [1] * len(GOOD) + [0] * len(BAD)
    clf = LabelWordClassifier(scorer, [["meow", "negative"], ["woof", "positive"]])
    with pytest.raises(ValueError, match="label words not chosen among the candidates"):
        clf.predict(texts)
    # One informative word separates this easy data as well as two (accuracy 1.0 for three of the
    # four combinations); the pair of opposites wins on log-loss.
    assert clf.calibrate(texts, labels).label_words == ["negative", "positive"]
    assert clf.predict(texts).predictions.tolist() == labels
    # Every combination is listed with the accuracy a classifier of those words, calibrated alike, gets.
    assert [row["label_words"] for row in clf.word_selection] == [
        ["meow", "woof"], ["meow", "positive"], ["negative", "woof"], ["negative", "positive"]]
    for row in clf.word_selection:
        fixed = LabelWordClassifier(scorer, row["label_words"]).calibrate(texts, labels)
        assert row["accuracy"] == pytest.approx(np.mean(fixed.predict(texts).predictions == labels))
    best = clf.word_selection[-1]
    assert best["accuracy"] == 1.0 and all(best["log_loss"] < row["log_loss"] for row in clf.word_selection[:-1])
    # With demonstrations the words are still chosen zero-shot (the demonstrations show the words).
    few = LabelWordClassifier(scorer, [["meow", "negative"], ["woof", "positive"]],
                              demonstrations=list(zip(texts, labels)), k=1)
    assert few.calibrate(texts, labels).label_words == ["negative", "positive"]
    for bad in ([["bad", "good"], ["good"]], [[], ["good"]], ["good"]):
        with pytest.raises(ValueError, match="label_words must give at least 2 labels"):
            LabelWordClassifier(scorer, bad)


def test_demonstrations_are_dropped_before_the_query(scorer, tok):
    demos = [(" ".join(["the movie was great"] * 3), 1)] * 4  # ~15 tokens each: at most one fits
    result = LabelWordClassifier(scorer, ["negative", "positive"], demonstrations=demos, k=4).predict(
        ["the movie was dull"])
    assert result.demonstrations.tolist() == [1] and result.predictions.tolist() == [0]


def _untrained_scorer(tokenizer):
    """A scorer on an untrained LM: rendering prompts needs only the tokenizer and n_ctx."""
    backbone = gk.GPTBackbone(**tiny_config(vocab_size=tokenizer.n_vocab, n_special=0, n_ctx=32).to_dict())
    return LMScorer(backbone, tokenizer)


def test_few_shot_demonstrations_stay_apart_in_the_tokenised_prompt(tok):
    words = ["negative", "positive"]
    demos = [("the movie was great", 1), ("the movie was dull", 0)]
    clf = LabelWordClassifier(_untrained_scorer(tok), words, demonstrations=demos, k=2)
    ids, n = clf.prompt_ids(0, "the movie was lovely very")
    shown = [f"{text} very {words[label]}" for text, label in demos]
    # "hf" mode drops newlines: without a newline token, a period ends each demonstration.
    assert n == 2 and tok.decode(ids) in {f"{a} . {b} . the movie was lovely very" for a, b in (shown, shown[::-1])}
    with pytest.raises(ValueError, match=r"separator '\\n' encodes to no tokens in tokenizer mode 'hf'"):
        LabelWordClassifier(clf.scorer, words, demonstrations=demos, k=1, separator="\n")
    # A vocabulary with the newline token (as the original release's) separates by it.
    newline = train_bpe(count_words(["the cat says meow\nthe dog says woof"] * 3, mode="original"), num_merges=20,
                        mode="original")
    solver = MultipleChoiceSolver(_untrained_scorer(newline), demonstrations=[(("the cat says", ["meow", "woof"]), 0)],
                                  k=1)
    ids, n = solver.prompt_ids(0, "the dog says")
    assert n == 1 and newline.decode(ids) == "the cat says meow \n the dog says"


def test_multiple_choice_by_average_answer_logprob(scorer):
    contexts = [f"the {k} says" for k in ANIMALS]
    choices = [list(ANIMALS.values()) for _ in ANIMALS]
    assert MultipleChoiceSolver(scorer).predict(contexts, choices).predictions.tolist() == [0, 1, 2, 3]


def test_acceptability_by_a_threshold_fitted_on_validation(scorer):
    good = CORPUS[:8]
    rng = np.random.default_rng(0)
    scrambled = [" ".join(rng.permutation(s.split())) for s in good]
    clf = AcceptabilityClassifier(scorer).calibrate(good[:4] + scrambled[:4], [1] * 4 + [0] * 4)
    result = clf.predict(good[4:] + scrambled[4:])
    assert result.predictions.tolist() == [1] * 4 + [0] * 4
    with pytest.raises(ValueError, match="fit one on validation data"):
        AcceptabilityClassifier(scorer).predict(good)


def test_pronoun_resolution_by_substitution(scorer):
    sentence = mark_pronoun("the cat chased the mouse because it was hungry .", "it")
    assert sentence == "the cat chased the mouse because _ was hungry ."
    result = PronounResolver(scorer).predict([sentence, sentence.replace("hungry", "scared")],
                                            [["the cat", "the mouse"]] * 2)
    assert result.predictions.tolist() == [0, 1]
    with pytest.raises(ValueError, match="exactly one '_'"):
        PronounResolver(scorer).predict(["no marker here"], [["a", "b"]])


def test_best_threshold_maximises_accuracy():
    assert best_threshold(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == pytest.approx(0.5)
    assert best_threshold(np.array([1.0, 2.0]), np.array([1, 1])) < 1.0

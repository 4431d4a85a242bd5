"""Checkpoint conversion without torch: original release, HF layout, project format, bad input.

Fixtures are written here with plain numpy/safetensors, independently of
`gpt_keras.convert`'s own writers, so a layout bug cannot cancel itself out.
"""
import json
import os
import tarfile
import zipfile

import numpy as np
import pytest
from helpers import random_ids, tiny_config
from safetensors.numpy import save_file

import gpt_keras as gk
from gpt_keras import convert, saving
from gpt_keras.convert.__main__ import main
from gpt_keras.convert.hf import export_hf, load_hf
from gpt_keras.convert.original import load_original, write_original
from gpt_keras.convert.state import backbone_state
from gpt_keras.convert.vocab import vocab_size_of


def _random_backbone(seed: int = 0, **overrides) -> gk.GPTBackbone:
    """A tiny backbone (HF-compatible MLP width 4 * n_embd) with every weight random (LayerNorm gains around 1), so
    that a swapped or transposed array changes the outputs."""
    backbone = gk.GPTBackbone(**tiny_config(**{"n_special": 0, "n_inner": 128, **overrides}).to_dict())
    rng = np.random.default_rng(seed)
    for var in backbone.weights:
        base = 1.0 if var.path.endswith("gamma") else 0.0
        var.assign(base + rng.normal(0.0, 0.2, var.shape).astype("float32"))
    return backbone


def _release_arrays(backbone: gk.GPTBackbone, conv_3d: bool = True) -> list[np.ndarray]:
    """The backbone's arrays in the original release order, written out by hand."""
    def conv(layer):
        kernel = layer.kernel.numpy()
        return [kernel[None] if conv_3d else kernel, layer.bias.numpy()]

    def norm(layer):
        return [layer.gamma.numpy(), layer.beta.numpy()]

    arrays = [backbone.embed.position_embeddings.numpy(), backbone.embed.token_embeddings.numpy()]
    for b in backbone.blocks:
        arrays += conv(b.attn.c_attn) + conv(b.attn.c_proj) + norm(b.ln_1)
        arrays += conv(b.c_fc) + conv(b.c_proj) + norm(b.ln_2)
    return arrays


def _write_release(path, arrays, n_shards: int = 2, encoder: dict | None = None):
    path.mkdir(parents=True, exist_ok=True)
    (path / "params_shapes.json").write_text(json.dumps([list(a.shape) for a in arrays]))
    flat = np.concatenate([a.reshape(-1) for a in arrays])
    for i, shard in enumerate(np.array_split(flat, n_shards)):
        np.save(path / f"params_{i}.npy", shard)
    if encoder is not None:
        (path / "encoder_bpe.json").write_text(json.dumps(encoder))
        (path / "vocab.bpe").write_text("#version 0.0\n")
    return path


def _outputs(backbone, ids):
    return gk.GPTLMModel(backbone)({"token_ids": ids, "padding_mask": np.ones_like(ids)}).numpy()


def _assert_same_weights(a: gk.GPTBackbone, b: gk.GPTBackbone):
    assert a.config == b.config
    assert [v.path for v in a.weights] == [v.path for v in b.weights]
    for x, y in zip(a.weights, b.weights):
        np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=x.path)


IDS = random_ids(np.random.default_rng(0), (2, 16), 97)


@pytest.mark.parametrize("conv_3d", [True, False], ids=["release-1xinxout", "squeezed-2d"])
def test_original_release_loads_exactly(tmp_path, conv_3d):
    source = _random_backbone()
    src = _write_release(tmp_path / "release", _release_arrays(source, conv_3d), n_shards=2)
    loaded = load_original(src, n_head=4, embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0, clf_pdrop=0.0)
    _assert_same_weights(source, loaded)
    np.testing.assert_array_equal(_outputs(source, IDS), _outputs(loaded, IDS))


def test_original_release_shard_count_and_n_ctx(tmp_path):
    source = _random_backbone()
    arrays = _release_arrays(source)
    for n_shards in (1, 3, 7):  # counted, not assumed
        src = _write_release(tmp_path / f"s{n_shards}", arrays, n_shards=n_shards)
        assert len(list(src.glob("params_*.npy"))) == n_shards
        _assert_same_weights(source, load_original(src, n_head=4, **_no_dropout()))
    short = load_original(tmp_path / "s3", n_head=4, n_ctx=8)
    assert short.config.n_ctx == 8
    np.testing.assert_array_equal(short.embed.position_embeddings.numpy(),
                                  source.embed.position_embeddings.numpy()[:8])


def _no_dropout():
    return dict(embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0, clf_pdrop=0.0)


def test_write_original_round_trip(tmp_path):
    source = _random_backbone(seed=1)
    dst = write_original(source, tmp_path / "out", n_shards=3)
    shapes = json.loads((dst / "params_shapes.json").read_text())
    assert len(shapes) == 2 + 12 * 2 and shapes[2] == [1, 32, 96]  # c_attn as [1, in, out]
    _assert_same_weights(source, load_original(dst, n_head=4, **_no_dropout()))


def test_hf_export_layout_and_round_trip(tmp_path):
    source = gk.with_special_tokens(_random_backbone(seed=2), seed=0)
    dst = export_hf(source, tmp_path / "hf")
    from safetensors import safe_open
    with safe_open(str(dst / "model.safetensors"), framework="np") as f:
        keys = set(f.keys())
        assert f.metadata() == {"format": "pt"}
    expected = {"transformer.tokens_embed.weight", "transformer.positions_embed.weight"} | {
        f"transformer.h.{i}.{part}.{kind}" for i in range(2)
        for part in ("attn.c_attn", "attn.c_proj", "ln_1", "mlp.c_fc", "mlp.c_proj", "ln_2")
        for kind in ("weight", "bias")}
    assert keys == expected  # lm_head.weight is tied, not stored
    hf_config = json.loads((dst / "config.json").read_text())
    assert hf_config["model_type"] == "openai-gpt" and hf_config["afn"] == "gelu"
    assert hf_config["vocab_size"] == 100 and hf_config["gpt_keras_n_special"] == 3
    assert (hf_config["n_positions"], hf_config["n_embd"], hf_config["n_layer"], hf_config["n_head"]) == (32, 32, 2, 4)
    _assert_same_weights(source, load_hf(dst))


def test_hf_hub_style_checkpoint(tmp_path):
    """The hub's `openai-gpt` stores keys without prefix plus old causal-mask buffers;
    a DoubleHeads checkpoint adds `lm_head` and a task head."""
    source = _random_backbone(seed=3)
    state = backbone_state(source)
    state.update({f"h.{i}.attn.bias": np.tril(np.ones((1, 1, 32, 32), "float32")) for i in range(2)})
    state["lm_head.weight"] = state["tokens_embed.weight"]
    state["multiple_choice_head.summary.weight"] = np.ones((1, 32), "float32")
    path = tmp_path / "hub"
    path.mkdir()
    save_file(state, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(
        {"model_type": "openai-gpt", "afn": "gelu", "vocab_size": 97, "n_positions": 32, "n_embd": 32,
         "n_layer": 2, "n_head": 4, **_no_dropout()}))
    loaded = load_hf(path, clf_pdrop=0.0)
    _assert_same_weights(source, loaded)


def test_convert_checkpoint_adds_special_rows_and_loads_back(tmp_path):
    source = _random_backbone(seed=4)
    src = _write_release(tmp_path / "release", _release_arrays(source))
    dst = convert.convert_checkpoint(src, tmp_path / "model", n_head=4, seed=7)
    assert {p.name for p in dst.iterdir()} == {"config.json", "model.weights.h5"}
    backbone, tokenizer = saving.load_model(dst)
    assert tokenizer is None
    assert backbone.config.n_special == 3 and backbone.config.vocab_size == 97
    tokens = backbone.embed.token_embeddings.numpy()
    np.testing.assert_array_equal(tokens[:97], source.embed.token_embeddings.numpy())
    assert tokens.shape == (100, 32) and 0.0 < np.abs(tokens[97:]).std() < 0.1  # new N(0, 0.02) rows
    np.testing.assert_array_equal(
        _outputs(backbone, IDS), _outputs(gk.with_special_tokens(source, seed=7), IDS))
    # Any supported directory loads through one entry point; gpt_keras -> HF -> gpt_keras is exact.
    _assert_same_weights(backbone, convert.load_any(export_hf(backbone, tmp_path / "hf")))
    plain = convert.convert_checkpoint(src, tmp_path / "plain", n_head=4, add_special_tokens=False)
    assert saving.load_backbone(plain).config.n_special == 0


def test_vocabulary_sizes_against_the_embedding(tmp_path):
    arrays = _release_arrays(_random_backbone())
    # allennlp's fixture style: an alias (`<unk>` -> 0) makes one entry more than ids.
    encoder = {f"t{i}": i for i in range(97)} | {"<unk>": 0}
    assert len(encoder) == 98
    src = _write_release(tmp_path / "alias", arrays, encoder=encoder)
    assert vocab_size_of(src / "encoder_bpe.json") == 97
    assert load_original(src, n_head=4).config.n_special == 0
    # Three rows more than the vocabulary: the trailing rows are the special tokens.
    src = _write_release(tmp_path / "specials", arrays, encoder={f"t{i}": i for i in range(94)})
    config = load_original(src, n_head=4).config
    assert (config.vocab_size, config.n_special) == (94, 3)
    # Special tokens stored at the end of an encoder do not count as BPE ids.
    named = {f"t{i}": i for i in range(94)} | {t: 94 + k for k, t in enumerate(gk.SPECIAL_TOKENS)}
    assert vocab_size_of(_write_release(tmp_path / "named", arrays, encoder=named) / "encoder_bpe.json") == 94
    # More ids than rows: those ids could never be embedded.
    src = _write_release(tmp_path / "bigger", arrays, encoder={f"t{i}": i for i in range(98)})
    with pytest.raises(convert.VocabularyMismatchError, match="98 ids but the checkpoint token embedding has 97 rows"):
        load_original(src, n_head=4)
    src = _write_release(tmp_path / "smaller", arrays, encoder={f"t{i}": i for i in range(90)})
    with pytest.raises(convert.VocabularyMismatchError, match="90 ids .* 97 rows"):
        load_original(src, n_head=4)


def _trained_tokenizer():
    tokenizer_module = pytest.importorskip("gpt_keras.tokenizer")
    texts = ["the cat sat on the mat.", "a dog sat on the log!", "the cat and the dog."] * 4
    return tokenizer_module.train_bpe(tokenizer_module.count_words(texts), num_merges=30)


def test_convert_checkpoint_with_vocabulary(tmp_path):
    """Vocabulary files travel with the weights, checked against the embedding;
    the tokenizer's special ids are the model's."""
    tok = _trained_tokenizer()
    source = _random_backbone(seed=6, vocab_size=tok.n_vocab)
    src = _write_release(tmp_path / "release", _release_arrays(source))
    tok.save(str(src), format="original")
    dst = convert.convert_checkpoint(src, tmp_path / "model", n_head=4)
    backbone, loaded = saving.load_model(dst)
    meta = json.loads((dst / "gpt_keras_tokenizer.json").read_text())  # the tokenizer records its own mode
    assert (meta["vocabulary_format"], meta["mode"]) == ("original", "original")
    assert meta["fingerprint"] == tok.fingerprint
    assert loaded.n_vocab == backbone.config.vocab_size == tok.n_vocab
    assert (loaded.start_id, loaded.classify_id) == (backbone.config.start_id, backbone.config.classify_id)
    assert loaded.encode("the dog sat") == tok.encode("the dog sat")
    # HF export carries the vocabulary; the way back finds the special rows from it.
    hf = export_hf(backbone, tmp_path / "hf", loaded)
    assert (hf / "vocab.json").is_file() and (hf / "merges.txt").is_file()
    again = convert.convert_checkpoint(hf, tmp_path / "again")
    _assert_same_weights(backbone, saving.load_backbone(again))
    assert json.loads((again / "gpt_keras_tokenizer.json").read_text())["mode"] == "hf"


def test_vocabulary_the_tokenizer_rejects(tmp_path):
    _trained_tokenizer()  # skips without gpt_keras.tokenizer
    encoder = {f"t{i}</w>": i for i in range(97)} | {"<unk>": 0}  # an id used twice
    src = _write_release(tmp_path / "release", _release_arrays(_random_backbone()), encoder=encoder)
    with pytest.raises(convert.ConversionError, match="cannot be loaded by the project tokenizer.*--no-vocab"):
        convert.convert_checkpoint(src, tmp_path / "model", n_head=4)
    assert main(["import", str(src), str(tmp_path / "weights"), "--n-head", "4", "--no-vocab"]) == 0
    backbone, tokenizer = saving.load_model(tmp_path / "weights")
    assert tokenizer is None and backbone.config.vocab_size == 97


def test_bad_original_release(tmp_path):
    arrays = _release_arrays(_random_backbone())
    src = _write_release(tmp_path / "gap", arrays, n_shards=3)
    (src / "params_1.npy").unlink()
    with pytest.raises(convert.ConversionError, match=r"Missing shard\(s\) params_1.npy .*found 2 of 3"):
        load_original(src, n_head=4)
    src = _write_release(tmp_path / "last", arrays, n_shards=3)
    (src / "params_2.npy").unlink()
    with pytest.raises(convert.ConversionError, match="2 shard.* hold .* values but params_shapes.json describes"):
        load_original(src, n_head=4)
    src = _write_release(tmp_path / "none", arrays)
    for p in src.glob("*.npy"):
        p.unlink()
    with pytest.raises(convert.ConversionError, match="No params_\\*.npy shards"):
        load_original(src, n_head=4)
    # A block whose MLP is wider than the others': named in the error with both shapes.
    bad = list(arrays)
    bad[2 + 12 + 6] = np.zeros((1, 32, 80), "float32")
    message = r"h\.1\.mlp\.c_fc\.weight: checkpoint shape \(32, 80\) != model shape \(32, 128\)"
    with pytest.raises(convert.ConversionError, match=message):
        load_original(_write_release(tmp_path / "shape", bad), n_head=4)
    with pytest.raises(convert.ConversionError, match="lists 25 arrays; expected 2 \\+ 12 \\* n_layer"):
        load_original(_write_release(tmp_path / "count", arrays[:-1]), n_head=4)
    odd = _random_backbone(n_embd=36, n_head=4, n_inner=64)
    with pytest.raises(convert.ConversionError, match="Cannot infer n_head for n_embd=36.*pass n_head"):
        load_original(_write_release(tmp_path / "odd", _release_arrays(odd)))
    with pytest.raises(convert.ConversionError, match="n_ctx=64 must be in 1..32"):
        load_original(tmp_path / "shape", n_head=4, n_ctx=64)


def test_bad_hf_and_project_dirs(tmp_path):
    good = export_hf(_random_backbone(), tmp_path / "good")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(convert.ConversionError, match="no config.json: not a HF checkpoint"):
        load_hf(empty)
    with pytest.raises(convert.ConversionError, match="neither an original release"):
        saving.detect_format(empty)
    with pytest.raises(convert.ConversionError, match="is not a directory"):
        saving.detect_format(tmp_path / "missing")

    def variant(name, config_changes=None, state_changes=None, drop_weights=False, state=None):
        path = tmp_path / name
        path.mkdir()
        config = json.loads((good / "config.json").read_text()) | (config_changes or {})
        (path / "config.json").write_text(json.dumps(config))
        if not drop_weights:
            if state is None:
                state = backbone_state(_random_backbone()) | (state_changes or {})
            save_file(state, str(path / "model.safetensors"))
        return path

    with pytest.raises(convert.ConversionError, match="No model.safetensors"):
        load_hf(variant("noweights", drop_weights=True))
    with pytest.raises(convert.ConversionError, match="Unsupported activation afn='relu'"):
        load_hf(variant("relu", {"afn": "relu"}))
    with pytest.raises(convert.ConversionError, match="vocab_size=120 but tokens_embed.weight has 97 rows"):
        load_hf(variant("vocab", {"vocab_size": 120}))
    # pytorch-pretrained-bert era: specials counted apart from vocab_size.
    legacy = load_hf(variant("legacy", {"vocab_size": 94, "n_special": 3, "gpt_keras_n_special": None}))
    assert (legacy.config.vocab_size, legacy.config.n_special) == (94, 3)
    with pytest.raises(convert.ConversionError, match="n_special=2: gpt_keras models have 0 or 3"):
        load_hf(variant("legacy2", {"vocab_size": 95, "n_special": 2, "gpt_keras_n_special": None}))
    with pytest.raises(convert.ConversionError, match="lm_head.weight differs from tokens_embed.weight"):
        load_hf(variant("untied", state_changes={"lm_head.weight": np.zeros((97, 32), "float32")}))
    with pytest.raises(convert.ConversionError, match="missing weight h.1.ln_2.bias.*unexpected weight h.1.ln_3.bias"):
        state = backbone_state(_random_backbone())
        state["h.1.ln_3.bias"] = state.pop("h.1.ln_2.bias")
        load_hf(variant("renamed", state=state))
    with pytest.raises(convert.ConversionError, match="not a gpt_keras model directory"):
        saving.load_model(good)
    with pytest.raises(convert.ConversionError, match="already in the gpt_keras format"):
        convert.convert_checkpoint(saving.save_model(_random_backbone(), tmp_path / "ours"), tmp_path / "x")
    with pytest.raises(convert.ConversionError, match="fixes the MLP width to 4 \\* n_embd"):
        export_hf(_random_backbone(n_inner=100), tmp_path / "wide")


def test_command_line(tmp_path, capsys):
    source = _random_backbone(seed=5)
    src = _write_release(tmp_path / "release", _release_arrays(source))
    assert main(["import", str(src), str(tmp_path / "model"), "--n-head", "4", "--seed", "1"]) == 0
    assert main(["export-hf", str(tmp_path / "model"), str(tmp_path / "hf")]) == 0
    assert main(["export-original", str(tmp_path / "hf"), str(tmp_path / "orig"), "--shards", "4"]) == 0
    assert len(list((tmp_path / "orig").glob("params_*.npy"))) == 4
    back = load_original(tmp_path / "orig", n_head=4)  # no vocabulary: n_special is not implied
    assert back.config.vocab_size == 100
    np.testing.assert_array_equal(back.embed.token_embeddings.numpy()[:97], source.embed.token_embeddings.numpy())
    assert main(["import", str(tmp_path / "nothing"), str(tmp_path / "x")]) == 2
    assert "is not a directory" in capsys.readouterr().err


_WHEEL = os.environ.get("GPT_KERAS_ALLENNLP_WHEEL", "")


@pytest.mark.skipif(not os.path.isfile(_WHEEL),
                    reason="set GPT_KERAS_ALLENNLP_WHEEL to a downloaded allennlp-0.9.0 wheel")
def test_allennlp_fixture(tmp_path):
    """The real original-format fixture of allennlp 0.9.0 (read from the wheel, never committed)."""
    member = "allennlp/tests/fixtures/openai_transformer/transformer_small.tar.gz"
    with zipfile.ZipFile(_WHEEL) as wheel, open(tmp_path / "small.tar.gz", "wb") as f:
        f.write(wheel.read(member))
    with tarfile.open(tmp_path / "small.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    src = tmp_path / "model"
    assert len(json.loads((src / "encoder_bpe.json").read_text())) == 51
    backbone = load_original(src, n_head=2)
    c = backbone.config
    assert (c.vocab_size, c.n_special, c.n_ctx, c.n_layer, c.n_embd, c.n_inner) == (50, 0, 50, 2, 10, 40)
    ids = random_ids(np.random.default_rng(0), (1, 8), 50)
    assert np.isfinite(_outputs(backbone, ids)).all()

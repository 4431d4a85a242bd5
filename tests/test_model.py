"""The GPT-1 backbone and language model: fidelity, masking, serialization, bad input."""
import dataclasses
import inspect

import keras
import numpy as np
import pytest
from helpers import random_ids, tiny_config

import gpt_keras as gk

HF_OPENAI_GPT_PARAMS = 116_534_784  # OpenAIGPTLMHeadModel(OpenAIGPTConfig()), lm_head tied


def _lm(config=None):
    return gk.GPTLMModel(gk.GPTBackbone(**(config or tiny_config()).to_dict()))


def _inputs(ids, mask=None):
    return {"token_ids": ids, "padding_mask": np.ones_like(ids) if mask is None else mask}


def test_gpt1_preset_matches_the_paper_and_hf_parameter_count():
    config = gk.GPTConfig.from_preset("gpt1")
    assert (config.n_layer, config.n_embd, config.n_head, config.n_inner, config.n_ctx) == (12, 768, 12, 3072, 512)
    assert config.vocab_size == 40478 and config.n_special == 3
    assert (config.embd_pdrop, config.attn_pdrop, config.resid_pdrop, config.layer_norm_epsilon) == (0.1, 0.1, 0.1, 1e-5)
    plain = gk.GPTBackbone(**config.replace(n_special=0).to_dict())
    assert plain.count_params() == HF_OPENAI_GPT_PARAMS
    # The LM head is tied: the LM model adds no parameters.
    assert gk.GPTLMModel(plain).count_params() == HF_OPENAI_GPT_PARAMS
    with_specials = gk.with_special_tokens(plain, seed=0)
    assert with_specials.count_params() == HF_OPENAI_GPT_PARAMS + 3 * 768
    np.testing.assert_array_equal(with_specials.embed.token_embeddings.numpy()[:40478],
                                  plain.embed.token_embeddings.numpy())


def test_config_json_round_trip_and_errors():
    config = gk.GPTConfig.from_preset("demo", vocab_size=1234)
    assert gk.GPTConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="Unknown preset 'gpt9'.*available presets"):
        gk.GPTConfig.from_preset("gpt9")
    with pytest.raises(ValueError, match="Unknown GPTConfig keys \\['n_embed'\\]"):
        gk.GPTConfig.from_dict({"n_embed": 3})
    with pytest.raises(ValueError, match="divisible by n_head"):
        gk.GPTConfig(n_embd=10, n_head=3)
    assert (config.start_id, config.delimiter_id, config.classify_id) == (1234, 1235, 1236)
    # A pre-trained LM has no special rows: the answer names the ids they will get and how to add them.
    with pytest.raises(ValueError, match=r"fine-tuning adds them, with ids 1234..1236\); use config.replace"):
        config.replace(n_special=0).start_id


def test_backbone_arguments_and_config_are_the_gpt_config_fields():
    fields = {f.name: f.default for f in dataclasses.fields(gk.GPTConfig)}
    parameters = inspect.signature(gk.GPTBackbone.__init__).parameters
    assert [p for p in parameters if p not in ("self", "kwargs")] == list(fields)
    assert all(p.default == fields[n] for n, p in parameters.items() if p.default is not inspect.Parameter.empty)
    backbone = gk.GPTBackbone(**tiny_config(normalize_first=True).to_dict(), name="b")
    assert backbone.get_config() == {"name": "b", "trainable": True, **backbone.config.to_dict()}
    assert gk.GPTBackbone.from_config(backbone.get_config()).config == backbone.config


def test_weights_start_from_the_paper_initialisation():
    backbone = gk.GPTBackbone.from_preset("demo", vocab_size=4000)
    tokens = backbone.embed.token_embeddings.numpy()
    assert abs(tokens.std() - 0.02) < 0.001 and abs(tokens.mean()) < 0.001
    block = backbone.blocks[0]
    assert np.all(block.c_fc.bias.numpy() == 0) and np.all(block.attn.c_attn.bias.numpy() == 0)
    assert np.all(block.ln_1.gamma.numpy() == 1)


BLOCK_ORDERS = pytest.mark.parametrize("normalize_first", [False, True], ids=["post_ln", "pre_ln"])


@BLOCK_ORDERS
def test_future_tokens_never_change_earlier_logits(normalize_first):
    rng = np.random.default_rng(0)
    lm = _lm(tiny_config().replace(normalize_first=normalize_first))
    ids = random_ids(rng, (2, 12), 97)
    changed = ids.copy()
    changed[:, 7:] = random_ids(rng, (2, 5), 97)
    a, b = lm(_inputs(ids)).numpy(), lm(_inputs(changed)).numpy()
    np.testing.assert_allclose(a[:, :7], b[:, :7], atol=1e-6)
    assert np.abs(a[:, 7:] - b[:, 7:]).max() > 1e-3


@BLOCK_ORDERS
def test_padding_never_changes_loss_or_predictions(normalize_first):
    rng = np.random.default_rng(1)
    lm = _lm(tiny_config().replace(normalize_first=normalize_first))
    ids = random_ids(rng, (1, 9), 97)
    loss, count = gk.losses.lm_loss_sum(lm(_inputs(ids)), ids, np.ones_like(ids))
    # Right padding with junk ids under the mask.
    right = np.concatenate([ids, random_ids(rng, (1, 5), 97)], axis=1)
    right_mask = np.array([[1] * 9 + [0] * 5], "int32")
    logits_r = lm(_inputs(right, right_mask))
    loss_r, count_r = gk.losses.lm_loss_sum(logits_r, right, right_mask)
    assert float(count_r) == float(count) == 8
    np.testing.assert_allclose(float(loss_r), float(loss), rtol=1e-5)
    # Left padding: positions come from the mask, so predictions are unchanged.
    left = np.concatenate([np.zeros((1, 5), "int32"), ids], axis=1)
    left_mask = np.array([[0] * 5 + [1] * 9], "int32")
    logits_l = lm(_inputs(left, left_mask)).numpy()[:, 5:]
    np.testing.assert_allclose(logits_l, lm(_inputs(ids)).numpy(), atol=1e-5)
    loss_l, count_l = gk.losses.lm_loss_sum(lm(_inputs(left, left_mask)), left, left_mask)
    np.testing.assert_allclose(float(loss_l), float(loss), rtol=1e-5)


@BLOCK_ORDERS
def test_kv_cache_incremental_forward_equals_full_forward(normalize_first):
    rng = np.random.default_rng(2)
    backbone = gk.GPTBackbone(**tiny_config().replace(normalize_first=normalize_first).to_dict())
    ids = random_ids(rng, (2, 10), 97)
    full = backbone(_inputs(ids)).numpy()
    cache = backbone.empty_cache(2, 10)
    prefix = 6
    causal = np.tril(np.ones((10, 10), bool))
    h, cache = backbone.call_with_cache(ids[:, :prefix], np.tile(np.arange(prefix), (2, 1)),
                                        np.tile(causal[None, :prefix], (2, 1, 1)), cache, 0)
    steps = [h.numpy()]
    for t in range(prefix, 10):
        h, cache = backbone.call_with_cache(ids[:, t:t + 1], np.full((2, 1), t),
                                            np.tile(causal[None, t:t + 1], (2, 1, 1)), cache, t)
        steps.append(h.numpy())
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


def test_pre_ln_is_gpt2s_block_order_and_is_kept_out_of_gpt1_formats(tmp_path):
    """normalize_first: x + attn(LN(x)), x + mlp(LN(x)), then ln_f; the model
    format keeps it, and the HF and original-layout writers refuse it."""
    from gpt_keras import convert
    from gpt_keras.convert.hf import export_hf
    from gpt_keras.convert.original import write_original
    config = tiny_config().replace(normalize_first=True, n_inner=4 * tiny_config().n_embd)
    backbone = gk.GPTBackbone(**config.to_dict())
    ids = random_ids(np.random.default_rng(4), (2, 6), 97)
    x = backbone.embed(ids, np.tile(np.arange(6), (2, 1)))
    mask = gk.model.attention_mask(np.ones_like(ids))
    for block in backbone.blocks:
        n = x + block.attn(block.ln_1(x), attention_mask=mask)
        x = n + block.c_proj(keras.activations.gelu(block.c_fc(block.ln_2(n)), approximate=True))
    expected = backbone.ln_f(x).numpy()
    np.testing.assert_allclose(backbone(_inputs(ids)).numpy(), expected, atol=1e-5)
    backbone.save_to_preset(str(tmp_path / "pre"))
    loaded = gk.GPTBackbone.from_preset(str(tmp_path / "pre"))
    assert loaded.config.normalize_first
    np.testing.assert_allclose(loaded(_inputs(ids)).numpy(), expected, atol=1e-5)
    for write in (lambda: export_hf(backbone, tmp_path / "hf"),
                  lambda: write_original(backbone, tmp_path / "orig")):
        with pytest.raises(convert.ConversionError, match="pre-LN .* not GPT-1"):
            write()
    assert not (tmp_path / "hf" / "model.safetensors").exists() and not (tmp_path / "orig").exists()


@pytest.mark.parametrize("family,kwargs", [("classification", {"num_labels": 3}),
                                           ("multiple_choice", {"num_choices": 2}),
                                           ("regression", {})])
def test_save_and_load_round_trip(tmp_path, family, kwargs):
    rng = np.random.default_rng(3)
    lm = _lm()
    ids = random_ids(rng, (2, 8), 97)
    path = str(tmp_path / "lm.keras")
    lm.save(path)
    np.testing.assert_array_equal(keras.models.load_model(path)(_inputs(ids)).numpy(), lm(_inputs(ids)).numpy())

    task = gk.GPTTaskModel(lm.backbone, family, **kwargs)
    n_seq = task.family.num_sequences(task.num_choices)
    x = _inputs(np.concatenate([random_ids(rng, (2, n_seq, 5), 97),
                                np.full((2, n_seq, 1), task.classify_id, "int32")], axis=-1))
    path = str(tmp_path / "task.keras")
    task.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.family == task.family and loaded.lm_weight == task.lm_weight
    np.testing.assert_array_equal(loaded(x).numpy(), task(x).numpy())


def test_bad_inputs_get_clear_errors():
    lm = _lm()
    ids = np.array([[1, 2, 100]], "int32")  # 100 >= 97 + 3 rows
    with pytest.raises(ValueError, match="Token id out of range.*100 rows"):
        lm(_inputs(ids))
    with pytest.raises(ValueError, match="Token id out of range"):
        lm(_inputs(np.array([[1, -1]], "int32")))
    too_long = np.ones((1, 33), "int32")
    with pytest.raises(ValueError, match="exceeds the model context n_ctx=32"):
        lm(_inputs(too_long))
    with pytest.raises(ValueError, match="Unknown task family 'sentiment'"):
        gk.GPTTaskModel(lm.backbone, "sentiment", num_labels=2)
    task = gk.GPTTaskModel(lm.backbone, "multiple_choice", num_choices=4)
    with pytest.raises(ValueError, match="expects 4 choices \\(K\\) per example, but the data has 3"):
        task(_inputs(np.ones((2, 3, 5), "int32")))
    with pytest.raises(ValueError, match="needs num_labels >= 2"):
        gk.GPTTaskModel(lm.backbone, "classification")

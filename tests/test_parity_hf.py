"""Numerical parity with HF transformers' PyTorch GPT-1 (`[parity]` extra).

Tiny random HF models are converted; our logits must match within 1e-4 (max
abs) through the HF layout, the original release layout and the HF export,
and our multiple-choice model must match `OpenAIGPTDoubleHeadsModel`.
"""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import gpt_keras as gk  # noqa: E402
from gpt_keras.convert.hf import export_hf, load_hf  # noqa: E402
from gpt_keras.convert.original import load_original  # noqa: E402
from gpt_keras.preprocessor import pad  # noqa: E402

pytestmark = pytest.mark.parity

ATOL = 1e-4
VOCAB, N_CTX, N_EMBD = 100, 32, 64
HF_OPENAI_GPT_PARAMS = 116_534_784


def _hf_config(**overrides):
    values = dict(vocab_size=VOCAB, n_positions=N_CTX, n_embd=N_EMBD, n_layer=2, n_head=4,
                  embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0, summary_first_dropout=0.0)
    values.update(overrides)
    return transformers.OpenAIGPTConfig(**values)


def _randomize(model, seed=0):
    """Larger-than-init random weights (LayerNorm gains around 1, nonzero biases),
    so that logits are O(1..10) and a transposed or swapped array shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            base = 1.0 if name.endswith(("ln_1.weight", "ln_2.weight")) else 0.0
            p.copy_(base + 0.15 * torch.randn(p.shape, generator=gen))
    return model.eval()


@pytest.fixture(scope="module")
def hf_lm():
    torch.manual_seed(0)
    return _randomize(transformers.OpenAIGPTLMHeadModel(_hf_config()))


@pytest.fixture(scope="module")
def hf_dir(hf_lm, tmp_path_factory):
    path = tmp_path_factory.mktemp("hf")
    hf_lm.save_pretrained(path)
    return path


IDS = np.random.default_rng(0).integers(0, VOCAB, (3, N_CTX)).astype("int32")


def _hf_logits(model, ids, **kwargs):
    with torch.no_grad():
        return model(torch.tensor(ids, dtype=torch.long), **kwargs).logits.numpy()


def _our_logits(backbone, ids, mask=None):
    mask = np.ones_like(ids) if mask is None else mask
    return gk.GPTLMModel(backbone)({"token_ids": ids, "padding_mask": mask}).numpy()


def _assert_close(ours, ref):
    assert np.abs(ref).max() > 1.0  # the weights are not trivially small
    np.testing.assert_allclose(ours, ref, rtol=0, atol=ATOL)


def test_hf_checkpoint_logits(hf_lm, hf_dir):
    backbone = load_hf(hf_dir)
    assert backbone.config.n_special == 0 and backbone.config.vocab_size == VOCAB
    _assert_close(_our_logits(backbone, IDS), _hf_logits(hf_lm, IDS))


def test_padding_matches_hf_with_explicit_positions(hf_lm, hf_dir):
    """Right and left padding: HF given the mask (and, for left padding, the
    positions our model derives from it) agrees on every real token."""
    backbone = load_hf(hf_dir)
    mask = np.ones_like(IDS)
    mask[0, 20:] = 0            # right padding
    mask[1, :9] = 0             # left padding
    positions = np.maximum(np.cumsum(mask, axis=-1) - 1, 0)
    ref = _hf_logits(hf_lm, IDS, attention_mask=torch.tensor(mask),
                     position_ids=torch.tensor(positions, dtype=torch.long))
    ours = _our_logits(backbone, IDS, mask)
    real = mask.astype(bool)
    _assert_close(ours[real], ref[real])


def test_pytorch_bin_checkpoint(hf_lm, tmp_path):
    # Older checkpoints ship only a pickled state dict (the hub's lacks the prefix).
    state = {k.removeprefix("transformer."): v for k, v in hf_lm.state_dict().items()}
    torch.save(state, tmp_path / "pytorch_model.bin")
    hf_lm.config.save_pretrained(tmp_path)
    assert (tmp_path / "pytorch_model.bin").is_file() and not (tmp_path / "model.safetensors").exists()
    _assert_close(_our_logits(load_hf(tmp_path), IDS), _hf_logits(hf_lm, IDS))


def _write_release_from_torch(model, path):
    """The HF weights written in the original release layout, by hand: release
    order, `[1, in, out]` conv weights, 3 shards."""
    sd = {k.removeprefix("transformer."): v.numpy() for k, v in model.state_dict().items()}
    arrays = [sd["positions_embed.weight"], sd["tokens_embed.weight"]]
    for i in range(model.config.n_layer):
        for part in ("attn.c_attn", "attn.c_proj", "ln_1", "mlp.c_fc", "mlp.c_proj", "ln_2"):
            w = sd[f"h.{i}.{part}.weight"]
            arrays += [w[None] if w.ndim == 2 else w, sd[f"h.{i}.{part}.bias"]]
    path.mkdir()
    (path / "params_shapes.json").write_text(json.dumps([list(a.shape) for a in arrays]))
    for i, shard in enumerate(np.array_split(np.concatenate([a.reshape(-1) for a in arrays]), 3)):
        np.save(path / f"params_{i}.npy", shard)
    return path


def test_original_release_logits(hf_lm, tmp_path):
    src = _write_release_from_torch(hf_lm, tmp_path / "release")
    backbone = load_original(src, n_head=4)
    _assert_close(_our_logits(backbone, IDS), _hf_logits(hf_lm, IDS))


def test_hf_export_round_trip(hf_lm, hf_dir, tmp_path):
    backbone = load_hf(hf_dir)
    exported = transformers.OpenAIGPTLMHeadModel.from_pretrained(export_hf(backbone, tmp_path / "plain"))
    _assert_close(_hf_logits(exported.eval(), IDS), _hf_logits(hf_lm, IDS))
    # With the special-token rows: HF sees them as ordinary vocabulary rows,
    # and the way back restores n_special.
    special = gk.with_special_tokens(backbone, seed=0)
    dst = export_hf(special, tmp_path / "special")
    exported = transformers.OpenAIGPTLMHeadModel.from_pretrained(dst).eval()
    assert exported.config.vocab_size == VOCAB + 3
    ids = IDS.copy()
    ids[:, 0], ids[:, 10], ids[:, -1] = VOCAB, VOCAB + 1, VOCAB + 2
    _assert_close(_our_logits(special, ids), _hf_logits(exported, ids))
    assert load_hf(dst).config == special.config


def test_double_heads_mc_logits(tmp_path):
    """Our multiple-choice task model scores == OpenAIGPTDoubleHeadsModel's mc_logits."""
    torch.manual_seed(1)
    hf = _randomize(transformers.OpenAIGPTDoubleHeadsModel(_hf_config(vocab_size=VOCAB + 3)), seed=1)
    hf.save_pretrained(tmp_path)
    backbone = load_hf(tmp_path, n_special=3)  # no vocabulary files: say where the specials are
    task = gk.GPTTaskModel(backbone, "multiple_choice", num_choices=3)
    summary = hf.multiple_choice_head.summary  # nn.Linear(n_embd, 1): weight [out, in]
    task.head.kernel.assign(summary.weight.detach().numpy().T)
    task.head.bias.assign(summary.bias.detach().numpy())

    rng = np.random.default_rng(2)
    ragged = lambda *lens: [rng.integers(0, VOCAB, n).tolist() for n in lens]  # noqa: E731
    context = ragged(7, 12)
    choices = [ragged(3, 5, 2), ragged(6, 1, 4)]
    config = task.backbone.config
    built = gk.build_inputs("multiple_choice", {"context": context, "choices": choices}, N_CTX,
                            (config.start_id, config.delimiter_id, config.classify_id))
    inputs = {k: v.numpy() for k, v in pad(built["token_ids"]).items()}
    ours = task(inputs).numpy()

    ids = inputs["token_ids"]
    mc_token_ids = (ids == config.classify_id).argmax(-1)
    with torch.no_grad():
        # HF flattens the choices of input_ids but not of the mask, so pass it flat.
        mask = torch.tensor(inputs["padding_mask"]).reshape(-1, ids.shape[-1])
        out = hf(torch.tensor(ids, dtype=torch.long), attention_mask=mask,
                 mc_token_ids=torch.tensor(mc_token_ids, dtype=torch.long))
    assert ours.shape == tuple(out.mc_logits.shape) == (2, 3)
    assert np.abs(ours).max() > 0.5
    np.testing.assert_allclose(ours, out.mc_logits.numpy(), rtol=0, atol=ATOL)


def test_gpt1_parameter_count_equals_hf():
    with torch.device("meta"):  # shapes only: nothing is allocated or run
        hf = transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig())
    unique = {id(p): p.numel() for p in hf.parameters()}  # the tied lm_head counts once
    assert sum(unique.values()) == HF_OPENAI_GPT_PARAMS
    plain = gk.GPTBackbone.from_preset("gpt1", n_special=0)
    assert plain.count_params() == HF_OPENAI_GPT_PARAMS
    assert gk.GPTBackbone.from_preset("gpt1").count_params() == HF_OPENAI_GPT_PARAMS + 3 * 768


def test_scores_match_hf_log_probabilities(hf_lm, hf_dir):
    """LMScorer's per-token log-probabilities equal HF's log-softmax on the same weights."""
    from gpt_keras.scoring import LMScorer

    rows = [list(IDS[0]), list(IDS[1][:20]), list(IDS[2][:7])]
    ours = LMScorer(load_hf(hf_dir), batch_size=2).score_ids(rows)
    for row, lp in zip(rows, ours):
        with torch.no_grad():
            logp = torch.log_softmax(hf_lm(torch.tensor([row], dtype=torch.long)).logits[0], -1).numpy()
        reference = [logp[t, row[t + 1]] for t in range(len(row) - 1)]
        assert np.abs(reference).max() > 1.0
        np.testing.assert_allclose(lp, reference, rtol=0, atol=ATOL)

"""Compressed (bf16) weights for generation: agreement with fp32, the source model untouched,
the export, and `gpt_keras.convert.state.backbone_state` never writing quantized kernels without their scales."""
import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import tiny_config

import gpt_keras as gk
from gpt_keras import compress, convert
from gpt_keras.convert.state import backbone_state
from gpt_keras.generate import generate
from gpt_keras.generate.core import head_logits

PROMPTS = [[5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9], [42]]


@pytest.fixture(scope="module")
def backbone():
    # Wide weights: peaked, varied predictions (as in test_generate.py).
    keras.utils.set_random_seed(7)
    return gk.GPTBackbone(**tiny_config(initializer_range=0.5).to_dict())


def test_bf16_generation_agrees_with_fp32(backbone):
    reference = generate(backbone, PROMPTS, 12, jit_compile=False)
    assert generate(backbone, PROMPTS, 12, weights="bf16") == reference
    # Teacher-forced: the bf16 logits stay within bf16 rounding of fp32's.
    view = compress.compressed_backbone(backbone, "bf16")
    ids = np.asarray([PROMPTS[1]])
    inputs = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    fp32 = head_logits(backbone)(backbone(inputs)[0]).numpy()
    bf16 = head_logits(view)(view(inputs)[0]).numpy()
    assert (fp32.argmax(-1) == bf16.argmax(-1)).all()
    np.testing.assert_allclose(bf16, fp32, atol=0.05 * np.abs(fp32).max())


def test_the_view_compresses_every_matrix_and_the_head_and_leaves_the_source_alone(backbone):
    before = [(w.dtype, w.numpy().copy()) for w in backbone.weights]
    view = compress.compressed_backbone(backbone, "bf16")
    matrices = [m for b in view.blocks for m in (b.attn.c_attn, b.attn.c_proj, b.c_fc, b.c_proj)]
    assert all(isinstance(m, compress.BF16Dense) and m.kernel.dtype == tf.bfloat16 for m in matrices)
    assert view.lm_head_layer.kernel.shape == (backbone.config.n_embd, backbone.config.vocab_size)
    assert view.lm_head_layer.kernel.dtype == tf.bfloat16
    assert len(view.compressed_layers) == 4 * backbone.config.n_layer + 1
    assert all(w.dtype == "float32" for w in view.kept_variables)  # embeddings and LayerNorms, shared
    assert len(backbone.weights) == len(before)
    for (dtype, value), w in zip(before, backbone.weights):
        assert w.dtype == dtype and np.array_equal(w.numpy(), value)
    assert compress.compressed_backbone(backbone, "fp32") is backbone
    with pytest.raises(ValueError, match="Unknown weights 'int3'"):
        compress.compressed_backbone(backbone, "int3")
    with pytest.raises(ValueError, match="Unknown weights"):
        generate(backbone, PROMPTS, 2, weights="fp16")


def test_the_cached_bf16_copy_follows_new_weights():
    keras.utils.set_random_seed(3)
    model = gk.GPTBackbone(**tiny_config(initializer_range=0.5).to_dict())
    first = generate(model, PROMPTS, 6, weights="bf16")
    for i, w in enumerate(model.weights):  # "training" changes the weights: the bf16 copy must be rebuilt
        w.assign(w + tf.random.stateless_normal(w.shape, [i, 0]) * 0.5)
    assert generate(model, PROMPTS, 6, weights="bf16") == generate(model, PROMPTS, 6, jit_compile=False) != first


def test_bf16_export_serves_the_same_tokens_with_core_ops_only(backbone, tmp_path):
    from gpt_keras.export.lm import LMServingModule
    from gpt_keras.tokenizer import count_words, train_bpe

    tok = train_bpe(count_words(["the cat sat on the mat", "a dog ran in the park"] * 5), num_merges=40)
    keras.utils.set_random_seed(7)
    model = gk.GPTBackbone(**tiny_config(vocab_size=tok.n_vocab, initializer_range=0.5).to_dict())
    module = LMServingModule(model, tok, max_new_tokens=5, weights="bf16")
    tf.saved_model.save(module, str(tmp_path), signatures=module.signatures())
    loaded = tf.saved_model.load(str(tmp_path))
    out = loaded.signatures["serving_default"](prompt=tf.constant(["the cat"]), max_new_tokens=tf.constant([5]))
    expected = generate(model, [tok.encode("the cat")], 5, jit_compile=False)[0]
    assert out["token_ids"].numpy()[0, :out["num_tokens"].numpy()[0]].tolist() == expected
    graph_ops = {n.op for f in loaded.signatures["serving_default"].graph.as_graph_def().library.function
                 for n in f.node_def}
    assert not {op for op in graph_ops if op.startswith("Xla")}
    # The export carries the bf16 matrices, not the fp32 ones.
    reader = tf.train.load_checkpoint(str(tmp_path / "variables" / "variables"))
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    mlp_in = [model.config.n_embd, model.config.n_inner]
    assert [dtypes[k] for k, shape in shapes.items() if shape == mlp_in] == [tf.bfloat16] * model.config.n_layer


def test_backbone_state_dequantizes_int8_and_refuses_other_quantized_kernels():
    keras.utils.set_random_seed(0)
    model = gk.GPTBackbone(**tiny_config().to_dict())
    reference = backbone_state(model)
    for block in model.blocks:
        for dense in (block.attn.c_attn, block.attn.c_proj, block.c_fc, block.c_proj):
            dense.quantize("int8")
    state = backbone_state(model)
    assert all(v.dtype == np.float32 for v in state.values())
    kernel = "h.0.mlp.c_fc.weight"
    step = np.abs(reference[kernel]).max(axis=0) / 127  # one int8 step per output channel
    assert np.all(np.abs(state[kernel] - reference[kernel]) <= step * 0.51 + 1e-7)
    with pytest.raises(ValueError, match="already quantized"):
        compress.compressed_backbone(model, "bf16")
    keras.utils.set_random_seed(0)
    other = gk.GPTBackbone(**tiny_config().to_dict())
    other.blocks[0].c_fc.quantize("int4")
    with pytest.raises(convert.ConversionError, match="quantized \\(int4\\)"):
        backbone_state(other)


def test_cli_weights_flag(tmp_path, capsys):
    from gpt_keras.generate.__main__ import main
    from gpt_keras import saving
    from gpt_keras.tokenizer import count_words, train_bpe

    tok = train_bpe(count_words(["the cat sat on the mat", "a dog ran in the park"] * 5), num_merges=40)
    keras.utils.set_random_seed(0)
    model = gk.GPTBackbone(**tiny_config(vocab_size=tok.n_vocab, initializer_range=0.5).to_dict())
    model_dir = saving.save_model(model, tmp_path / "model", tokenizer=tok)
    assert main(["--model", str(model_dir), "--prompt", "the cat", "--max_new_tokens", "4", "--weights", "bf16"]) == 0
    new = generate(model, [tok.encode("the cat")], 4, weights="bf16")[0]
    assert capsys.readouterr().out.strip() == tok.decode(tok.encode("the cat") + new)

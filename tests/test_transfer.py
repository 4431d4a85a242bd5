"""Transfer modes: frozen is a probe on an inference-mode backbone that stays
as it was, LoRA trains only its adapters (and the special rows), merges
exactly and saves plain, layer_mix learns which block to read."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import gpt_keras as gk
from gpt_keras import saving, transfer
from gpt_keras.export import export_task_model
from gpt_keras.preprocessor import pad, ragged_ids
from gpt_keras.tasks import build_inputs
from gpt_keras.train import TrainSettings, finetune
from helpers import tiny_config

SINGLE = tf.distribute.OneDeviceStrategy("/cpu:0")
VOCAB = 97
SETTINGS = TrainSettings(learning_rate=1e-2, schedule="constant", epochs=1, steps_per_epoch=20, verbose=0)


def _task_data(n=64, seed=0):
    """Label 1 when most of the text is token 5, 0 when it is token 6 (a probe can read it)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    texts = [list(rng.permutation([5 if y else 6] * 7 + list(rng.integers(10, VOCAB, 3)))) for y in labels]
    built = build_inputs("classification", {"text": ragged_ids(texts)}, 32, (VOCAB, VOCAB + 1, VOCAB + 2))
    x = {k: v.numpy() for k, v in pad(built["token_ids"]).items()}
    return tf.data.Dataset.from_tensor_slices((x, labels.astype(np.int32))).batch(16).repeat(), x, labels


def _pretrained(seed=1, **config):
    keras.utils.set_random_seed(seed)
    return gk.GPTBackbone(**tiny_config(vocab_size=VOCAB, n_special=0, **config).to_dict())


def _finetune(mode, backbone, **kwargs):
    data, x, labels = _task_data()
    keras.utils.set_random_seed(2)
    model, _ = finetune(backbone, "classification", data, kwargs.pop("settings", SETTINGS), num_labels=2,
                        strategy=SINGLE, transfer=mode, **kwargs)
    return model, x, labels


def _special_rows(backbone, seed):
    """The special-token rows fine-tuning starts from (finetune draws them with `seed`)."""
    return gk.with_special_tokens(backbone, seed=seed).embed.token_embeddings.numpy()[VOCAB:]


def _lm_loss(model, x, labels):
    """The LM loss of one training-mode pass: it reads only the backbone's output."""
    terms, _ = model.loss_terms((x, labels), training=True)
    return float(terms["lm"][0])


def test_frozen_is_a_probe_on_an_inference_mode_backbone():
    dropout = dict(embd_pdrop=0.1, attn_pdrop=0.1, resid_pdrop=0.1)
    backbone = _pretrained(**dropout)
    before = [w.numpy().copy() for w in backbone.weights]
    model, x, labels = _finetune("frozen", backbone, seed=0)
    for b, a in zip(before, model.backbone.weights):
        if a is model.backbone.embed.token_embeddings:  # the BPE rows, and the special rows as drawn
            np.testing.assert_array_equal(a.numpy()[:VOCAB], b)
            np.testing.assert_array_equal(a.numpy()[VOCAB:], _special_rows(backbone, seed=0))
        else:
            np.testing.assert_array_equal(a.numpy(), b)
    assert {id(w) for w in model.trainable_weights} == {id(w) for w in model.head.weights}
    n_embd = backbone.config.n_embd
    assert transfer.trainable_parameters(model) == n_embd * 2 + 2  # the head only
    # Dropout is off in the frozen backbone, also in training mode; a full model's is on.
    assert _lm_loss(model, x, labels) == _lm_loss(model, x, labels)
    full = gk.GPTTaskModel(model.backbone, "classification", num_labels=2)
    assert _lm_loss(full, x, labels) != _lm_loss(full, x, labels)


def test_lora_trains_only_adapters_and_special_rows_and_merges_exactly():
    backbone = _pretrained()
    before = {w.path: w.numpy().copy() for w in backbone.weights}
    model, x, _ = _finetune("lora", backbone, lora_rank=2, seed=0)
    adapters = [w for w in model.backbone.weights if "lora_kernel" in w.path]
    assert adapters and all(w.trainable for w in adapters)
    assert any(np.abs(w.numpy()).sum() > 0 for w in adapters if w.path.endswith("lora_kernel_b"))
    for w in model.backbone.weights:
        if "lora_kernel" in w.path:
            continue
        old = before[w.path]
        np.testing.assert_array_equal(w.numpy()[:old.shape[0]] if w is model.backbone.embed.token_embeddings
                                      else w.numpy(), old)
    # The special rows learned: they moved away from the draw fine-tuning started from.
    moved = np.abs(model.backbone.embed.token_embeddings.numpy()[VOCAB:] - _special_rows(backbone, seed=0))
    assert (moved.max(axis=1) > 1e-4).all(), moved.max(axis=1)
    expected = model(x, training=False).numpy()
    np.testing.assert_allclose(transfer.merged(model)(x, training=False).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_a_saved_lora_model_is_plain_and_reloads_without_adapters(tmp_path):
    model = gk.GPTTaskModel(gk.with_special_tokens(_pretrained(), seed=0), "classification", num_labels=2,
                            transfer="lora", lora_rank=2)
    for w in model.backbone.weights:  # adapters as if trained: non-zero B
        if w.path.endswith("lora_kernel_b"):
            w.assign(np.random.default_rng(0).normal(0, 0.05, w.shape))
    _, x, _ = _task_data(n=8)
    expected = model(x, training=False).numpy()
    model.save_to_preset(str(tmp_path / "m"))
    assert "lora" not in (tmp_path / "m" / saving.TASK_FILE).read_text()
    assert saving.read_task(tmp_path / "m")["transfer"] == "full"
    loaded = gk.GPTTaskModel.from_preset(str(tmp_path / "m"))
    assert loaded.transfer == "full" and not transfer.has_adapters(loaded)
    assert not [w.path for w in loaded.weights if "lora" in w.path]
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), transfer.merged(model)(x, training=False).numpy())
    np.testing.assert_allclose(loaded(x, training=False).numpy(), expected, rtol=1e-5, atol=1e-5)
    from gpt_keras.tokenizer import count_words, train_bpe
    tok = train_bpe(count_words(["a b c"]), 0)
    with pytest.raises(ValueError, match="BPE tokens"):  # exports check the tokenizer first
        export_task_model(model, tok, str(tmp_path / "exports"), "m")


def test_lora_export_serves_what_the_adapted_model_computes(tmp_path):
    from gpt_keras.tokenizer import count_words, train_bpe
    words = [f"w{i}" for i in range(200)]
    tok = train_bpe(count_words([" ".join(words)] * 3), num_merges=40)
    keras.utils.set_random_seed(1)
    backbone = gk.GPTBackbone(**tiny_config(vocab_size=tok.n_vocab, n_special=0).to_dict())
    model = gk.GPTTaskModel(gk.with_special_tokens(backbone, seed=0), "classification", num_labels=2,
                            transfer="lora", lora_rank=2)
    for w in model.backbone.weights:  # adapters as if trained: non-zero B
        if w.path.endswith("lora_kernel_b"):
            w.assign(np.random.default_rng(0).normal(0, 0.05, w.shape))
    path = export_task_model(model, tok, str(tmp_path / "exports"), "m")
    served = tf.saved_model.load(path).signatures["serving_default"](text=tf.constant(["w1 w2 w3", "w7"]))
    from gpt_keras.preprocessor import TaskPreprocessor
    expected = model(TaskPreprocessor.for_model(model, tok)({"text": ["w1 w2 w3", "w7"]}), training=False)
    np.testing.assert_allclose(served["logits"].numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_layer_mix_learns_to_read_the_block_that_carries_the_signal():
    backbone = _pretrained()
    # Larger weights than a fresh init, so the first block's state separates the labels...
    rng = np.random.default_rng(3)
    backbone.embed.token_embeddings.assign(rng.normal(0, 1, backbone.embed.token_embeddings.shape))
    for dense in transfer.projections(backbone):
        dense.kernel.assign(rng.normal(0, 0.3, dense.kernel.shape))
    # ...and the last block's output is one constant vector: it carries no signal.
    last = backbone.blocks[-1]
    last.ln_2.gamma.assign(np.zeros_like(last.ln_2.gamma.numpy()))
    last.ln_2.beta.assign(rng.normal(0, 1, last.ln_2.beta.shape))
    settings = TrainSettings(learning_rate=1e-2, schedule="constant", epochs=1, steps_per_epoch=60, verbose=0)
    model, _, _ = _finetune("layer_mix", backbone, settings=settings)
    weights = tf.nn.softmax(model.layer_mix).numpy()
    assert weights[0] > 0.6, weights  # away from uniform (0.5), towards the informative first block
    n_embd, n_layer = backbone.config.n_embd, backbone.config.n_layer
    assert transfer.trainable_parameters(model) == 3 * n_embd + (n_embd * 2 + 2) + n_layer


def test_full_mode_trains_everything_and_bad_modes_are_refused():
    model = gk.GPTTaskModel(_pretrained(), "classification", num_labels=2)
    assert transfer.trainable_parameters(model) == sum(int(np.prod(w.shape)) for w in model.weights)
    with pytest.raises(ValueError, match="unknown transfer mode 'adapter'"):
        gk.GPTTaskModel(_pretrained(), "classification", num_labels=2, transfer="adapter")
    with pytest.raises(ValueError, match="lora_rank must be a positive integer"):
        gk.GPTTaskModel(_pretrained(), "classification", num_labels=2, transfer="lora", lora_rank=0)

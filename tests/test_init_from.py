"""`model.init_from`: the pipeline starts from a checkpoint in the original
release or HF layout (tiny random weights), without pre-training; bad
combinations stop before any stage with the key and the fix."""
import os

import numpy as np
import pytest
import tensorflow as tf
import yaml

from gpt_keras import convert, saving
from gpt_keras.convert.hf import export_hf, load_hf
from gpt_keras.convert.original import load_original, write_original
from gpt_keras.config import GPTConfig
from gpt_keras.model import GPTBackbone
from gpt_keras.tokenizer import count_words, train_bpe
from pipelines.config.loading import load_config
from pipelines.config.validation import ConfigError
from pipelines.resolve import resolve
from pipelines.run import run
from pipelines.plan import plan

from tests.test_pipeline_run import NEGATIVE, POSITIVE, _task, _write_data

N_HEAD = 4  # n_embd=32: not GPT-1's 64-wide heads, so the original layout needs model.n_head


def _checkpoint(tmp_path, layout: str) -> str:
    """A tiny random GPT in `layout` with a vocabulary learned from the toy texts."""
    tok = train_bpe(count_words(POSITIVE + NEGATIVE + ["the movie plot actor scene music story ending"] * 3),
                    num_merges=60, mode="original" if layout == "original" else "hf")
    config = GPTConfig(vocab_size=tok.n_vocab, n_special=0, n_ctx=32, n_layer=2, n_embd=32, n_head=N_HEAD,
                       n_inner=128)
    tf.keras.utils.set_random_seed(3)
    backbone = GPTBackbone(**config.to_dict())
    path = tmp_path / f"ckpt_{layout}"
    if layout == "original":
        write_original(backbone, path, n_shards=3)
        tok.save(str(path), format="original")
    else:
        export_hf(backbone, path, tok)
    return str(path)


def _config(tmp_path, checkpoint, layout, **sections):
    corpus = _write_data(tmp_path)
    config = {
        "name": "from_ckpt", "work_dir": str(tmp_path / "work"), "seed": 0,
        "model": {"init_from": checkpoint, **({"n_head": N_HEAD} if layout == "original" else {})},
        "preprocess": {"n_ctx": 32, "val_fraction": 0.1,
                       "corpus": {"input": {"paths": [str(corpus)], "format": "csv", "where": {"source": "lm"}}},
                       "tasks": [_task("toy", corpus)]},
        "pretrain": {"enabled": False},
        "finetune": {"batch_size": 16, "learning_rate": 1e-3, "epochs": 1, "jit_compile": False,
                     "ablation_without_pretraining": False},
    }
    for key, value in sections.items():
        config.setdefault(key, {}).update(value)
    path = tmp_path / "from_ckpt.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _outputs(backbone, ids):
    x = {"token_ids": np.asarray(ids, np.int32), "padding_mask": np.ones_like(ids, np.int32)}
    return np.asarray(backbone(x, training=False))


def _shipped_config_run(tmp_path, checkpoint, *extra):
    """The shipped config, with only the checkpoint, tiny data and sizes set."""
    data = str(_write_data(tmp_path))
    tiny = [f"model.init_from={checkpoint}", f"work_dir={tmp_path / 'work'}", "preprocess.n_ctx=32",
            f"preprocess.corpus.input.paths=[{data}]", "preprocess.corpus.input.where={source: lm}",
            "preprocess.corpus.input.clean_html=false", f"preprocess.tasks.0.input.paths=[{data}]",
            "preprocess.tasks.0.input.where={source: task}", "preprocess.tasks.0.label_names=['0', '1']",
            "preprocess.tasks.0.val_fraction=0.2", "preprocess.tasks.0.test_fraction=0.2",
            "finetune.batch_size=16", "finetune.learning_rate=1e-3", "finetune.epochs=1", *extra]
    return run(["--config", "gpt1_finetune", *[a for s in tiny for a in ("--set", s)]])


def _served(entries):
    loaded = tf.saved_model.load(entries["export"]["outputs"]["saved_model"])
    return loaded.signatures["serving_default"](text=tf.constant(["a great and moving film", "a dull film"]))


@pytest.mark.parametrize("layout", ["original", "hf"])
def test_pipeline_fine_tunes_evaluates_and_exports_from_a_checkpoint(tmp_path, layout):
    checkpoint = _checkpoint(tmp_path, layout)
    entries = _shipped_config_run(tmp_path, checkpoint, *([f"model.n_head={N_HEAD}"] if layout == "original" else []))
    assert "pretrain" in entries and entries["pretrain"]["metrics"]["steps"] == 0  # no pre-training
    for stage in ("import", "vocab", "records/rt_polarity", "finetune/rt_polarity", "evaluate", "export"):
        assert entries[stage]["status"] == "complete", stage
    # The imported model is the checkpoint, weights and vocabulary as they are.
    imported = entries["import"]["outputs"]["model_dir"]
    expected = convert.load_any(checkpoint, **({"n_head": N_HEAD} if layout == "original" else {}))
    ids = [[1, 5, 9, 2, 7]]
    np.testing.assert_array_equal(_outputs(saving.load_backbone(imported), ids), _outputs(expected, ids))
    assert saving.load_tokenizer(imported).mode == layout  # the source's text handling
    out = _served(entries)  # the served model answers
    assert out["probabilities"].shape == (2, 2)
    np.testing.assert_allclose(out["probabilities"].numpy().sum(-1), 1.0, rtol=1e-5)


def test_fine_tuning_starts_from_exactly_the_checkpoint_weights(tmp_path):
    from gpt_keras.train import TrainSettings, finetune

    checkpoint = _checkpoint(tmp_path, "hf")
    source = load_hf(checkpoint)
    ids = np.array([[[1, 5, 9, 2, 7]]], np.int32)
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    seen = {}

    class Capture(tf.keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen["start"] = _outputs(self.model.backbone, ids[:, 0])

    data = tf.data.Dataset.from_tensors((x, np.array([1], np.int32))).repeat(2)
    finetune(source, "classification", data, TrainSettings(epochs=1, steps_per_epoch=1, verbose=0), num_labels=2,
             callbacks=[Capture()], seed=0, strategy=tf.distribute.OneDeviceStrategy("/cpu:0"))
    np.testing.assert_array_equal(seen["start"], _outputs(source, ids[:, 0]))


def _assert_fresh(weight):
    """As `GPTBackbone` initialises it: LayerNorm gain 1 and shift 0, zero
    biases, N(0, 0.02) kernels."""
    name, value = weight.path.rsplit("/", 1)[-1], weight.numpy()
    if name == "gamma":
        np.testing.assert_array_equal(value, 1.0, err_msg=weight.path)
    elif name in ("beta", "bias"):
        np.testing.assert_array_equal(value, 0.0, err_msg=weight.path)
    else:
        assert abs(float(value.std()) - 0.02) < 0.01, weight.path


@pytest.mark.parametrize("normalize_first", [False, True], ids=["post_ln", "pre_ln"])
def test_n_transfer_keeps_the_embeddings_and_first_blocks_and_the_rest_start_fresh(normalize_first):
    from gpt_keras.train import transfer_blocks

    source = GPTBackbone(**GPTConfig.from_preset("tiny", normalize_first=normalize_first).to_dict())
    rng = np.random.default_rng(1)
    for w in source.weights:  # no weight looks fresh: LayerNorms and biases included
        w.assign(rng.normal(0.5, 1.0, w.shape))
    for n in (0, 1):
        got = transfer_blocks(source, n)
        for a, b in zip(got.embed.weights, source.embed.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        for i, (block, old) in enumerate(zip(got.blocks, source.blocks)):
            assert len(block.weights) == 12  # 4 kernels, 4 biases, 2 LayerNorms: all checked
            for a, b in zip(block.weights, old.weights):
                if i < n:
                    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
                else:
                    _assert_fresh(a)
        # Pre-LN's ln_f normalises the last block's output: it starts fresh with that block.
        for w in got.ln_f.weights if normalize_first else []:
            _assert_fresh(w)
    assert transfer_blocks(source, None) is source and transfer_blocks(source, 2) is source
    with pytest.raises(ValueError, match=r"n_transfer must be an integer in 0..2"):
        transfer_blocks(source, 3)


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("ckpt"), "hf")


@pytest.mark.parametrize("sets, error", [
    (["model.preset=gpt1"], r"model.preset='gpt1' disagrees with model.init_from=.*n_layer=12 vs 2.*remove model.preset"),
    (["model.overrides.n_embd=64"], r"model.overrides.n_embd=64 disagrees .* n_embd=32; remove the override"),
    (["preprocess.num_merges=100"], r"preprocess.num_merges: asks for a learned vocabulary.*remove preprocess.num_merges"),
    (["preprocess.tokenizer_mode=original"], r"preprocess.tokenizer_mode='original' contradicts .* mode is 'hf'.*remove"),
    (["preprocess.vocab_dir=/tmp"], r"preprocess.vocab_dir='/tmp' asks for another vocabulary.*remove preprocess.vocab_dir"),
    (["preprocess.n_ctx=64"], r"preprocess.n_ctx=64 is more than the 32 positions .* set preprocess.n_ctx <= 32"),
    (["finetune.n_transfer=3"], r"finetune.n_transfer=3 is more than the 2 blocks .* use 0..2"),
    (["finetune.n_transfer=-1"], r"finetune.n_transfer: must be >= 0"),
    (["model.n_head=8"], r"model.n_head: .*n_head=8 was requested, but .* n_head=4"),
    (["model.init_from=/nonexistent/dir"], r"model.init_from: '/nonexistent/dir' is not a directory nor a released model"),
])
def test_bad_combinations_stop_before_any_stage(tmp_path, hf_checkpoint, sets, error):
    config = _config(tmp_path, hf_checkpoint, "hf")
    with pytest.raises(ConfigError, match=error):
        plan(load_config(config, sets))
    assert not os.path.exists(tmp_path / "work")


def test_resolve_takes_the_sizes_and_tokenizer_mode_from_the_checkpoint(tmp_path, hf_checkpoint):
    resolved = resolve(load_config(_config(tmp_path, hf_checkpoint, "hf"), ["analysis.figure2=true"]))
    assert (resolved.checkpoint.format, resolved.checkpoint.path) == ("hf", hf_checkpoint)
    assert (resolved.tokenizer_mode, resolved.n_layer) == ("hf", 2)
    assert resolved.gpt_config(1) == resolved.checkpoint.config  # the checkpoint's sizes, whatever the tokenizer
    assert resolved.analysis_variants == {"layers_0": {"n_transfer": 0}, "layers_1": {"n_transfer": 1}}


def test_corrupt_or_missing_checkpoint_files_name_the_key(tmp_path):
    checkpoint = _checkpoint(tmp_path, "original")
    config = _config(tmp_path, checkpoint, "original")
    with pytest.raises(ConfigError, match=r"model.n_head: .*pass n_head"):
        plan(load_config(config, ["model.n_head=null"]))
    os.remove(os.path.join(checkpoint, "params_1.npy"))
    with pytest.raises(ConfigError, match=r"model.init_from: cannot start from .*Missing shard\(s\) params_1.npy"):
        plan(load_config(config))
    hf = _checkpoint(tmp_path, "hf")
    with open(os.path.join(hf, "model.safetensors"), "r+b") as f:
        f.truncate(100)
    with pytest.raises(ConfigError, match=r"model.init_from: cannot start from"):
        plan(load_config(_config(tmp_path, hf, "hf")))
    _checkpoint(tmp_path, "hf")  # whole again; now only the vocabulary is missing
    for name in ("vocab.json", "merges.txt"):
        os.remove(os.path.join(hf, name))
    with pytest.raises(ConfigError, match=r"model.init_from: .* has no vocabulary files.*preprocess.vocab_dir"):
        plan(load_config(_config(tmp_path, hf, "hf")))


def test_pretrain_disabled_without_a_checkpoint_is_an_error(tmp_path):
    config = _config(tmp_path, "", "hf", model={"preset": "tiny"})
    with pytest.raises(ConfigError, match=r"pretrain.enabled: false needs model.init_from"):
        load_config(config)


_WHEEL = os.environ.get("GPT_KERAS_ALLENNLP_WHEEL", "")


@pytest.mark.skipif(not os.path.isfile(_WHEEL),
                    reason="set GPT_KERAS_ALLENNLP_WHEEL to a downloaded allennlp-0.9.0 wheel")
def test_allennlp_fixture_weights_fine_tune_with_a_vocabulary_of_our_own(tmp_path):
    """The fixture's vocabulary maps `<unk>` and `ee</w>` to id 0, which the tokenizer
    refuses (docs/init_from.md says why); its weights run with a 50-id vocabulary."""
    import shutil
    import tarfile
    import zipfile

    member = "allennlp/tests/fixtures/openai_transformer/transformer_small.tar.gz"
    with zipfile.ZipFile(_WHEEL) as wheel, open(tmp_path / "small.tar.gz", "wb") as f:
        f.write(wheel.read(member))
    with tarfile.open(tmp_path / "small.tar.gz") as tar:
        tar.extractall(tmp_path / "fixture", filter="data")
    weights = tmp_path / "weights"
    weights.mkdir()
    for name in os.listdir(tmp_path / "fixture" / "model"):
        if name.startswith("params_"):
            shutil.copy(tmp_path / "fixture" / "model" / name, weights / name)
    texts = POSITIVE + NEGATIVE + ["the movie plot actor scene music story ending"]
    vocab = next(t for k in range(60) if (t := train_bpe(count_words(texts), num_merges=k, min_frequency=1)).n_vocab >= 50)
    assert vocab.n_vocab == 50  # the fixture's 50 embedding rows
    vocab.save(str(tmp_path / "vocab"), format="original")
    entries = _shipped_config_run(tmp_path, str(weights), "model.n_head=2", f"preprocess.vocab_dir={tmp_path / 'vocab'}")
    imported = saving.load_backbone(entries["import"]["outputs"]["model_dir"])
    np.testing.assert_array_equal(_outputs(imported, [[1, 2, 3]]),
                                  _outputs(load_original(weights, n_head=2), [[1, 2, 3]]))
    assert _served(entries)["probabilities"].shape == (2, 2)


def test_continued_pretraining_starts_from_the_checkpoint(tmp_path):
    checkpoint = _checkpoint(tmp_path, "hf")
    config = _config(tmp_path, checkpoint, "hf", pretrain={
        "enabled": True, "batch_size": 8, "learning_rate": 1e-3, "warmup": 1, "max_steps": 2,
        "steps_per_checkpoint": 2, "validation_batches": 1, "jit_compile": False})
    entries = run(["--config", config, "--stages", "preprocess,pretrain"])
    assert entries["pretrain"]["metrics"]["steps"] == 2
    trained = saving.load_backbone(entries["pretrain"]["outputs"]["model_dir"])
    source = load_hf(checkpoint)
    assert trained.config == source.config  # the checkpoint's sizes, still without special rows
    moved = [float(np.abs(a.numpy() - b.numpy()).max()) for a, b in zip(trained.weights, source.weights)]
    assert 0 < max(moved) < 0.05  # two small steps away from the checkpoint, not a fresh model

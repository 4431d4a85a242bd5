"""The one model directory (`gpt_keras.saving`), `from_preset(dir)`, the task
preprocessor and `predict`: what a user saves is what loads, in a fresh process too."""
import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import gpt_keras as gk
from gpt_keras import saving
from gpt_keras.preprocessor import TaskPreprocessor, predict
from gpt_keras.tokenizer import GPTTokenizer, count_words, train_bpe
from helpers import tiny_config

CORPUS = ["a great movie with a good plot", "an awful film with bad acting and a dull story",
          "the actors were good but the plot was thin", "boring, slow and far too long"] * 10
TEXTS = ["a great movie", "awful, dull film", "the plot was thin"]
FAMILIES = {
    "classification": dict(num_labels=3, label_names=["neg", "neutral", "pos"]),
    "entailment": dict(num_labels=2),
    "similarity": dict(num_labels=2, label_names=["different", "same"]),
    "regression": {},
    "multiple_choice": dict(num_choices=2),
}


@pytest.fixture(scope="module")
def tok():
    return train_bpe(count_words(CORPUS), num_merges=60)


def _model(tok, family, seed=3):
    keras.utils.set_random_seed(seed)
    backbone = gk.GPTBackbone(**tiny_config(vocab_size=tok.n_vocab).to_dict())
    return gk.GPTTaskModel(backbone, family, **FAMILIES[family])


def _rows(family):
    if family == "multiple_choice":
        return {"context": TEXTS, "choices": [[t, TEXTS[0]] for t in TEXTS]}
    fields = gk.TaskFamily(family).fields
    return {f: TEXTS[i:] + TEXTS[:i] for i, f in enumerate(fields)}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_task_model_round_trips_through_its_directory(tok, family, tmp_path):
    model = _model(tok, family)
    model.save_to_preset(str(tmp_path / "m"), tok)
    x = TaskPreprocessor.for_model(model, tok)(_rows(family))
    loaded = gk.GPTTaskModel.from_preset(str(tmp_path / "m"))
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    assert saving.read_task(tmp_path / "m") == model.task_section()
    assert loaded.label_names == FAMILIES[family].get("label_names")
    # A fine-tuned directory is also a pre-trained one: its backbone loads alone.
    backbone = gk.GPTBackbone.from_preset(str(tmp_path / "m"))
    np.testing.assert_array_equal(backbone.embed.token_embeddings.numpy(),
                                  model.backbone.embed.token_embeddings.numpy())


def test_fine_tuned_directory_predicts_the_same_in_a_fresh_process(tok, tmp_path):
    model = _model(tok, "classification")
    model.save_to_preset(str(tmp_path / "m"), tok)
    before = predict(model, tok, {"text": TEXTS})
    script = textwrap.dedent(f"""
        import json
        import gpt_keras as gk
        from gpt_keras import saving
        from gpt_keras.preprocessor import predict
        model = gk.GPTTaskModel.from_preset({str(tmp_path / "m")!r})
        out = predict(model, saving.load_tokenizer({str(tmp_path / "m")!r}), {{"text": {TEXTS!r}}})
        print(json.dumps({{"probabilities": out["probabilities"].tolist(),
                           "label": [x.decode() for x in out["label"]]}}))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    after = json.loads(run.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(after["probabilities"], before["probabilities"], rtol=1e-6, atol=1e-7)
    assert after["label"] == [x.decode() for x in before["label"]]
    assert set(after["label"]) <= {"neg", "neutral", "pos"}


def test_predict_equals_the_model_on_the_preprocessor_output(tok):
    model = _model(tok, "entailment")
    out = predict(model, tok, {"premise": TEXTS, "hypothesis": TEXTS[::-1]}, batch_size=2)
    x = TaskPreprocessor.for_model(model, tok)({"premise": TEXTS, "hypothesis": TEXTS[::-1]})
    np.testing.assert_allclose(out["logits"], model(x).numpy(), rtol=1e-5, atol=1e-6)
    assert out["label"].tolist() == [str(i).encode() for i in out["logits"].argmax(-1)]
    with pytest.raises(ValueError, match="missing \\['hypothesis'\\]"):
        predict(model, tok, {"premise": TEXTS})


def test_preprocessor_python_and_graph_paths_give_the_same_inputs(tok):
    python = TaskPreprocessor(tok, "multiple_choice", 16, num_choices=2)
    graph = TaskPreprocessor(tok, "multiple_choice", 16, num_choices=2, in_graph=True)
    rows = _rows("multiple_choice")
    a, b = python(rows), graph({k: tf.constant(v) for k, v in rows.items()})
    for key in ("token_ids", "padding_mask", "truncated"):
        assert a[key].numpy().tolist() == b[key].numpy().tolist()
    assert a["token_ids"].shape[:2] == (3, 2)


def test_lm_and_backbone_from_a_pretrained_directory(tok, tmp_path):
    keras.utils.set_random_seed(5)
    lm = gk.GPTLMModel(gk.GPTBackbone(**tiny_config(vocab_size=tok.n_vocab, n_special=0).to_dict()))
    lm.save_to_preset(str(tmp_path / "lm"), tok)
    assert saving.read_task(tmp_path / "lm") is None
    ids = {"token_ids": np.array([[3, 4, 5, 6]], np.int32), "padding_mask": np.ones((1, 4), np.int32)}
    np.testing.assert_array_equal(gk.GPTLMModel.from_preset(str(tmp_path / "lm"))(ids).numpy(), lm(ids).numpy())
    model, loaded_tok = saving.load_model(tmp_path / "lm")
    assert isinstance(model, gk.GPTBackbone) and loaded_tok.fingerprint == tok.fingerprint
    # A new head on the pre-trained backbone (the special rows are added for fine-tuning).
    task = gk.GPTTaskModel.from_preset(str(tmp_path / "lm"), family="classification", num_labels=2)
    assert task.backbone.config.n_special == 3
    np.testing.assert_array_equal(task.backbone.embed.token_embeddings.numpy()[:tok.n_vocab],
                                  lm.backbone.embed.token_embeddings.numpy())
    with pytest.raises(ValueError, match="no task head: give family="):
        gk.GPTTaskModel.from_preset(str(tmp_path / "lm"))


def test_from_preset_errors_name_the_problem(tok, tmp_path):
    assert gk.GPTBackbone.from_preset("tiny", n_layer=1).config.n_layer == 1  # names: random weights
    with pytest.raises(ValueError, match="neither a preset .*'tiny'.* nor a model directory"):
        gk.GPTBackbone.from_preset("no_such_preset")
    model = _model(tok, "classification")
    model.save_to_preset(str(tmp_path / "m"), tok)
    with pytest.raises(ValueError, match="sizes are fixed.*\\['n_layer'\\]"):
        gk.GPTBackbone.from_preset(str(tmp_path / "m"), n_layer=3)
    with pytest.raises(ValueError, match="contradict its task section: num_labels=2 \\(saved: 3\\)"):
        gk.GPTTaskModel.from_preset(str(tmp_path / "m"), num_labels=2)
    with pytest.raises(ValueError, match="BPE tokens but the model's vocab_size"):
        saving.save_model(gk.GPTBackbone.from_preset("tiny"), tmp_path / "bad", tok)


def test_damaged_directories_fail_with_a_clear_error(tok, tmp_path):
    model = _model(tok, "classification")
    model.save_to_preset(str(tmp_path / "m"), tok)
    (tmp_path / "m" / "task.weights.h5").unlink()
    with pytest.raises(saving.ModelDirectoryError, match="task.weights.h5 is missing"):
        saving.load_model(tmp_path / "m")
    (tmp_path / "m" / "model.weights.h5").unlink()
    with pytest.raises(saving.ModelDirectoryError, match="model.weights.h5 is missing"):
        saving.load_backbone(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(saving.ModelDirectoryError, match="not readable JSON"):
        saving.load_backbone(tmp_path / "m")
    with pytest.raises(saving.ModelDirectoryError, match="model directory not found"):
        saving.load_backbone(tmp_path / "missing")


def test_tokenizer_files_record_their_mode(tok, tmp_path):
    original = GPTTokenizer(tok.encoder, tok.merges, mode="original")
    original.save(str(tmp_path / "v"), format="hf")
    assert GPTTokenizer.load(str(tmp_path / "v")).mode == "original"
    with pytest.raises(ValueError, match="saved with tokenizer mode 'original'.*mode 'hf' was asked for"):
        GPTTokenizer.load(str(tmp_path / "v"), mode="hf")
    # Files edited after saving no longer match the recorded fingerprint.
    merges = (tmp_path / "v" / "merges.txt").read_text().splitlines()
    (tmp_path / "v" / "merges.txt").write_text("\n".join(merges[:-1]) + "\n")
    with pytest.raises(ValueError, match="fingerprint .* differs"):
        GPTTokenizer.load(str(tmp_path / "v"))


def test_a_directory_of_another_format_version_is_refused(tmp_path):
    gk.GPTBackbone.from_preset("tiny").save_to_preset(str(tmp_path / "m"))
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**meta, "format_version": 1}))
    with pytest.raises(saving.ModelDirectoryError, match="has format_version 1; this gpt_keras reads format_version 2"):
        saving.load_model(tmp_path / "m")


def test_directories_written_before_class_names_were_recorded_still_load(tok, tmp_path):
    """config.json as every directory before it named its classes: no class_name,
    module or task entry (the shipped demo_imdb is one). Loaded in a fresh
    process from a bare `gpt_keras.saving`, which finds the classes without
    importing the model module itself."""
    model = _model(tok, "classification")
    model.save_to_preset(str(tmp_path / "m"), tok)
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["class_name"] == "gpt_keras>GPTBackbone" and meta["task"]["class_name"] == "gpt_keras>GPTTaskModel"
    # The two JSON files as the old code wrote them.
    old_config = {"config": model.backbone.config.to_dict(), "format": "gpt_keras", "format_version": 2}
    (tmp_path / "m" / "config.json").write_text(json.dumps(old_config, indent=2, sort_keys=True) + "\n")
    old_task = {"family": "classification", "label_names": ["neg", "neutral", "pos"], "lm_weight": 0.5,
                "num_choices": None, "num_labels": 3, "transfer": "full"}
    (tmp_path / "m" / "task.json").write_text(json.dumps(old_task, indent=2, sort_keys=True) + "\n")
    x = TaskPreprocessor.for_model(model, tok)(_rows("classification"))
    np.save(tmp_path / "x.npy", x["token_ids"].numpy())
    np.save(tmp_path / "mask.npy", x["padding_mask"].numpy())
    np.save(tmp_path / "expected.npy", model(x).numpy())
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from gpt_keras import saving
        from gpt_keras.releases import path
        assert "gpt_keras.model" not in sys.modules
        model, tokenizer = saving.load_model({str(tmp_path / "m")!r})
        assert type(model).__name__ == "GPTTaskModel" and tokenizer is not None, type(model)
        assert model.label_names == ["neg", "neutral", "pos"] and model.transfer == "full"
        x = {{"token_ids": np.load({str(tmp_path / "x.npy")!r}), "padding_mask": np.load({str(tmp_path / "mask.npy")!r})}}
        np.testing.assert_array_equal(model(x).numpy(), np.load({str(tmp_path / "expected.npy")!r}))
        assert "class_name" not in saving._read_json(path("demo_imdb") / saving.CONFIG_FILE)
        demo, tokenizer = saving.load_model(path("demo_imdb"))
        assert type(demo).__name__ == "GPTBackbone" and tokenizer is not None
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-2000:]


def test_a_class_name_that_is_not_registered_is_a_clear_error(tmp_path):
    gk.GPTBackbone.from_preset("tiny").save_to_preset(str(tmp_path / "m"))
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**meta, "class_name": "gpt_keras>Nothing"}))
    with pytest.raises(saving.ModelDirectoryError, match="no class is registered as 'gpt_keras>Nothing'"):
        saving.load_backbone(tmp_path / "m")

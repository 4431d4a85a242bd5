"""SavedModel export: TF Serving layout, signatures per family, served
results == the Python model on the same text, loading in a fresh process
that imports only tensorflow + tensorflow_text, warm-up records, LM generation."""
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import gpt_keras as gk
from gpt_keras import export
from gpt_keras.export import layout
from gpt_keras.preprocessor import TaskPreprocessor
from gpt_keras.generate import generate
from gpt_keras.tokenizer import count_words, train_bpe
from helpers import tiny_config

CORPUS = ["a great movie with a good plot", "an awful film with bad acting and a dull story",
          "the actors were good but the plot was thin", "what a wonderful story, I loved it!",
          "boring, slow and far too long"] * 10
LONG = " ".join(["the plot was thin and the acting was bad"] * 30)  # far over n_ctx = 32 tokens
TEXTS = ["a great movie", "awful, dull film", "", "Ünïcode café — naïve 😀", LONG]
FAMILIES = {
    "classification": dict(num_labels=3),
    "entailment": dict(num_labels=2),
    "similarity": dict(num_labels=2),
    "regression": {},
    "multiple_choice": dict(num_choices=3),
}
LABELS = {"classification": ["neg", "neutral", "pos"], "entailment": None, "similarity": ["different", "same"]}


def rows_for(family: str) -> dict:
    """Raw request columns for a family (same number of rows everywhere)."""
    n = len(TEXTS)
    if family == "multiple_choice":
        return {"context": TEXTS, "choices": [[TEXTS[(i + k) % n] for k in range(3)] for i in range(n)]}
    fields = gk.TaskFamily(family).fields
    return {fields[0]: TEXTS, fields[1]: TEXTS[2:] + TEXTS[:2]} if len(fields) == 2 else {fields[0]: TEXTS}


def python_head(model, tok, family: str, rows: dict):
    """The Python path: TaskPreprocessor (Python tokenizer -> build_inputs -> pad) -> model."""
    x = TaskPreprocessor.for_model(model, tok)(rows)
    return model(x, training=False).numpy(), x["truncated"].numpy()


@pytest.fixture(scope="module")
def tok():
    return train_bpe(count_words(CORPUS), num_merges=200)


@pytest.fixture(scope="module")
def models(tok):
    config = tiny_config(vocab_size=tok.n_vocab)
    built = {}
    for i, (family, kwargs) in enumerate(FAMILIES.items()):
        keras.utils.set_random_seed(100 + i)
        built[family] = gk.GPTTaskModel(gk.GPTBackbone(**config.to_dict()), family, **kwargs)
    keras.utils.set_random_seed(7)
    built["lm"] = gk.GPTLMModel(gk.GPTBackbone(**config.to_dict()))
    return built


@pytest.fixture(scope="module")
def exported(tmp_path_factory, models, tok):
    base = str(tmp_path_factory.mktemp("exports"))
    # call_cost_tokens=1: every batch below splits into two length buckets, so the
    # served == Python checks cover the bucketed path (gpt_keras.export.bucketing).
    paths = {family: export.export_task_model(models[family], tok, base, family, label_names=LABELS.get(family),
                                              call_cost_tokens=1) for family in FAMILIES}
    paths["lm"] = export.export_lm(models["lm"], tok, base, "lm", max_new_tokens=6)
    return base, paths


# ------------------------------------------------------------------- layout


def test_versions_are_sequential_and_immutable(tmp_path):
    model_dir = tmp_path / "m"
    assert layout.next_version(str(model_dir)) == 1
    for name in ("1", "3", "tmp", ".tmp-4-x"):
        (model_dir / name).mkdir(parents=True)
    assert layout.existing_versions(str(model_dir)) == [1, 3]
    assert layout.next_version(str(model_dir)) == 4
    assert layout.resolve_version_dir(str(tmp_path), "m", None) == (str(model_dir / "4"), 4)
    with pytest.raises(FileExistsError, match="immutable"):
        layout.resolve_version_dir(str(tmp_path), "m", 3)
    for bad_name in ("", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="model_name"):
            layout.resolve_version_dir(str(tmp_path), bad_name, None)
    with pytest.raises(ValueError, match="positive integer"):
        layout.resolve_version_dir(str(tmp_path), "m", 0)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = str(tmp_path / "m" / "1")

    def failing(tmp):
        open(os.path.join(tmp, "saved_model.pb"), "wb").close()
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        layout.atomic_write(target, failing)
    assert os.listdir(tmp_path / "m") == []  # neither the version nor the temp dir
    layout.atomic_write(target, lambda tmp: open(os.path.join(tmp, "x"), "w").close())
    assert os.listdir(target) == ["x"]


def test_bad_export_arguments(models, tok, tmp_path):
    with pytest.raises(ValueError, match="label_names"):
        export.export_task_model(models["classification"], tok, str(tmp_path), "c", label_names=["a", "b"])
    with pytest.raises(TypeError, match="GPTTaskModel"):
        export.export_task_model(models["lm"], tok, str(tmp_path), "c")
    other = train_bpe(count_words(CORPUS), num_merges=50)
    with pytest.raises(ValueError, match="vocab_size"):
        export.export_task_model(models["classification"], other, str(tmp_path), "c")
    with pytest.raises(ValueError, match="max_new_tokens"):
        export.export_lm(models["lm"], tok, str(tmp_path), "lm", max_new_tokens=32)
    assert not os.path.exists(tmp_path / "c") or os.listdir(tmp_path / "c") == []


def test_layout_signatures_warmup_and_metadata(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    base, paths = exported
    for name, path in paths.items():
        assert path == os.path.join(base, name, "1") and os.path.exists(os.path.join(path, "saved_model.pb"))
    assert not [n for n in os.listdir(os.path.join(base, "classification")) if n.startswith(".tmp")]
    expected = {"classification": "classify", "entailment": "classify", "similarity": "classify",
                "multiple_choice": "classify", "regression": "regress", "lm": "generate"}
    for name, extra in expected.items():
        defs = layout_signature_defs(paths[name])
        scoring = {"score", "score_continuation"} if name == "lm" else set()
        assert set(defs) - {"__saved_model_init_op"} == {"serving_default", extra} | scoring
        if extra in ("classify", "regress"):
            assert defs[extra].method_name == f"tensorflow/serving/{extra}"
            assert list(defs[extra].inputs) == ["inputs"]
            assert set(defs[extra].outputs) == ({"classes", "scores"} if extra == "classify" else {"outputs"})
        assert not any(k.startswith("output_") for k in defs["serving_default"].outputs)
        records = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
                   for r in tf.data.TFRecordDataset(os.path.join(paths[name], layout.WARMUP_FILE))]
        assert records and records[0].predict_log.request.model_spec.signature_name == "serving_default"
        warmed = {r.predict_log.request.model_spec.signature_name for r in records if r.HasField("predict_log")}
        assert scoring <= warmed  # every LM signature gets a warm-up request
    defs = layout_signature_defs(paths["classification"])
    assert set(defs["serving_default"].outputs) == {"probabilities", "logits", "label_id", "label", "label_names",
                                                   "truncated"}
    meta = export.read_metadata(paths["multiple_choice"])
    assert meta["family"] == "multiple_choice" and meta["num_choices"] == 3 and meta["version"] == 1
    assert meta["call_cost_tokens"] == 1
    assert export.read_metadata(paths["lm"])["max_new_tokens"] == 6
    defs = layout_signature_defs(paths["lm"])
    assert set(defs["score"].inputs) == {"text"} and set(defs["score_continuation"].inputs) == {"context",
                                                                                              "continuation"}
    assert set(defs["score"].outputs) == {"logprob_sum", "logprob_mean", "num_tokens", "truncated"}


def layout_signature_defs(path):
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    return saved_model.meta_graphs[0].signature_def


def test_next_export_gets_the_next_version(models, tok, tmp_path):
    (tmp_path / "r" / "1").mkdir(parents=True)
    with pytest.raises(FileExistsError):  # checked before any tracing
        export.export_task_model(models["regression"], tok, str(tmp_path), "r", version=1)
    path = export.export_task_model(models["regression"], tok, str(tmp_path), "r")
    assert os.path.basename(path) == "2"


def test_graph_decoder_matches_python_decode(tok):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, tok.vocab_size, size=(6, 12)).astype("int32")
    lengths = np.array([0, 1, 5, 12, 12, 3], "int32")
    out = tok.graph_decoder()(tf.constant(ids), tf.constant(lengths)).numpy()
    assert [o.decode("utf-8") for o in out] == [tok.decode(row[:n].tolist()) for row, n in zip(ids, lengths)]


# ------------------------------------------------------------ fresh process

FRESH = textwrap.dedent("""
    import json, os, sys
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.framework import op_def_registry

    def graph_checks(path):
        # Before tensorflow_text is imported: every op must be a core TF op, and no
        # function may demand XLA (stock TF Serving leaves CPU jit off).
        saved_model = saved_model_pb2.SavedModel()
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            saved_model.ParseFromString(f.read())
        library = saved_model.meta_graphs[0].graph_def.library.function
        functions = {f.signature.name for f in library}
        nodes = list(saved_model.meta_graphs[0].graph_def.node) + [n for f in library for n in f.node_def]
        missing = {n.op for n in nodes if n.op not in functions and op_def_registry.get(n.op) is None}
        xla = [f.signature.name for f in library
               if f.attr["_XlaMustCompile"].b or any(n.attr["_XlaMustCompile"].b for n in f.node_def)]
        return sorted(missing), xla

    def plain(value):
        value = value.numpy()
        return value.astype(str).tolist() if value.dtype == object else value.tolist()

    requests = json.load(open(sys.argv[1]))
    out = {"non_core_ops": [], "xla": []}
    for path in sorted({p for p, _, _ in requests.values()}):
        missing, xla = graph_checks(path)
        out["non_core_ops"] += missing
        out["xla"] += xla
    import tensorflow_text  # noqa: F401  (the op set of the stock TF Serving binary)
    loaded = {}
    for key, (path, signature, inputs) in requests.items():
        if path not in loaded:
            loaded[path] = tf.saved_model.load(path)
        fn = loaded[path].signatures[signature]
        specs = fn.structured_input_signature[1]
        # Serialized tf.Examples travel through JSON as hex.
        inputs = {k: [bytes.fromhex(x) for x in v] if k == "inputs" else v for k, v in inputs.items()}
        args = {k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()}
        out[key] = {k: plain(v) for k, v in fn(**args).items()}
    out["modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("gpt_keras", "serving"))
    print(json.dumps(out))
""")



def example(row: dict) -> bytes:
    return layout.example_bytes(row)


@pytest.fixture(scope="module")
def fresh_results(exported, tmp_path_factory):
    """Runs every signature of every export in one fresh process."""
    _, paths = exported
    requests = {}
    for family in FAMILIES:
        rows = rows_for(family)
        requests[family] = (paths[family], "serving_default", rows)
        if family in ("entailment", "similarity"):
            continue  # their classify signature is the same code as classification's
        per_row = [{k: v[i] for k, v in rows.items()} for i in range(len(TEXTS))]
        verb = "regress" if family == "regression" else "classify"
        requests[f"{family}:{verb}"] = (paths[family], verb, {"inputs": [example(r).hex() for r in per_row]})
    prompts = ["a great movie", "the plot", "", LONG, "a great movie"]
    requests["lm"] = (paths["lm"], "serving_default", {"prompt": prompts[:3], "max_new_tokens": [6, 3, 4]})
    requests["lm:generate"] = (paths["lm"], "generate", {
        "prompt": prompts, "max_new_tokens": [6, 100, 5, 2, 0], "temperature": [0.0, 0.0, 1.0, 1.5, 1.0],
        "top_k": [0, 0, 5, 0, 3], "top_p": [1.0, 1.0, 0.9, 0.5, 1.0], "seed": [1, 2, 3, 4, 5]})
    requests["lm:sampled_twice"] = (paths["lm"], "generate", {
        "prompt": ["a great movie"] * 2, "max_new_tokens": [6, 6], "temperature": [1.0, 1.0], "top_k": [0, 0],
        "top_p": [1.0, 1.0], "seed": [11, 11]})
    requests["lm:score"] = (paths["lm"], "score", {"text": ["a great movie", "the plot", "a", "", LONG]})
    requests["lm:score_continuation"] = (paths["lm"], "score_continuation", {
        "context": ["a great", "the plot was", "", LONG], "continuation": [" movie", " thin", "the plot", " bad"]})
    work = tmp_path_factory.mktemp("fresh")
    (work / "run.py").write_text(FRESH)
    (work / "requests.json").write_text(json.dumps(requests))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, str(work / "run.py"), str(work / "requests.json")], capture_output=True,
                         text=True, env=env, cwd=str(work), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_fresh_process_imports_only_tensorflow(fresh_results):
    assert fresh_results["modules"] == []
    assert fresh_results["non_core_ops"] == []  # core TF ops only (no tensorflow_text needed, no py_function)
    assert fresh_results["xla"] == []  # plain graph functions


@pytest.mark.parametrize("family", list(FAMILIES))
def test_served_results_equal_python_model(family, fresh_results, models, tok):
    rows = rows_for(family)
    head, truncated = python_head(models[family], tok, family, rows)
    served = fresh_results[family]
    assert served["truncated"] == truncated.tolist()
    assert truncated[-1] and not truncated[0]  # LONG is over the context, truncated as in training
    if family == "regression":
        np.testing.assert_allclose(served["score"], head, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(fresh_results["regression:regress"]["outputs"], head, rtol=1e-5, atol=1e-5)
        return
    probabilities = tf.nn.softmax(head).numpy()
    np.testing.assert_allclose(served["logits"], head, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(served["probabilities"], probabilities, rtol=1e-5, atol=1e-6)
    if f"{family}:classify" in fresh_results:
        classified = fresh_results[f"{family}:classify"]
        np.testing.assert_allclose(classified["scores"], probabilities, rtol=1e-5, atol=1e-6)
    if family == "multiple_choice":
        assert served["choice"] == head.argmax(-1).tolist()
        assert classified["classes"] == [["0", "1", "2"]] * len(TEXTS)
        return
    names = LABELS[family] or [str(i) for i in range(head.shape[1])]
    assert served["label_id"] == head.argmax(-1).tolist()
    assert served["label"] == [names[i] for i in head.argmax(-1)]
    assert served["label_names"] == [names] * len(TEXTS)
    if f"{family}:classify" in fresh_results:
        assert classified["classes"] == served["label_names"]


def test_served_generation_equals_python_generate(fresh_results, models, tok):
    backbone = models["lm"].backbone
    greedy = fresh_results["lm"]
    # Greedy: the first 3 of 6 tokens are the 3-token answer, so one Python call covers both rows.
    python = generate(backbone, [tok.encode("a great movie"), tok.encode("the plot")], 6, jit_compile=False)
    for row, n in enumerate([6, 3]):
        expected = python[row][:n]
        assert greedy["num_tokens"][row] == len(expected)
        assert greedy["token_ids"][row][:len(expected)] == expected
        assert greedy["text"][row] == tok.decode(expected)
    # An empty prompt yields empty text, not an error.
    assert greedy["num_tokens"][2] == 0 and greedy["text"][2] == ""
    full = fresh_results["lm:generate"]
    # Row 0 (greedy, alone in its settings) equals the greedy signature; 100 is clipped to the bound (6).
    assert full["token_ids"][0] == greedy["token_ids"][0]
    assert full["num_tokens"][1] == 6 and full["num_tokens"][3] <= 2 and full["num_tokens"][4] == 0
    assert all(len(ids) == 6 for ids in full["token_ids"])  # [batch, max_new_tokens bound]
    twice = fresh_results["lm:sampled_twice"]
    assert twice["token_ids"][0] == twice["token_ids"][1]  # same seed, same draws


def test_served_scores_equal_python_scoring(fresh_results, models, tok):
    from gpt_keras.scoring import LMScorer

    scorer = LMScorer(models["lm"], tok)
    texts = ["a great movie", "the plot", "a", LONG]
    expected = scorer.score_texts(texts)
    served = fresh_results["lm:score"]
    rows = [0, 1, 2, 4]  # row 3 is the empty text: nothing to score, and no error
    np.testing.assert_allclose([served["logprob_sum"][r] for r in rows], [e.total for e in expected], rtol=1e-4,
                               atol=1e-4)
    assert [served["num_tokens"][r] for r in rows] == [e.num_tokens for e in expected]
    assert [served["truncated"][r] for r in rows] == [e.truncated for e in expected] == [False] * 3 + [True]
    assert served["num_tokens"][3] == 0 and served["logprob_sum"][3] == 0.0
    cont = scorer.score_continuations(["a great", "the plot was", LONG], [" movie", " thin", " bad"])
    served = fresh_results["lm:score_continuation"]
    np.testing.assert_allclose([served["logprob_sum"][r] for r in (0, 1, 3)], [c.total for c in cont],
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose([served["logprob_mean"][r] for r in (0, 1, 3)], [c.mean for c in cont],
                               rtol=1e-4, atol=1e-4)
    assert [served["truncated"][r] for r in (0, 1, 3)] == [False, False, True]
    # No context: the continuation's first token has nothing to condition on and is not scored.
    assert served["num_tokens"][2] == len(tok.encode("the plot")) - 1


def test_lm_export_reads_the_end_of_long_prompts(models, tok):
    """A prompt longer than the byte cut keeps its end, the text generation continues."""
    from gpt_keras.export.lm import LMServingModule

    module = LMServingModule(models["lm"].backbone, tok, max_new_tokens=4)
    filler = "the plot of a movie " * 200  # 4 KB: over the cut of 64 * n_ctx = 2 KB
    prompts = [filler + "a great movie", filler + "bad acting , a dull and terrible film", "short"]
    keep = module.max_prompt_tokens
    served = module.prompt_ids(tf.constant(prompts)).to_list()
    assert served == [tok.encode(p)[-keep:] for p in prompts]
    assert served[0] != served[1]  # prompts that differ only in their end are read differently


def test_export_command(models, tok, tmp_path):
    from gpt_keras.export.__main__ import main

    models["regression"].save(str(tmp_path / "m.keras"))
    tok.save(str(tmp_path / "vocab"))
    argv = ["--model", str(tmp_path / "m.keras"), "--tokenizer", str(tmp_path / "vocab"), "--base_dir",
            str(tmp_path / "exports"), "--model_name", "scores"]
    assert main(argv) == 0
    assert export.read_metadata(str(tmp_path / "exports" / "scores" / "1"))["family"] == "regression"
    assert main(argv + ["--version", "1"]) == 2  # versions are immutable
    # A model directory carries its tokenizer and label names.
    models["classification"].save_to_preset(str(tmp_path / "clf"), tok)
    assert main(["--model", str(tmp_path / "clf"), "--base_dir", str(tmp_path / "exports"),
                 "--model_name", "clf", "--label_names", "neg,neutral,pos"]) == 0
    assert export.read_metadata(str(tmp_path / "exports" / "clf" / "1"))["label_names"] == ["neg", "neutral", "pos"]

"""Beam preprocessing (pipelines.preprocess) on small files written here, with a
tiny vocabulary trained in a fixture. Default runner: the in-process FnApiRunner."""
import glob
import gzip
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from gpt_keras import data, schema
from gpt_keras.tokenizer import GPTTokenizer, count_words, train_bpe
from pipelines.preprocess import (PreprocessError, PreprocessOptions, memory_input, pack_documents, run_corpus,
                                  run_vocab)
from pipelines.preprocess import task as task_module
from pipelines.preprocess.runner import create_pipeline, normalize_args, pipeline_options
from pipelines.preprocess.splits import content_digest
from pipelines.preprocess.task import run_task
from pipelines.preprocess.task_rows import TaskRow

WORDS = ("the cat sat on the mat . a dog ate the bone ! the quick brown fox jumps over the lazy dog . "
         "good movie bad film great plot awful acting").split()
MULTI = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
QUIET = PreprocessOptions(verbose=False)


def _docs(n, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(3, 15))) for _ in range(n)]


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    d = tmp_path_factory.mktemp("vocab")
    train_bpe(count_words(_docs(200, seed=1)), 60).save(str(d))
    return str(d)


@pytest.fixture(scope="module")
def tok(vocab):
    return GPTTokenizer.load(vocab)


def _records(out_dir, split):
    files = sorted(glob.glob(os.path.join(out_dir, f"{split}-*{schema.RECORD_SUFFIX}")))
    out = []
    for raw in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        ex = tf.train.Example.FromString(raw.numpy()).features.feature
        rec = {k: list(v.int64_list.value) or list(v.float_list.value) or list(v.bytes_list.value)
               for k, v in ex.items()}
        out.append(rec)
    return out


def _windows(out_dir, split):
    return sorted(tuple(r["token_ids"]) for r in _records(out_dir, split))


def _dead(out_dir):
    with open(os.path.join(out_dir, schema.DEAD_LETTER_FILENAME)) as f:
        return sorted((json.loads(line) for line in f), key=lambda d: (d["source"], d["row"] or 0))


def _json(out_dir, name):
    with open(os.path.join(out_dir, name)) as f:
        return json.load(f)


# ------------------------------------------------------------------ packing + corpus

@pytest.mark.parametrize("policy,sep", [("concat", None), ("newline", 99), ("document", None)])
def test_pack_documents_loses_no_token(policy, sep):
    docs = [list(range(1, 8)), [20, 21], list(range(30, 45)), [50]]
    windows = pack_documents(docs, 5, policy, sep)
    assert all(1 <= len(w) <= 5 for w in windows)
    flat = [int(t) for w in windows for t in w]
    if policy == "document":
        assert [w.tolist() for w in windows][:3] == [[1, 2, 3, 4, 5], [6, 7], [20, 21]]
        assert flat == [t for d in docs for t in d]
    else:
        joined = [t for i, d in enumerate(docs) for t in ([sep] if i and sep else []) + d]
        assert flat == joined and all(len(w) == 5 for w in windows[:-1])


def _corpus_files(tmp_path):
    (tmp_path / "a.txt").write_text("the cat sat on the mat\n\nthe dog ate the bone\n")
    with gzip.open(tmp_path / "b.txt.gz", "wt") as f:
        f.write("the quick brown fox\njumps over the lazy dog\n")
    (tmp_path / "c.jsonl").write_bytes(b'{"body": "good movie"}\n{broken\n{"title": "x"}\n{"body": "  "}\n'
                                       b'{"body": "bad \xff film"}\n[1, 2]\n')
    (tmp_path / "d.csv").write_bytes(b'id,body\n1,"great plot,\nawful acting"\n2,a,b\n3,"the bone"\n4,"bad\xfe"\n')
    return [str(tmp_path / "*.txt*"), str(tmp_path / "c.jsonl"), str(tmp_path / "d.csv")]


def test_corpus_records_stats_dead_letters_and_read_back(tmp_path, vocab, tok):
    out = str(tmp_path / "out")
    summary = run_corpus(_corpus_files(tmp_path), out, vocab, n_ctx=6, val_fraction=0.0, boundary="concat",
                         num_groups=1, options=QUIET.replace(text_field="body", max_bad_fraction=0.6))
    good = ["the cat sat on the mat", "the dog ate the bone", "the quick brown fox", "jumps over the lazy dog",
            "good movie", "great plot,\nawful acting", "the bone"]
    # Dead letters: source, row (line where the record starts) and reason.
    dead = [(os.path.basename(d["source"]), d["row"], d["reason"]) for d in _dead(out)]
    assert dead == [("c.jsonl", 2, "malformed_json"), ("c.jsonl", 3, "missing_field"), ("c.jsonl", 4, "empty_text"),
                    ("c.jsonl", 5, "invalid_utf8"), ("c.jsonl", 6, "malformed_json"),
                    ("d.csv", 4, "malformed_csv"), ("d.csv", 6, "invalid_utf8")]
    assert summary["counts"] == {"input": 14, "written": 7, "rejected": 7, "records": summary["counts"]["records"]}
    # One group: documents ordered by content hash, concatenated, cut into 6-token windows.
    ordered = sorted(good, key=lambda t: content_digest([t]))
    stream = [i for t in ordered for i in tok.encode(t)]
    expected = [stream[i:i + 6] for i in range(0, len(stream), 6)]
    assert _windows(out, "train") == sorted(tuple(w) for w in expected)
    md = data.load_metadata(out)
    stats = _json(out, schema.STATS_FILENAME)
    assert md.counts == stats["counts"] == summary["counts"] and md.counts["records"] == len(expected)
    assert md.boundary_policy == "concat" and md.max_length == 6 and md.vocab.fingerprint == tok.fingerprint
    train = stats["splits"]["train"]
    assert train["documents"] == 7 and train["document_tokens"] == train["sequence_tokens"] == len(stream)
    assert sum(train["sequence_length_histogram"].values()) == len(expected)
    assert stats["rejected_by_reason"] == {"empty_text": 1, "invalid_utf8": 2, "malformed_csv": 1,
                                           "malformed_json": 2, "missing_field": 1}
    assert summary["counters"]["tokens"] == len(stream)
    batches = list(data.pretrain_dataset(out, "train", 4, expected_fingerprint=tok.fingerprint))
    assert [b["token_ids"].shape[0] for b in batches] == [4] * (len(expected) // 4) + (
        [len(expected) % 4] if len(expected) % 4 else [])
    assert all(b["token_ids"].dtype == tf.int32 and b["token_ids"].shape[1] <= 6 for b in batches)
    assert sum(int(tf.reduce_sum(b["padding_mask"])) for b in batches) == len(stream)


def test_boundary_policies_newline_and_document(tmp_path, vocab, tok):
    encoder = dict(tok.encoder)
    encoder[schema.NEWLINE_TOKEN] = len(encoder)
    nl_vocab = str(tmp_path / "nl_vocab")
    GPTTokenizer(encoder, tok.merges).save(nl_vocab)
    docs = ["the cat sat", "a dog ate the bone", "the fox"]
    ordered = sorted(docs, key=lambda t: content_digest([t]))
    out = str(tmp_path / "nl")
    run_corpus(memory_input(docs), out, nl_vocab, n_ctx=64, val_fraction=0.0, num_groups=1, options=QUIET)
    nl = len(tok.encoder)
    expected = [t for i, d in enumerate(ordered) for t in ([nl] if i else []) + tok.encode(d)]
    assert _windows(out, "train") == [tuple(expected)]
    assert data.load_metadata(out).boundary_policy == "newline" and data.load_metadata(out).boundary_token_id == nl

    out = str(tmp_path / "doc")
    run_corpus(memory_input(docs), out, vocab, n_ctx=3, val_fraction=0.0, boundary="document", options=QUIET)
    expected = [tuple(tok.encode(d)[i:i + 3]) for d in docs for i in range(0, len(tok.encode(d)), 3)]
    assert _windows(out, "train") == sorted(expected)
    with pytest.raises(ValueError, match="needs the token '\\\\n</w>'"):
        run_corpus(memory_input(docs), str(tmp_path / "x"), vocab, boundary="newline")


def test_splits_are_stable_across_runs_and_salts(tmp_path, vocab):
    docs = _docs(300, seed=2)
    (tmp_path / "docs.txt").write_text("\n".join(docs) + "\n")
    runs = [run_corpus(str(tmp_path / "docs.txt"), str(tmp_path / f"r{i}"), vocab, n_ctx=16, val_fraction=0.25,
                       options=QUIET.replace(split_salt=salt)) for i, salt in enumerate(["", "", "other"])]
    a, b, c = (str(tmp_path / f"r{i}") for i in range(3))
    assert _windows(a, "train") == _windows(b, "train") and _windows(a, "validation") == _windows(b, "validation")
    assert _windows(a, "validation") != _windows(c, "validation")
    distinct = len(set(docs))
    val = runs[0]["splits"]["validation"]["documents"]
    assert runs[0]["splits"]["train"]["documents"] + val == len(docs) and 0.15 < val / distinct < 0.35
    md = data.load_metadata(a)
    assert md.splits["validation"].fraction == 0.25 and md.split_method == "hash"


def test_multi_processing_runner_gives_the_same_records(tmp_path, vocab):
    docs = _docs(120, seed=3)
    (tmp_path / "docs.txt").write_text("\n".join(docs) + "\n")
    one = run_corpus(str(tmp_path / "docs.txt"), str(tmp_path / "one"), vocab, n_ctx=16, val_fraction=0.2,
                     options=QUIET)
    two = run_corpus(str(tmp_path / "docs.txt"), str(tmp_path / "two"), vocab, n_ctx=16, val_fraction=0.2,
                     pipeline_args=MULTI, options=QUIET)
    assert one["counts"] == two["counts"] and one["splits"] == two["splits"]
    for split in ("train", "validation"):
        assert _windows(str(tmp_path / "one"), split) == _windows(str(tmp_path / "two"), split)


# ------------------------------------------------------------------ tasks

def _enc(tok, *texts):
    return [tok.encode(t) for t in texts]


def test_task_families_exact_sequences(tmp_path, vocab, tok):
    S, D, E = tok.start_id, tok.delimiter_id, tok.classify_id
    rows = [{"premise": "the cat sat", "hypothesis": "a dog", "label": "entailment", "id": "p1"}]
    out = str(tmp_path / "ent")
    run_task(rows, "entailment", None, out, vocab, n_ctx=32, label_names=["entailment", "contradiction"],
             val_fraction=0.0, options=QUIET)
    (rec,) = _records(out, "train")
    p, h = _enc(tok, "the cat sat", "a dog")
    assert rec["token_ids"] == [S, *p, D, *h, E] and rec["label"] == [0] and rec["example_id"] == [b"p1"]

    (tmp_path / "sts.tsv").write_text("s1\ts2\tscore\nthe cat\tthe dog ate\t3.5\n")
    out = str(tmp_path / "sts")
    run_task(str(tmp_path / "sts.tsv"), "regression", {"text_a": "s1", "text_b": "s2", "label": "score"}, out,
             vocab, n_ctx=32, val_fraction=0.0, options=QUIET)
    (rec,) = _records(out, "train")
    a, b = _enc(tok, "the cat", "the dog ate")
    assert rec["token_ids"] == [S, *a, D, *b, E, S, *b, D, *a, E]
    assert rec["seq_lengths"] == [len(a) + len(b) + 3] * 2 and rec["target"] == [3.5]
    assert rec["example_id"] == [b"sts.tsv:2"]
    md = data.load_metadata(out)
    assert md.is_regression and md.num_sequences == 2 and md.label_names is None

    (tmp_path / "mc.csv").write_text("ctx,e0,e1,e2,answer\nthe cat,sat,ate the bone,jumps,1\n"
                                     "the dog,sat,,,0\n")
    out = str(tmp_path / "mc")
    s = run_task(str(tmp_path / "mc.csv"), "multiple_choice", {"context": "ctx", "choices": ["e0", "e1", "e2"],
                                                               "label": "answer"}, out, vocab, n_ctx=32,
                 val_fraction=0.0, options=QUIET.replace(max_bad_fraction=0.5))
    (rec,) = _records(out, "train")
    c, *answers = _enc(tok, "the cat", "sat", "ate the bone", "jumps")
    assert rec["token_ids"] == [t for ans in answers for t in [S, *c, D, *ans, E]] and rec["label"] == [1]
    assert [d["reason"] for d in _dead(out)] == ["wrong_num_choices"] and s["counts"]["rejected"] == 1
    (x, y), = list(data.task_dataset(out, "train", 8, expected_family="multiple_choice"))
    assert x["token_ids"].shape.as_list() == [1, 3, len(c) + max(map(len, answers)) + 3] and y.numpy().tolist() == [1]

    rows = [{"a": "the cat", "b": "a dog", "label": 1}, {"a": "the fox", "b": "the mat", "label": 0}]
    out = str(tmp_path / "sim")
    run_task(rows, "similarity", {"text_a": "a", "text_b": "b"}, out, vocab, n_ctx=32, val_fraction=0.0, options=QUIET)
    assert data.load_metadata(out).label_names == ["0", "1"]  # derived, numerically
    a, b = _enc(tok, "the cat", "a dog")
    rec = next(r for r in _records(out, "train") if r["label"] == [1])
    assert rec["token_ids"] == [S, *a, D, *b, E, S, *b, D, *a, E] and rec["example_id"] == [b"memory:0"]
    (x, y), = list(data.task_dataset(out, "train", 8, expected_family="similarity",
                                     expected_fingerprint=tok.fingerprint))
    assert x["token_ids"].shape[:2] == [2, 2] and sorted(y.numpy().tolist()) == [0, 1]


@pytest.mark.slow
def test_traced_transform_matches_eager(tok, monkeypatch):
    """Large inputs switch EncodeTask to a traced build_inputs (tracing takes seconds)."""
    from gpt_keras.tasks import TaskFamily
    from pipelines.preprocess.tokenizer import TokenizerSpec

    rows = [TaskRow("m", i, "train", f"m:{i}", {"context": c, "choices": ch}, i % 2)
            for i, (c, ch) in enumerate([("the cat", ["sat", "ate the bone"]), ("a dog", ["the fox", "jumps"])])]
    outputs = []
    for threshold in (10 ** 9, 0):
        monkeypatch.setattr(task_module, "TRACE_AFTER_ROWS", threshold)
        fn = task_module.EncodeTask(TokenizerSpec.from_tokenizer(tok), TaskFamily.MULTIPLE_CHOICE, 8, 2)
        fn.setup()
        outputs.append([o for o in fn.process(rows) if isinstance(o, tuple)])
        assert (fn._traced is not None) == (threshold == 0)
    assert outputs[0] == outputs[1] and len(outputs[0]) == 2


def test_task_classification_dead_letters_truncation_and_stats(tmp_path, vocab, tok):
    long = " ".join(["the"] * 40)
    (tmp_path / "train.csv").write_bytes(
        b"sentence,label\ngood movie,pos\nbad film,neg\n,neg\nawful acting,meh\n\"unterminated,pos\n")
    (tmp_path / "dev.jsonl").write_bytes(('{"sentence": "great plot", "label": 1}\n{"sentence": "' + long +
                                          '", "label": "neg"}\n{"label": "pos"}\n').encode())
    out = str(tmp_path / "clf")
    s = run_task({"train": str(tmp_path / "train.csv"), "validation": str(tmp_path / "dev.jsonl")}, "classification",
                 {"text": "sentence"}, out, vocab, n_ctx=16, label_names=["neg", "pos"],
                 options=QUIET.replace(max_bad_fraction=0.5))
    reasons = [(os.path.basename(d["source"]), d["row"], d["reason"]) for d in _dead(out)]
    assert reasons == [("dev.jsonl", 3, "missing_field"), ("train.csv", 4, "empty_text"),
                       ("train.csv", 5, "unknown_label"), ("train.csv", 6, "malformed_csv")]
    assert s["counts"] == {"input": 8, "written": 4, "rejected": 4, "records": 4}
    stats = _json(out, schema.STATS_FILENAME)
    assert stats["splits"]["train"]["labels"] == {"neg": 1, "pos": 1}
    assert stats["splits"]["validation"]["labels"] == {"neg": 1, "pos": 1}  # label 1 -> index 1 -> "pos"
    assert stats["splits"]["validation"]["truncated"] == 1 and stats["totals"]["truncated"] == 1
    md = data.load_metadata(out)
    assert md.split_method == "given" and md.splits["train"].fraction is None and md.splits["validation"].records == 2
    train = {r["example_id"][0]: r for r in _records(out, "train")}
    assert train[b"train.csv:2"]["token_ids"] == [tok.start_id, *tok.encode("good movie"), tok.classify_id]
    assert train[b"train.csv:2"]["label"] == [1] and train[b"train.csv:3"]["label"] == [0]
    val = {r["example_id"][0]: r for r in _records(out, "validation")}
    assert len(val[b"dev.jsonl:2"]["token_ids"]) == 16 and val[b"dev.jsonl:2"]["token_ids"][-1] == tok.classify_id
    batches = list(data.task_dataset(out, "validation", 2, expected_family="classification"))
    assert batches[0][0]["token_ids"].shape.as_list() == [2, 1, 16]


def test_max_bad_fraction_fails_with_a_clear_message(tmp_path, vocab):
    rows = [{"text": "the cat", "label": "a"}, {"text": "", "label": "b"}, {"text": "the dog", "label": "c"}]
    out = str(tmp_path / "bad")
    with pytest.raises(PreprocessError, match=r"1 of 3 input rows \(33.3%\) were rejected \(empty_text: 1\), more "
                                              r"than max_bad_fraction=0.1. See .*dead_letter.jsonl"):
        run_task(rows, "classification", None, out, vocab, n_ctx=16, options=QUIET)
    assert not os.path.exists(os.path.join(out, schema.METADATA_FILENAME))  # a failed run is not readable
    assert [d["reason"] for d in _dead(out)] == ["empty_text"]
    with pytest.raises(FileExistsError, match="already holds preprocessing output"):
        run_task(rows, "classification", None, out, vocab, n_ctx=16, options=QUIET)


def test_fail_fast_before_any_work(tmp_path, vocab):
    out = str(tmp_path / "never")
    with pytest.raises(FileNotFoundError, match="matches no files"):
        run_corpus(str(tmp_path / "missing*.txt"), out, vocab)
    (tmp_path / "x.txt").write_text("the cat\n")
    with pytest.raises(FileNotFoundError, match="tokenizer directory not found"):
        run_corpus(str(tmp_path / "x.txt"), out, str(tmp_path / "no_vocab"))
    (tmp_path / "bad_vocab").mkdir()
    (tmp_path / "bad_vocab" / "vocab.json").write_text("{not json")
    (tmp_path / "bad_vocab" / "merges.txt").write_text("")
    with pytest.raises(ValueError, match="not valid JSON"):
        run_task([{"text": "a", "label": 1}], "classification", None, out, str(tmp_path / "bad_vocab"))
    with pytest.raises(ValueError, match="field_map keys \\['txt'\\] are not fields of classification"):
        run_task([{"text": "a", "label": 1}], "classification", {"txt": "x"}, out, vocab)
    with pytest.raises(ValueError, match="multiple_choice needs num_choices"):
        run_task([{"context": "a", "choices": ["b"], "label": 0}], "multiple_choice", None, out, vocab)
    assert not os.path.exists(out)


def test_vocab_step_counts_like_count_words(tmp_path):
    docs = _docs(80, seed=4)
    (tmp_path / "a.txt").write_text("\n".join(docs[:40]) + "\n")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps({"text": d}) + "\n" for d in docs[40:]) + "{oops\n")
    out = str(tmp_path / "vocab")
    s = run_vocab([str(tmp_path / "a.txt"), str(tmp_path / "b.jsonl.gz")], out, 50,
                  options=QUIET.replace(max_bad_fraction=0.5))
    direct = train_bpe(count_words(docs), 50)
    assert GPTTokenizer.load(out).fingerprint == direct.fingerprint == s["vocab_fingerprint"]
    assert s["counts"] == {"input": 81, "written": 80, "rejected": 1, "records": 0}
    stats = _json(out, schema.STATS_FILENAME)
    assert stats["extra"]["distinct_words"] == len(count_words(docs))
    assert stats["totals"]["document_tokens"] == sum(count_words(docs).values())


def test_cli_runs_corpus_and_reports_errors(tmp_path, vocab, capsys):
    from pipelines.preprocess.cli import main

    (tmp_path / "r.csv").write_text("text,source\nthe cat sat,a\nthe dog,b\nthe fox,a\n")
    out = str(tmp_path / "cli")
    rc = main(["corpus", "--input", str(tmp_path / "r.csv"), "--out_dir", out, "--vocab_dir", vocab, "--n_ctx", "8",
               "--val_fraction", "0", "--where", "source=a", "--num_shards", "2"])
    assert rc == 0 and "2 in = 2 written + 0 rejected" in capsys.readouterr().out
    assert len(glob.glob(os.path.join(out, "train-*-of-00002.tfrecord.gz"))) == 2
    rc = main(["task", "--input", str(tmp_path / "nope.csv"), "--out_dir", out, "--vocab_dir", vocab,
               "--family", "classification"])
    assert rc == 1 and "matches no files" in capsys.readouterr().err


def test_runner_options():
    assert normalize_args(["--dry_run=False", "--x=1"]) == ["--x=1"]
    assert normalize_args(["--dry_run"]) == normalize_args(["--dry_run=true"]) == ["--dry_run=True"]
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    assert isinstance(create_pipeline(pipeline_options(["--runner=DirectRunner"])).runner, FnApiRunner)
    assert isinstance(create_pipeline(pipeline_options([])).runner, FnApiRunner)


def test_dataflow_job_builds_offline(tmp_path, vocab):
    pytest.importorskip("apache_beam.runners.dataflow.internal.apiclient", reason="needs apache-beam[gcp]")
    pytest.importorskip("google.cloud.dataflow", reason="needs apache-beam[gcp]")
    (tmp_path / "x.txt").write_text("the cat\n")
    s = run_corpus(str(tmp_path / "x.txt"), "gs://example-bucket/lm", vocab, n_ctx=8,
                   pipeline_args=["--runner=DataflowRunner", "--project=example-project", "--region=us-central1",
                                  "--temp_location=gs://example-bucket/tmp", "--dry_run=True", "--no_auth"],
                   options=QUIET)
    assert s["dry_run"] and s["state"] == "DONE" and s["transforms"] > 20
    assert s["setup_file"] == os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup.py")


# ------------------------------------------------------------------ TFDS

def _tiny_tfds(data_dir):
    """A tiny prepared TFDS dataset with an unlabeled test split, as GLUE's."""
    _store_tfds(data_dir, "tiny_sst", {"train": ([b"good movie", b"bad film", b"bad \xff"], [1, 0, 0]),
                                       "validation": ([b"great plot"], [1]), "test": ([b"the cat"], [-1])})


def _store_tfds(data_dir, name, splits):
    """A prepared TFDS dataset `name` of {split: (sentences, labels)}, with
    `idx` the row number (skips when this TFDS install cannot build one offline)."""
    tfds = pytest.importorskip("tensorflow_datasets")
    import importlib.resources
    import importlib.resources.abc  # noqa: F401
    import sys

    # tensorflow-datasets 4.9 needs the `importlib_resources` backport to build
    # datasets; the stdlib module has what it uses.
    sys.modules.setdefault("importlib_resources", importlib.resources)
    split = lambda s, y: tf.data.Dataset.from_tensor_slices(  # noqa: E731
        {"sentence": s, "label": y, "idx": list(range(len(y)))})
    try:
        tfds.dataset_builders.store_as_tfds_dataset(
            name=name, version="1.0.0", data_dir=data_dir, config="default",
            features=tfds.features.FeaturesDict({"sentence": tfds.features.Text(), "idx": tf.int32,
                                                 "label": tfds.features.ClassLabel(names=["negative", "positive"])}),
            split_datasets={k: split(list(texts), list(labels)) for k, (texts, labels) in splits.items()})
    except Exception as e:  # pragma: no cover - depends on the TFDS install
        pytest.skip(f"cannot build a TFDS dataset offline here: {e}")


def test_tfds_input_keeps_splits_and_class_names(tmp_path, vocab):
    data_dir = str(tmp_path / "tfds")
    _tiny_tfds(data_dir)
    out = str(tmp_path / "sst")
    s = run_task("tfds:tiny_sst", "classification", {"text": "sentence", "id": "idx"}, out, vocab, n_ctx=16,
                 options=QUIET.replace(tfds_data_dir=data_dir, max_bad_fraction=0.5))
    md = data.load_metadata(out)
    assert md.label_names == ["negative", "positive"] and sorted(md.splits) == ["train", "validation"]
    assert s["counts"] == {"input": 4, "written": 3, "rejected": 1, "records": 3}
    assert [(d["row"], d["reason"]) for d in _dead(out)] == [(2, "invalid_utf8")]
    with pytest.raises(FileNotFoundError, match="not prepared|not found"):
        run_task("tfds:glue/sst2", "classification", None, str(tmp_path / "glue"), vocab,
                 options=PreprocessOptions(tfds_data_dir=data_dir))

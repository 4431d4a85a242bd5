"""Tasks with their own splits (issue 25): an input per split, a split column,
a TFDS dataset's split names; each given split is used exactly, row for row,
and a validation split is carved from train (by a stable hash) only when none
is given. The hash split stays for tasks that give none."""
import csv
import glob
import json
import os

import pytest
import tensorflow as tf
import yaml

from gpt_keras import schema
from pipelines.config.loading import load_config
from pipelines.config.validation import ConfigError
from pipelines.run import run

WORDS = "good bad great awful film movie plot story acting cast fun dull".split()


def _rows(prefix: str, n: int) -> list[dict]:
    """Distinct rows with ids `<prefix><i>` (distinct texts: a hash split would scatter them)."""
    return [{"id": f"{prefix}{i}", "text": f"{WORDS[i % 12]} {WORDS[(i * 5 + 1) % 12]} {prefix} {i}",
             "label": str(i % 2)} for i in range(n)]


def _write(path, rows, columns=("id", "text", "label")):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns))
        w.writeheader()
        w.writerows(rows)
    return str(path)


def _config(tmp_path, task: dict) -> str:
    corpus = _write(tmp_path / "corpus.csv", _rows("lm", 40))
    config = {"name": "splits", "work_dir": str(tmp_path / "work"), "model": {"preset": "tiny"},
              "preprocess": {"num_merges": 40, "n_ctx": 32, "max_bad_fraction": 0.1,
                             "corpus": {"input": {"paths": [corpus], "format": "csv"}},
                             "tasks": [{"name": "toy", "family": "classification", "fields": {"text": "text"},
                                        "label_names": ["0", "1"], **task}]}}
    path = tmp_path / "splits.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _ids_by_split(task_dir: str) -> dict[str, list[str]]:
    """The example ids in each split's records, as written."""
    out = {}
    for name in schema.read_metadata(task_dir).splits:
        files = sorted(glob.glob(os.path.join(task_dir, schema.shard_pattern(name))))
        ids = []
        for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
            example = tf.train.Example.FromString(record.numpy())
            ids.append(example.features.feature["example_id"].bytes_list.value[0].decode())
        out[name] = ids
    return out


def _records(tmp_path, task: dict) -> str:
    run(["--config", _config(tmp_path, task), "--stages", "vocab,records"])
    return str(tmp_path / "work" / "records" / "toy" / "records")


def test_an_input_per_split_is_used_exactly_row_for_row(tmp_path, capsys):
    files = {name: _rows(name, n) for name, n in (("train", 30), ("validation", 7), ("test", 9))}
    task = {"splits": {name: {"paths": [_write(tmp_path / f"{name}.csv", rows)], "format": "csv"}
                       for name, rows in files.items()}}
    task_dir = _records(tmp_path, task)
    ids = _ids_by_split(task_dir)
    for name, rows in files.items():
        assert sorted(ids[name]) == sorted(r["id"] for r in rows), name
    assert schema.read_metadata(task_dir).split_method == "given"


def test_without_a_validation_split_it_is_carved_from_train_only(tmp_path, capsys):
    train, test = _rows("train", 60), _rows("test", 11)
    task = {"splits": {"train": {"paths": [_write(tmp_path / "train.csv", train)], "format": "csv"},
                       "test": {"paths": [_write(tmp_path / "test.csv", test)], "format": "csv"}},
            "val_fraction": 0.25}
    task_dir = _records(tmp_path, task)
    ids = _ids_by_split(task_dir)
    assert sorted(ids["test"]) == sorted(r["id"] for r in test)  # the test split, exactly
    assert sorted(ids["train"] + ids["validation"]) == sorted(r["id"] for r in train)
    assert 5 <= len(ids["validation"]) <= 25 and not set(ids["train"]) & set(ids["validation"])
    assert schema.read_metadata(task_dir).split_method == "given; validation: 0.25 of train by hash"
    # The carve is a stable hash: the same rows again.
    (tmp_path / "again").mkdir()
    again = _ids_by_split(_records(tmp_path / "again", task))
    assert sorted(again["validation"]) == sorted(ids["validation"])


def test_a_split_column_is_used_exactly_and_unknown_values_are_kept_as_dead_letters(tmp_path, capsys):
    rows = [dict(r, split=s) for r, s in zip(_rows("r", 40), ["train", "Dev", "test", "train", "valid"] * 8)]
    rows[0]["split"] = "holdout"  # neither a split nor an alias
    task = {"input": {"paths": [_write(tmp_path / "all.csv", rows, ("id", "text", "label", "split"))],
                      "format": "csv"}, "split_field": "split"}
    task_dir = _records(tmp_path, task)
    ids = _ids_by_split(task_dir)
    want = {name: sorted(r["id"] for r in rows[1:] if schema.task_split(r["split"]) == name)
            for name in schema.TASK_SPLITS}
    assert {name: sorted(v) for name, v in ids.items()} == want
    with open(os.path.join(task_dir, "dead_letter.jsonl")) as f:
        dead = [json.loads(line) for line in f]
    assert [(d["reason"], d["row"]) for d in dead] == [("unknown_split", 2)]  # line 2: the first after the header
    assert "holdout" in dead[0]["detail"] and dead[0]["raw"] == "holdout"
    assert schema.read_metadata(task_dir).counts["rejected"] == 1


def test_a_split_column_without_validation_rows_is_a_clear_error(tmp_path, capsys):
    rows = [dict(r, split=s) for r, s in zip(_rows("r", 20), ["train", "test"] * 10)]
    task = {"input": {"paths": [_write(tmp_path / "all.csv", rows, ("id", "text", "label", "split"))],
                      "format": "csv"}, "split_field": "split"}
    with pytest.raises(ConfigError, match=r"no validation rows .*split column 'split'"):
        _records(tmp_path, task)


def test_tfds_split_names_are_kept_and_validation_is_carved_when_missing(tmp_path):
    from test_preprocess import _store_tfds
    from pipelines.preprocess import PreprocessOptions
    from pipelines.preprocess.task import run_task
    from gpt_keras.tokenizer import count_words, train_bpe

    data_dir = str(tmp_path / "tfds")
    train = [f"{WORDS[i % 12]} film {i}".encode() for i in range(40)]
    test = [f"{WORDS[i % 12]} plot {i}".encode() for i in range(9)]
    _store_tfds(data_dir, "tiny_imdb", {"train": (train, [i % 2 for i in range(40)]),
                                        "test": (test, [i % 2 for i in range(9)])})
    vocab = str(tmp_path / "vocab")
    train_bpe(count_words([t.decode() for t in train]), num_merges=30).save(vocab)
    out = str(tmp_path / "out")
    options = PreprocessOptions(tfds_data_dir=data_dir, verbose=False)
    run_task("tfds:tiny_imdb:train,test", "classification", {"text": "sentence", "id": "idx"}, out, vocab,
             n_ctx=16, options=options, carve_validation=0.25, allowed_splits=schema.TASK_SPLITS)
    ids = _ids_by_split(out)
    assert sorted(ids["test"], key=int) == [str(i) for i in range(9)]
    assert sorted(ids["train"] + ids["validation"], key=int) == [str(i) for i in range(40)]
    assert ids["validation"] and not set(ids["train"]) & set(ids["validation"])
    with pytest.raises(ValueError, match=r"give split\(s\) \['unsupervised'\], but only"):
        _store_tfds(data_dir, "tiny_unsup", {"train": (train, [0] * 40), "unsupervised": (test, [0] * 9)})
        run_task("tfds:tiny_unsup:train,unsupervised", "classification", {"text": "sentence"}, str(tmp_path / "u"),
                 vocab, options=options, allowed_splits=schema.TASK_SPLITS)


@pytest.mark.parametrize("task,message", [
    ({"splits": {"validation": {"paths": ["v.csv"]}}}, r"splits: needs a train input"),
    ({"input": {"paths": ["a.csv"]}, "splits": {"train": {"paths": ["t.csv"]}}}, r"input: give either input"),
    ({"splits": {"train": {"paths": ["t.csv"]}}, "test_fraction": 0.2}, r"test_fraction: is for hash splitting"),
    ({"splits": {"train": {"paths": ["t.csv"]}, "dev": {"paths": ["d.csv"]}}}, r"splits.dev"),
    ({"splits": {"train": {"paths": ["t.csv"]}}, "split_field": "s"}, r"split_field: is for one input"),
])
def test_bad_split_settings_are_named(tmp_path, task, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_config(tmp_path, task))


def test_the_preprocess_cli_takes_a_split_column(tmp_path):
    from gpt_keras.tokenizer import count_words, train_bpe
    from pipelines.preprocess.cli import main

    rows = [dict(r, split=s) for r, s in zip(_rows("r", 12), ["train", "dev", "test"] * 4)]
    data = _write(tmp_path / "all.csv", rows, ("id", "text", "label", "split"))
    vocab = str(tmp_path / "vocab")
    train_bpe(count_words([r["text"] for r in rows]), num_merges=20).save(vocab)
    out = str(tmp_path / "out")
    assert main(["task", "--input", data, "--out_dir", out, "--vocab_dir", vocab, "--family", "classification",
                 "--split_field", "split", "--n_ctx", "16", "--quiet"]) == 0
    ids = _ids_by_split(out)
    assert {k: sorted(v) for k, v in ids.items()} == {
        name: sorted(r["id"] for r in rows if schema.task_split(r["split"]) == name) for name in schema.TASK_SPLITS}

"""gpt_keras.schema (record specs, metadata) and gpt_keras.data (tf.data readers),
on records written here directly (no Beam)."""
import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf
from helpers import tiny_config

from gpt_keras import data, schema

N_VOCAB = 97
SPECIALS = {"_start_": 97, "_delimiter_": 98, "_classify_": 99}
FP = "f" * 64


def _metadata(**overrides) -> schema.DatasetMetadata:
    values = dict(kind="pretraining", max_length=8, vocab=schema.VocabInfo(FP, N_VOCAB, dict(SPECIALS)),
                  splits={"train": schema.SplitInfo(records=3, rows=2, fraction=1.0)},
                  counts={"input": 3, "written": 2, "rejected": 1, "records": 3}, boundary_policy="concat")
    values.update(overrides)
    return schema.DatasetMetadata(**values)


def _task_metadata(family="classification", records=3, **overrides):
    values = dict(kind="task", family=family, boundary_policy=None, label_names=["neg", "pos"],
                  splits={"train": schema.SplitInfo(records=records, rows=records)},
                  counts={"input": records, "written": records, "rejected": 0, "records": records})
    values.update(overrides)
    return _metadata(**values)


def _write(directory, split, records, metadata):
    directory.mkdir(exist_ok=True)
    options = tf.io.TFRecordOptions(compression_type=schema.COMPRESSION)
    with tf.io.TFRecordWriter(str(directory / f"{split}-00000-of-00001{schema.RECORD_SUFFIX}"), options) as w:
        for r in records:
            w.write(r)
    schema.write_metadata(str(directory), metadata)
    return str(directory)


def test_metadata_round_trip_and_validation():
    md = _task_metadata()
    again = schema.DatasetMetadata.from_json(md.to_json())
    assert again == md and again.num_labels == 2 and again.vocab.vocab_size == 100
    with pytest.raises(ValueError, match="counts do not add up"):
        _metadata(counts={"input": 5, "written": 2, "rejected": 1, "records": 3}).validate()
    with pytest.raises(ValueError, match="special ids"):
        _metadata(vocab=schema.VocabInfo(FP, N_VOCAB, {"_start_": 0, "_delimiter_": 1, "_classify_": 2})).validate()
    with pytest.raises(ValueError, match="num_sequences 1 != 2 for similarity"):
        _task_metadata("similarity").validate()
    with pytest.raises(ValueError, match="needs >= 2 distinct label names"):
        _task_metadata(label_names=["only"]).validate()
    with pytest.raises(ValueError, match="regression has no label names"):
        _task_metadata("regression", is_regression=True, num_sequences=2).validate()
    with pytest.raises(ValueError, match="boundary_policy"):
        _metadata(boundary_policy="eot").validate()
    with pytest.raises(ValueError, match="unknown metadata keys"):
        schema.DatasetMetadata.from_dict({**md.to_dict(), "extra": 1})


def test_pretrain_dataset_pads_per_batch_with_mask(tmp_path):
    windows = [[1, 2, 3, 4, 5, 6, 7, 8], [9, 10], [11, 12, 13]]
    d = _write(tmp_path / "lm", "train", [schema.encode_pretraining_example(w) for w in windows], _metadata())
    batches = list(data.pretrain_dataset(d, "train", 2, expected_fingerprint=FP, config=tiny_config(n_ctx=8)))
    assert [b["token_ids"].shape.as_list() for b in batches] == [[2, 8], [1, 3]]
    assert batches[0]["token_ids"].dtype == tf.int32
    assert batches[0]["token_ids"].numpy().tolist() == [windows[0], [9, 10, 0, 0, 0, 0, 0, 0]]
    assert batches[0]["padding_mask"].numpy().tolist()[1] == [1, 1, 0, 0, 0, 0, 0, 0]
    ds = data.pretrain_dataset(d, "train", 2, pad_to_max_length=True, drop_remainder=True)
    assert ds.element_spec["token_ids"].shape.as_list() == [2, 8]
    assert int(ds.cardinality()) == 1
    shuffled = [b["token_ids"].numpy().tolist() for b in data.pretrain_dataset(d, "train", 1, shuffle=True, seed=3)]
    assert sorted(r[0] for r in shuffled) == sorted(windows)
    with pytest.raises(ValueError, match="no split 'validation'; it has \\['train'\\]"):
        data.pretrain_dataset(d, "validation", 2)


def test_task_dataset_shapes_labels_and_targets(tmp_path):
    S, D, E = 97, 98, 99
    pairs = [[[S, 1, D, 2, E], [S, 2, D, 1, E]], [[S, 3, 4, D, 5, E], [S, 5, D, 3, 4, E]]]
    records = [schema.encode_task_example(p, target=t, example_id=f"r{i}") for i, (p, t) in
               enumerate(zip(pairs, [0.5, 4.0]))]
    md = _task_metadata("regression", records=2, is_regression=True, label_names=None, num_sequences=2)
    d = _write(tmp_path / "sts", "train", records, md)
    (x, y), = list(data.task_dataset(d, "train", 4, expected_family="regression", include_example_id=True))
    assert x["token_ids"].shape.as_list() == [2, 2, 6] and x["padding_mask"].shape == x["token_ids"].shape
    assert x["token_ids"].numpy().tolist()[0] == [[S, 1, D, 2, E, 0], [S, 2, D, 1, E, 0]]
    assert y.dtype == tf.float32 and y.numpy().tolist() == [0.5, 4.0]
    assert x["example_id"].numpy().tolist() == [b"r0", b"r1"]
    ds = data.task_dataset(d, "train", 4)
    assert ds.element_spec[0]["token_ids"].shape.as_list() == [None, 2, None]

    choices = [[[S, 1, D, 2, E], [S, 1, D, 3, E], [S, 1, D, 4, 4, E]]]
    md = _task_metadata("multiple_choice", records=1, label_names=None, num_choices=3, num_sequences=3)
    d = _write(tmp_path / "mc", "train", [schema.encode_task_example(choices[0], label=2)], md)
    (x, y), = list(data.task_dataset(d, "train", 4, pad_to_max_length=True))
    assert x["token_ids"].shape.as_list() == [1, 3, 8] and y.numpy().tolist() == [2] and y.dtype == tf.int32
    with pytest.raises(ValueError, match="exactly one of label"):
        schema.encode_task_example(choices[0], label=1, target=1.0)


def test_group_by_length_keeps_every_example_in_full_batches_with_less_padding(tmp_path):
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 60, 100)
    rows = [[[int(i % 90) + 1] * int(n)] for i, n in enumerate(lengths)]
    records = [schema.encode_task_example(r, label=i % 2, example_id=f"r{i}") for i, r in enumerate(rows)]
    d = _write(tmp_path / "cls", "train", records, _task_metadata(records=100, max_length=64))

    def read(**kwargs):
        batches = list(data.task_dataset(d, "train", 8, shuffle=True, seed=0, include_example_id=True, **kwargs))
        ids = sorted(b.decode() for x, _ in batches for b in x["example_id"].numpy())
        return [x["token_ids"].shape[0] for x, _ in batches], sum(x["token_ids"].numpy().size for x, _ in batches), ids

    sizes, padded, ids = read(group_by_length=True)
    plain_sizes, plain_padded, plain_ids = read()
    assert ids == plain_ids == sorted(f"r{i}" for i in range(100))  # each example once per pass
    assert sorted(sizes)[1:] == [8] * (len(sizes) - 1)  # full batches, but one
    assert padded < 0.75 * plain_padded


def test_a_seeded_subset_of_examples_is_fixed_nested_and_read_every_pass(tmp_path):
    records = [schema.encode_task_example([[97, i + 1, 99]], label=i % 2, example_id=f"r{i}") for i in range(50)]
    d = _write(tmp_path / "cls", "train", records, _task_metadata(records=50, max_length=3))

    def ids(examples, seed, **kwargs):
        return [b.decode() for x, _ in data.task_dataset(d, "train", 4, include_example_id=True, examples=examples,
                                                          subset_seed=seed, **kwargs) for b in x["example_id"].numpy()]

    ten = ids(10, 0)
    assert len(ten) == len(set(ten)) == 10 and ten == ids(10, 0)  # the same ten on every read
    assert ids(25, 0)[:10] == ten  # nested: more examples add to the smaller subset
    assert ids(10, 1) != ten  # another seed draws other examples
    assert sorted(ids(100, 0)) == sorted(f"r{i}" for i in range(50))  # more than the split: all of it
    # Shuffled, repeated and grouped by length (as fine-tuning reads it), the stream holds only those ten.
    stream = data.task_dataset(d, "train", 5, include_example_id=True, examples=10, subset_seed=0, shuffle=True,
                               seed=3, repeat=True, group_by_length=True)
    seen = [b.decode() for x, _ in stream.take(20) for b in x["example_id"].numpy()]
    assert len(seen) == 100 and set(seen) == set(ten)


def test_readers_refuse_mismatched_data(tmp_path):
    d = _write(tmp_path / "clf", "train", [schema.encode_task_example([[97, 5, 99]], label=1)] * 3, _task_metadata())
    with pytest.raises(schema.SchemaMismatchError, match="task family is 'classification', but the model is for "
                                                         "'entailment'"):
        data.task_dataset(d, "train", 2, expected_family="entailment")
    with pytest.raises(schema.SchemaMismatchError, match="tokenized with vocabulary ffffffffffff... but the model's"):
        data.task_dataset(d, "train", 2, expected_fingerprint="0" * 64)
    with pytest.raises(schema.SchemaMismatchError, match="holds task records, not pretraining records"):
        data.pretrain_dataset(d, "train", 2)
    with pytest.raises(schema.SchemaMismatchError, match="config.vocab_size is 50"):
        data.task_dataset(d, "train", 2, config=tiny_config(vocab_size=50))
    with pytest.raises(schema.SchemaMismatchError, match="config.n_ctx is 4"):
        data.task_dataset(d, "train", 2, config=tiny_config(n_ctx=4))
    assert data.load_metadata(d).label_names == ["neg", "pos"]
    with pytest.raises(FileNotFoundError, match="no metadata.json"):
        data.pretrain_dataset(str(tmp_path), "train", 2)
    broken = json.loads((tmp_path / "clf" / "metadata.json").read_text())
    broken["counts"]["input"] = 99
    (tmp_path / "clf" / "metadata.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="counts do not add up"):
        data.task_dataset(d, "train", 2)


def test_records_listed_in_metadata_must_exist(tmp_path):
    md = _metadata()
    schema.write_metadata(str(tmp_path), md)
    with pytest.raises(FileNotFoundError, match="metadata lists 3 records in split 'train'"):
        data.pretrain_dataset(str(tmp_path), "train", 2)
    assert dataclasses.asdict(md)["boundary_policy"] == "concat"


def test_records_are_written_without_tensorflow_byte_for_byte_as_tf_writes_them():
    # The Beam writers serialize tf.train.Example through protobuf alone (no TF import in the workers);
    # the bytes must be exactly TF's deterministic serialization, or every record would change.
    def tf_example(feature):
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)

    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    for ids in ([0], [127, 128, 16383, 16384, 40477], list(range(600)), [-1, -(2 ** 63), 2 ** 63 - 1]):
        assert schema.encode_pretraining_example(ids) == tf_example({"token_ids": ints(ids)})
    seqs = [[97, 5, 98, 6, 99], [97, 6, 98, 5, 99]]
    common = {"token_ids": ints([t for s in seqs for t in s]), "seq_lengths": ints([5, 5]),
              "example_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=["dév.csv:7".encode()]))}
    assert schema.encode_task_example(seqs, label=3, example_id="dév.csv:7") == tf_example(
        {**common, "label": ints([3])})
    assert schema.encode_task_example(seqs, target=-2.75, example_id="dév.csv:7") == tf_example(
        {**common, "target": tf.train.Feature(float_list=tf.train.FloatList(value=[-2.75]))})
    assert schema.encode_task_example([[1]], label=0) == tf_example(
        {"token_ids": ints([1]), "seq_lengths": ints([1]), "label": ints([0]),
         "example_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b""]))})

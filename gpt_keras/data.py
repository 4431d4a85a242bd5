"""tf.data readers of the TFRecords that `pipelines.preprocess` writes.

    ds = pretrain_dataset("data/imdb_lm", "train", 32, expected_fingerprint=tok.fingerprint)
    # -> {"token_ids", "padding_mask"} int32 [batch, len]
    ds = task_dataset("data/rt", "train", 32, expected_family="classification")
    # -> ({"token_ids", "padding_mask"} int32 [batch, n_seq, len], label [batch])

Both read `metadata.json` first and refuse data whose record kind, task family,
vocabulary fingerprint or sizes do not match what the caller expects
(`schema.SchemaMismatchError`). Batches are padded per batch, with id 0 and a
mask (DESIGN.md "Special tokens"), to the longest row of the batch, or to the
dataset's max length with `pad_to_max_length=True` (static shapes for XLA/TPU).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from gpt_keras import schema
from gpt_keras.preprocessor import pad

AUTOTUNE = tf.data.AUTOTUNE


def _split_files(data_dir: str, metadata: schema.DatasetMetadata, split: str) -> list[str]:
    if split not in metadata.splits:
        raise ValueError(f"'{data_dir}' has no split {split!r}; it has {sorted(metadata.splits)}")
    files = sorted(tf.io.gfile.glob(data_dir.rstrip("/") + "/" + schema.shard_pattern(split)))
    if not files and metadata.splits[split].records:
        raise FileNotFoundError(f"'{data_dir}': metadata lists {metadata.splits[split].records} records in split "
                                f"{split!r}, but no {schema.shard_pattern(split)} files were found")
    return files


def _records(data_dir: str, metadata: schema.DatasetMetadata, split: str, *, shuffle: bool, seed: int | None,
             shuffle_buffer: int, repeat: bool, known_cardinality: bool, examples: int | None = None,
             subset_seed: int = 0) -> tf.data.Dataset:
    """Serialized records of one split, optionally shuffled (files, then
    records); with `examples`, only that many of them (`_subset`)."""
    if examples is not None:
        ds = _subset(_records(data_dir, metadata, split, shuffle=False, seed=None, shuffle_buffer=0, repeat=False,
                              known_cardinality=False), examples, subset_seed)
    else:
        files = _split_files(data_dir, metadata, split)
        ds = tf.data.Dataset.from_tensor_slices(tf.constant(files, tf.string, shape=[len(files)]))
        if shuffle:
            ds = ds.shuffle(len(files) or 1, seed=seed, reshuffle_each_iteration=True)
        ds = ds.interleave(lambda f: tf.data.TFRecordDataset(f, compression_type=schema.COMPRESSION),
                           cycle_length=min(len(files), 8) or 1, num_parallel_calls=AUTOTUNE,
                           deterministic=not shuffle)
        if known_cardinality and not repeat:
            # Lets Keras/`train.py` size an epoch. Fine with DATA auto-sharding (each
            # worker reads everything); under FILE sharding pass known_cardinality=False.
            ds = ds.apply(tf.data.experimental.assert_cardinality(metadata.splits[split].records))
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    return ds


def _subset(records: tf.data.Dataset, examples: int, seed: int) -> tf.data.Dataset:
    """`examples` records drawn at random (all of them if the split is smaller),
    fixed by `seed` and nested: with one seed, a smaller subset is the start
    of a larger one, so a data-efficiency curve adds examples rather than
    drawing new ones. Held in memory: labelled splits are small."""
    rows = list(records.as_numpy_iterator())
    order = np.random.default_rng(seed).permutation(len(rows))[:examples]
    return tf.data.Dataset.from_tensor_slices(tf.constant([rows[i] for i in order], tf.string, shape=[len(order)]))


def pretrain_dataset(data_dir: str, split: str, batch_size: int, *, expected_fingerprint: str | None = None,
                     config=None, shuffle: bool = False, seed: int | None = None, shuffle_buffer: int = 10_000,
                     repeat: bool = False, drop_remainder: bool = False, pad_to_max_length: bool = False,
                     known_cardinality: bool = True) -> tf.data.Dataset:
    """Batches of packed LM windows: {"token_ids", "padding_mask"} int32 [batch, len].

    Args:
      data_dir: an output directory of `pipelines.preprocess corpus`.
      split: e.g. "train" or "validation".
      batch_size: records per batch.
      expected_fingerprint: the model tokenizer's `fingerprint`; refused if different.
      config: a `GPTConfig`; refused if its vocab_size/n_ctx do not fit the data.
      shuffle, seed, shuffle_buffer: shuffle files and records (seeded: reproducible).
      repeat: repeat forever (otherwise one pass with a known cardinality).
      drop_remainder: drop the last short batch (static batch dimension).
      pad_to_max_length: pad every batch to the dataset's max length.
      known_cardinality: declare the record count from metadata (set False when
        tf.data auto-shards by FILE over several workers; DATA sharding is fine).
    """
    metadata = schema.read_metadata(data_dir)
    metadata.check_compatible(kind=schema.KIND_PRETRAINING, fingerprint=expected_fingerprint, config=config,
                              source=f"'{data_dir}'")
    spec = schema.pretraining_features()
    length = metadata.max_length if pad_to_max_length else None

    def parse(serialized):
        ids = tf.io.parse_example(serialized, spec)["token_ids"]
        return pad(ids, length)

    ds = _records(data_dir, metadata, split, shuffle=shuffle, seed=seed, shuffle_buffer=shuffle_buffer,
                  repeat=repeat, known_cardinality=known_cardinality)
    return ds.batch(batch_size, drop_remainder=drop_remainder).map(parse, num_parallel_calls=AUTOTUNE).prefetch(
        AUTOTUNE)


def task_dataset(data_dir: str, split: str, batch_size: int, *, expected_family=None,
                 expected_fingerprint: str | None = None, config=None, shuffle: bool = False,
                 seed: int | None = None, shuffle_buffer: int = 10_000, repeat: bool = False,
                 drop_remainder: bool = False, pad_to_max_length: bool = False, include_example_id: bool = False,
                 known_cardinality: bool = True, group_by_length: bool = False, examples: int | None = None,
                 subset_seed: int = 0) -> tf.data.Dataset:
    """Batches `(x, y)` of fine-tuning examples.

    x: {"token_ids", "padding_mask"} int32 [batch, n_seq, len] (n_seq static:
    1, 2 for similarity/regression, K for multiple choice), plus
    "example_id" (string [batch]) with `include_example_id=True`.
    y: int32 label [batch], or float32 target [batch] for regression.
    `expected_family` (a TaskFamily or its name) is checked against the data;
    `group_by_length` batches examples of similar length together (as HF's
    `group_by_length`): task texts vary a lot in length, and a batch padded
    to its longest row wastes the rest (Rotten Tomatoes: about half the
    tokens of a random batch are padding). The cardinality becomes unknown.
    `examples`: read only that many of the split's examples, drawn at random
    with `subset_seed` (the same ones on every call; fewer labels, as in the
    paper's data-efficiency question). Other arguments as `pretrain_dataset`.
    """
    metadata = schema.read_metadata(data_dir)
    metadata.check_compatible(kind=schema.KIND_TASK, family=expected_family, fingerprint=expected_fingerprint,
                              config=config, source=f"'{data_dir}'")
    spec = schema.task_features(metadata.is_regression)
    n_seq = metadata.num_sequences
    length = metadata.max_length if pad_to_max_length else None

    def parse(serialized):
        ex = tf.io.parse_example(serialized, spec)
        x = pad(ex["token_ids"], length)
        x = {k: tf.ensure_shape(v, [None, n_seq, length]) for k, v in x.items()}
        if include_example_id:
            x["example_id"] = ex["example_id"]
        y = ex["target"] if metadata.is_regression else tf.cast(ex["label"], tf.int32)
        return x, y

    ds = _records(data_dir, metadata, split, shuffle=shuffle, seed=seed, shuffle_buffer=shuffle_buffer,
                  repeat=repeat, known_cardinality=known_cardinality and not group_by_length, examples=examples,
                  subset_seed=subset_seed)
    if group_by_length:
        ds = _grouped_by_length(ds, spec, batch_size, seed)
        if drop_remainder:
            ds = ds.filter(lambda b: tf.shape(b)[0] == batch_size)
        return ds.map(parse, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=drop_remainder).map(parse, num_parallel_calls=AUTOTUNE).prefetch(
        AUTOTUNE)


def _grouped_by_length(records: tf.data.Dataset, spec: dict, batch_size: int, seed: int | None,
                       window: int = 16) -> tf.data.Dataset:
    """Batches of serialized records of similar length: each run of `window`
    batches' worth of (shuffled) records is sorted by length and cut into
    batches, whose order is then shuffled. Unlike tf.data's
    `bucket_by_sequence_length`, every batch but a pass's last is full, so a
    multi-replica step always splits the batch evenly."""
    def by_length(chunk):
        ids = tf.io.parse_example(chunk, spec)["token_ids"]  # ragged [rows, n_seq, len]
        lengths = tf.reduce_max(ids.row_lengths(axis=2), axis=1)
        return tf.gather(chunk, tf.argsort(lengths, stable=True))

    batches = records.batch(batch_size * window).map(by_length, num_parallel_calls=AUTOTUNE).unbatch().batch(
        batch_size)
    return batches.shuffle(window, seed=seed, reshuffle_each_iteration=True)


def load_metadata(data_dir: str) -> schema.DatasetMetadata:
    """The validated `metadata.json` of a preprocessed directory (label names,
    num_choices, max length, counts...), e.g. to size a task head."""
    return schema.read_metadata(data_dir)

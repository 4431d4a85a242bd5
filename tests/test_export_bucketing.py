"""Length buckets of a served batch (gpt_keras.export.bucketing): where a
batch splits, and that the rows come back in order with the same values."""
import numpy as np
import pytest
import tensorflow as tf

from gpt_keras.export.bucketing import estimated_call_cost, forward_in_buckets, split_point


@pytest.mark.parametrize("lengths, call_cost, expected_k", [
    ([5], 0, 0),  # one row never splits
    ([], 0, 0),  # nor an empty batch
    ([10, 10, 10, 10], 0, 0),  # equal lengths: nothing to save
    ([3, 40, 4, 5], 0, 3),  # three short rows, one long: 3*5 + 40 < 4*40
    ([3, 40, 4, 5], 200, 0),  # ... unless a call costs more than the 105 tokens saved
    ([3, 40, 4, 5], 100, 3),
])
def test_split_point(lengths, call_cost, expected_k):
    order, k = split_point(tf.constant(lengths, tf.int64), call_cost)
    assert int(k) == expected_k
    assert np.all(np.diff(np.asarray(lengths, np.int64)[order.numpy()]) >= 0)  # shortest first


def test_estimated_call_cost_shrinks_with_width():
    assert estimated_call_cost(256) == 55  # measured on the demo preset
    assert estimated_call_cost(768) < estimated_call_cost(256)
    assert estimated_call_cost(4096) == 4  # floor


def _row_sums(rows: tf.RaggedTensor) -> tf.Tensor:
    """A padding-invariant stand-in for the model: per row, the sum of its
    padded ids and its number of sequences."""
    return tf.stack([tf.cast(tf.reduce_sum(rows.to_tensor(), axis=[1, 2]), tf.float32),
                     tf.cast(rows.row_lengths(axis=1), tf.float32)], axis=1)


@pytest.mark.parametrize("call_cost", [0, 10 ** 6])
def test_rows_come_back_in_order(call_cost):
    rows = [[[1, 2, 3]], [[4] * 30], [[5]], [[6, 7]], [[8] * 25]]
    ids = tf.ragged.constant(rows, dtype=tf.int32, ragged_rank=2)
    out = tf.function(lambda x: forward_in_buckets(_row_sums, x, call_cost))(ids).numpy()
    np.testing.assert_array_equal(out[:, 0], [sum(sum(seq) for seq in row) for row in rows])
    np.testing.assert_array_equal(out[:, 1], [1] * len(rows))


def test_buckets_pad_to_their_own_longest_row():
    widths = []

    def forward(rows):
        dense = rows.to_tensor()
        widths.append(int(tf.shape(dense)[2]))
        return _row_sums(rows)

    rows = tf.ragged.constant([[[1] * 30], [[1]], [[1, 1]], [[1] * 3]], dtype=tf.int32, ragged_rank=2)
    forward_in_buckets(forward, rows, 0)  # eager: the loop runs in Python, one call per bucket
    assert widths == [3, 30]  # the three short rows padded to 3, the long one alone

"""bench/peer_demo.py: the keras-hub peer pre-trains without the special-token
rows and gets them fresh, from the library's draw, for fine-tuning."""
import importlib.util
import os

import numpy as np
import pytest

from gpt_keras.model import append_special_rows
from helpers import tiny_config

pytest.importorskip("keras_hub")
BPE = 50


def _peer_demo():
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "peer_demo.py")
    spec = importlib.util.spec_from_file_location("peer_demo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_peer_pretrains_over_bpe_rows_only_and_fine_tunes_with_fresh_special_rows():
    peer_demo = _peer_demo()
    config = tiny_config(vocab_size=BPE, n_special=0)
    seen = {}

    def pretrain(lm):  # stands in for pre-training: records the softmax, moves every weight
        seen["vocab"] = lm.output.shape[-1]
        for w in lm.weights:
            w.assign(w.numpy() + 1.0)
        seen["weights"] = [w.numpy() for w in lm.weights]

    lm, body = peer_demo.finetuning_peer(config, BPE, seed=7, pretrain=pretrain)
    assert seen["vocab"] == BPE  # no special row among pre-training's answers
    assert lm.output.shape[-1] == BPE + 3 and body.output.shape[-1] == config.n_embd
    token_embeddings = lm.get_layer("token_embedding").embeddings
    for trained, tuned in zip(seen["weights"], lm.weights):
        if tuned is token_embeddings:  # the pre-trained BPE rows, then the library's draw
            expected = append_special_rows(trained, 3, config.initializer_range, seed=7)
            np.testing.assert_array_equal(tuned.numpy(), expected)
            assert abs(float(expected[BPE:].std()) - config.initializer_range) < 0.01
        else:
            np.testing.assert_array_equal(tuned.numpy(), trained)
    scratch, _ = peer_demo.finetuning_peer(config, BPE, seed=7)
    assert scratch.output.shape[-1] == BPE + 3

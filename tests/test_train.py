"""Training: the optimizer, schedules, MirroredStrategy equivalence, checkpoint resume."""
import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import random_ids, tiny_config

import gpt_keras as gk
from gpt_keras.optim import OpenAIAdam, warmup_cosine, warmup_linear
from gpt_keras.train import TrainSettings, pretrain

from gpt_keras.train import default_strategy

# One strategy object per kind for the whole process (see train.default_strategy);
# conftest splits the CPU into two logical devices, so the default mirrors over 2.
SINGLE = tf.distribute.OneDeviceStrategy("/cpu:0")
MIRRORED = default_strategy()


def _lm_data(n=16, length=16, seed=0, uneven=False):
    rng = np.random.default_rng(seed)
    ids = random_ids(rng, (n, length), 97)
    mask = np.ones_like(ids)
    if uneven:  # the first half of every batch (replica 0's share) is mostly padding
        for start in range(0, n, 8):
            mask[start:start + 4, 3:] = 0
        ids = ids * mask
    return tf.data.Dataset.from_tensor_slices({"token_ids": ids, "padding_mask": mask}).batch(8)


def _weights(model):
    return [w.numpy() for w in model.backbone.weights]


def test_mirrored_step_equals_single_device_step_with_uneven_padding():
    # A small clip norm makes clipping active, so it must act on the summed gradient.
    settings = TrainSettings(learning_rate=1e-2, schedule="constant", epochs=1, steps_per_epoch=2,
                             max_grad_norm=0.05, verbose=0)
    keras.utils.set_random_seed(5)
    start = gk.GPTBackbone(**tiny_config().to_dict())
    single, h1 = pretrain(start, _lm_data(uneven=True), settings, strategy=SINGLE)
    mirrored, h2 = pretrain(start, _lm_data(uneven=True), settings, strategy=MIRRORED)
    assert MIRRORED.num_replicas_in_sync == 2
    for a, b in zip(_weights(single), _weights(mirrored)):
        np.testing.assert_allclose(a, b, atol=2e-6)
    np.testing.assert_allclose(h1.history["loss"], h2.history["loss"], rtol=1e-5)
    # And the weights did move.
    assert max(np.abs(a - b).max() for a, b in zip(_weights(single), start.get_weights())) > 1e-3


def test_resume_after_interruption_continues_from_the_checkpoint(tmp_path):
    settings = dict(learning_rate=1e-3, schedule="warmup_cosine", warmup=2, epochs=4, steps_per_epoch=2,
                    verbose=0)
    keras.utils.set_random_seed(6)
    start = gk.GPTBackbone(**tiny_config().to_dict())
    data = _lm_data(n=32, seed=3)
    reference, _ = pretrain(start, data, TrainSettings(checkpoint_dir=str(tmp_path / "a"), **settings),
                            strategy=SINGLE)

    class Interrupt(keras.callbacks.Callback):
        seen = 0

        def on_train_batch_end(self, batch, logs=None):
            Interrupt.seen += 1
            if Interrupt.seen == 5:  # mid-epoch 3, after the checkpoint at step 4
                raise KeyboardInterrupt

    resumable = TrainSettings(checkpoint_dir=str(tmp_path / "b"), **settings)
    with pytest.raises(KeyboardInterrupt):
        pretrain(start, data, resumable, strategy=SINGLE, callbacks=[Interrupt()])
    assert tf.train.latest_checkpoint(str(tmp_path / "b")).endswith("ckpt-4")
    resumed, history = pretrain(start, data, resumable, strategy=SINGLE)
    assert len(history.history["loss"]) == 2  # only epochs 3 and 4 ran again
    assert int(resumed.optimizer.iterations.numpy()) == 8
    for a, b in zip(_weights(reference), _weights(resumed)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_training_writes_tensorboard_logs_and_history(tmp_path):
    settings = TrainSettings(learning_rate=1e-3, schedule="constant", epochs=1, steps_per_epoch=2,
                             log_dir=str(tmp_path / "logs"), verbose=0)
    pretrain(tiny_config(), _lm_data(), settings, strategy=SINGLE)
    assert (tmp_path / "logs" / "history.json").exists()
    assert (tmp_path / "logs" / "history.csv").read_text().startswith("epoch,")
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "logs").rglob("*"))


def test_out_of_range_ids_in_the_data_fail_before_the_step():
    ids = np.full((8, 4), 150, "int32")
    data = tf.data.Dataset.from_tensor_slices({"token_ids": ids, "padding_mask": np.ones_like(ids)}).batch(8)
    settings = TrainSettings(schedule="constant", epochs=1, steps_per_epoch=1, verbose=0, jit_compile=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="token id >= vocabulary size 97"):
        pretrain(tiny_config(), data, settings, strategy=SINGLE)


def test_decoupled_l2_skips_biases_and_gains_and_optionally_embeddings():
    backbone = gk.GPTBackbone(**tiny_config().to_dict())
    variables = backbone.trainable_variables
    grads = [tf.zeros_like(v) for v in variables]
    before = [v.numpy() for v in variables]
    opt = OpenAIAdam(learning_rate=0.1, l2=0.5, decay_embeddings=False)
    opt.apply(grads, variables)
    for v, old in zip(variables, before):
        changed = not np.allclose(v.numpy(), old)
        expected = len(v.shape) >= 2 and "embeddings" not in v.path
        assert changed == expected, v.path
        if expected:  # p -= lr_t * l2 * p with the bias-corrected lr_t (t=1: sqrt(1-b2)/(1-b1))
            lr_t = 0.1 * np.sqrt(1 - 0.999) / (1 - 0.9)
            np.testing.assert_allclose(v.numpy(), old * (1 - lr_t * 0.5), rtol=1e-5)


def test_schedules_warm_up_then_decay_to_zero():
    cosine = warmup_cosine(1.0, warmup_steps=10, total_steps=110)
    values = [float(cosine(s)) for s in (0, 5, 10, 60, 110)]
    np.testing.assert_allclose(values, [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)
    linear = warmup_linear(1.0, total_steps=1000, warmup_fraction=0.002)
    values = [float(linear(s)) for s in (0, 1, 2, 501, 1000)]  # warmup = 2 steps
    np.testing.assert_allclose(values, [0.5, 1.0, 1.0, 0.5, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_cosine(1.0, 20, 10)
    with pytest.raises(ValueError, match="Unknown schedule 'cosine'"):
        TrainSettings(schedule="cosine")


def test_custom_loop_drives_the_same_step_as_fit():
    settings = dict(learning_rate=1e-2, schedule="constant", epochs=2, steps_per_epoch=1, max_grad_norm=0.05,
                    verbose=0)
    start = gk.GPTBackbone(**tiny_config().to_dict())
    data = _lm_data(uneven=True)
    by_fit, h1 = pretrain(start, data, TrainSettings(loop="fit", **settings), strategy=MIRRORED)
    by_loop, h2 = pretrain(start, data, TrainSettings(loop="custom", **settings), strategy=MIRRORED)
    for a, b in zip(_weights(by_fit), _weights(by_loop)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(h1.history["loss"], h2.history["loss"], rtol=1e-6)


def _free_ports(n):
    import socket
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_reach_the_same_weights_as_one_process(tmp_path):
    import json
    import os
    import subprocess
    import sys

    from multiworker_data import SETTINGS, batches, config

    start = gk.GPTBackbone(**config().to_dict())
    start_path = str(tmp_path / "start.weights.h5")
    start.save_weights(start_path)
    reference, _ = pretrain(start, batches(), TrainSettings(**SETTINGS), strategy=SINGLE)

    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    script = os.path.join(os.path.dirname(__file__), "multiworker_job.py")
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            [sys.executable, script, tf_config, start_path, str(tmp_path / f"w{index}.npz"), str(tmp_path / "ckpt")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[-3000:]
    expected = _weights(reference)
    for index in range(2):
        got = np.load(tmp_path / f"w{index}.npz")
        for i, w in enumerate(expected):
            np.testing.assert_allclose(got[f"arr_{i}"], w, atol=2e-6)
    # Only the chief's checkpoints remain.
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir() if not p.name.startswith("ckpt-")) == ["checkpoint"]

"""One worker of the two-process MultiWorkerMirroredStrategy test.

Usage: python multiworker_job.py TF_CONFIG_JSON START_WEIGHTS OUT_NPZ CKPT_DIR
Trains 2 steps from START_WEIGHTS on the shared test batches and writes the
resulting weights to OUT_NPZ.
"""
import os
import sys

os.environ["TF_CONFIG"] = sys.argv[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import gpt_keras as gk  # noqa: E402
from gpt_keras.train import TrainSettings, default_strategy, pretrain  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from multiworker_data import SETTINGS, batches, config  # noqa: E402

strategy = default_strategy()
assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
start = gk.GPTBackbone(**config().to_dict())
start.load_weights(sys.argv[2])
model, _ = pretrain(start, batches(), TrainSettings(checkpoint_dir=sys.argv[4], **SETTINGS), strategy=strategy)
np.savez(sys.argv[3], *[w.numpy() for w in model.backbone.weights])

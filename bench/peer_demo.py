"""A same-size keras-hub peer of the demo, trained on the demo run's own data.

The peer is the naive recipe a keras-hub user would write: keras-hub's
`TokenAndPositionEmbedding` + `TransformerDecoder` blocks (GPT-2's pre-LN
order, a final LayerNorm) + a tied `ReversibleEmbedding` head, plain Adam with
warmup and cosine decay, no dropout while pre-training. It pre-trains over
the BPE vocabulary only, and the special-token rows are appended fresh for
fine-tuning, as the library does (`finetuning_peer`). Its sizes (layers,
width, heads, MLP, vocabulary, context) are the demo model's, and it reads
the demo run's records: the same BPE tokens, the same pre-training windows,
the same Rotten Tomatoes train/validation/test split. So the two rows differ
in the model code and the recipe only.

Fine-tuning follows the demo's `finetune` section (epochs, warmup, lambda,
batch size, best epoch on validation) at `--lr`, from the pre-trained peer
and from scratch. Test accuracy with its 95% interval is printed per variant.

    python pipelines/run.py                    # the demo, first (its records)
    python bench/peer_demo.py [--work_dir runs/demo] [--steps 1000] [--lr 1e-4]

Needs keras-hub (the `[parity]` extra).
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import time
from typing import Any, Callable

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from gpt_keras import data as gk_data  # noqa: E402
from gpt_keras.metrics import wilson_interval  # noqa: E402
from gpt_keras.model import append_special_rows  # noqa: E402
from pipelines.config.loading import load_config  # noqa: E402

N_SPECIAL = 3  # _start_, _delimiter_, _classify_


def build_peer(config, n_vocab: int) -> tuple[keras.Model, keras.Model]:
    """(language model, hidden-state model) sharing one keras-hub stack."""
    ids = keras.Input((None,), dtype="int32")
    mask = keras.Input((None,), dtype="int32")
    embed = keras_hub.layers.ReversibleEmbedding(n_vocab, config.n_embd, name="token_embedding")
    positions = keras_hub.layers.PositionEmbedding(config.n_ctx, name="position_embedding")
    x = embed(ids)
    x = x + positions(x)
    for i in range(config.n_layer):
        x = keras_hub.layers.TransformerDecoder(config.n_inner, config.n_head, dropout=0.1, activation="gelu",
                                                normalize_first=True, name=f"block_{i}")(
            x, decoder_padding_mask=mask)
    hidden = keras.layers.LayerNormalization(epsilon=1e-5, name="ln_f")(x)
    body = keras.Model([ids, mask], hidden)
    return keras.Model([ids, mask], embed(hidden, reverse=True)), body


def finetuning_peer(config, n_bpe: int, seed: int,
                    pretrain: Callable[[keras.Model], Any] | None = None) -> tuple[keras.Model, keras.Model]:
    """(language model, hidden-state model) that fine-tuning starts from.

    The peer is built over the `n_bpe` BPE tokens only, and `pretrain(lm)`
    (None: from scratch) trains it so. The special-token rows are never a
    pre-training target: in its softmax plain Adam only pushes them (issue 22:
    to 3x a BPE row's norm in 400 steps of a tiny model, still growing). So
    they are appended afterwards, drawn N(0, initializer_range) from `seed` by
    the library's own `append_special_rows`; every other weight is copied.
    """
    lm, _ = build_peer(config, n_bpe)
    if pretrain is not None:
        pretrain(lm)
    tuned, body = build_peer(config, n_bpe + N_SPECIAL)
    token_embeddings = tuned.get_layer("token_embedding").embeddings
    for target, source in zip(tuned.weights, lm.weights):
        value = keras.ops.convert_to_numpy(source)
        if target is token_embeddings:
            value = append_special_rows(value, N_SPECIAL, config.initializer_range, seed)
        target.assign(value)
    return tuned, body


def lm_loss(logits, ids, mask):
    valid = tf.cast(mask[:, :-1] * mask[:, 1:], tf.float32)
    losses = keras.losses.sparse_categorical_crossentropy(ids[:, 1:], logits[:, :-1], from_logits=True)
    return tf.reduce_sum(losses * valid) / tf.maximum(tf.reduce_sum(valid), 1.0)


def schedule(lr: float, warmup: int, total: int):
    return keras.optimizers.schedules.CosineDecay(0.0, max(total - warmup, 1), warmup_target=lr,
                                                  warmup_steps=warmup)


def pretrain(lm, corpus_dir: str, steps: int, batch: int, lr: float, warmup: int) -> float:
    data = gk_data.pretrain_dataset(corpus_dir, "train", batch, shuffle=True, seed=0, drop_remainder=True,
                                    repeat=True)
    optimizer = keras.optimizers.Adam(schedule(lr, warmup, steps), global_clipnorm=1.0)

    @tf.function(jit_compile=True)
    def step(x):
        with tf.GradientTape() as tape:  # training=False: no dropout while pre-training (the peer's recipe)
            loss = lm_loss(lm([x["token_ids"], x["padding_mask"]], training=False), x["token_ids"],
                           x["padding_mask"])
        grads = tape.gradient(loss, lm.trainable_variables)
        optimizer.apply(grads, lm.trainable_variables)
        return loss

    start, loss = time.time(), float("nan")
    for i, x in enumerate(data.take(steps)):
        loss = float(step(x))
        if (i + 1) % 100 == 0:
            print(f"  pre-training step {i + 1}/{steps}: loss {loss:.3f} ({time.time() - start:.0f}s)", flush=True)
    print(f"peer pre-training: {steps} steps, final loss {loss:.3f}, {time.time() - start:.0f}s")
    return loss


def finetune(lm, body, task_dir: str, spec, lr: float, seed: int) -> dict:
    """The classifier reads the last real token's hidden state; L2 + lambda L1."""
    metadata = gk_data.load_metadata(task_dir)
    n_labels = len(metadata.label_names)
    head = keras.layers.Dense(n_labels, kernel_initializer=keras.initializers.RandomNormal(stddev=0.02))
    dropout = keras.layers.Dropout(0.1)
    train = gk_data.task_dataset(task_dir, "train", spec.batch_size, shuffle=True, seed=seed)
    steps_per_epoch = math.ceil(metadata.splits["train"].records / spec.batch_size)
    epochs = max(int(spec.epochs), math.ceil(spec.min_steps / steps_per_epoch))
    total = steps_per_epoch * epochs
    warmup = int(spec.warmup * total) if spec.warmup < 1 else int(spec.warmup)
    optimizer = keras.optimizers.Adam(keras.optimizers.schedules.PolynomialDecay(lr, total, 0.0)
                                      if not warmup else schedule(lr, warmup, total), global_clipnorm=1.0)

    def forward(x, training):
        ids, mask = x["token_ids"][:, 0], x["padding_mask"][:, 0]
        hidden = body([ids, mask], training=training)
        last = tf.reduce_sum(mask, axis=1) - 1
        return head(dropout(tf.gather(hidden, last, batch_dims=1), training=training)), ids, mask, hidden

    head.build((None, body.output.shape[-1]))
    variables = lm.trainable_variables + head.trainable_variables

    @tf.function(reduce_retracing=True)  # batches vary in length
    def step(x, y):
        with tf.GradientTape() as tape:
            logits, ids, mask, hidden = forward(x, True)
            task = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
            loss = task + spec.lm_weight * lm_loss(lm([ids, mask], training=True), ids, mask)
        optimizer.apply(tape.gradient(loss, variables), variables)

    def accuracy(split):
        hits = [np.argmax(forward(x, False)[0].numpy(), -1) == y.numpy()
                for x, y in gk_data.task_dataset(task_dir, split, 128)]
        return float(np.mean(np.concatenate(hits))), int(sum(len(h) for h in hits))

    best = (-1.0, None)
    for epoch in range(epochs):
        for x, y in train.take(steps_per_epoch):
            step(x, y)
        val, _ = accuracy("validation")
        print(f"  epoch {epoch + 1}/{epochs}: validation accuracy {val:.4f}", flush=True)
        if val > best[0]:
            best = (val, [v.numpy() for v in variables])
    for v, value in zip(variables, best[1]):
        v.assign(value)
    test, n = accuracy("test")
    return {"validation_accuracy": best[0], "test_accuracy": test, "test_examples": n,
            "accuracy_ci95": list(wilson_interval(round(test * n), n))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work_dir", default="runs/demo", help="a finished demo run (its records are read)")
    parser.add_argument("--config", default="demo", help="the demo's config (sizes, fine-tuning section)")
    parser.add_argument("--steps", type=int, default=0, help="pre-training steps (0: the config's max_steps)")
    parser.add_argument("--pretrain_lr", type=float, default=1e-3)
    parser.add_argument("--lr", type=float, default=0.0, help="fine-tuning lr (0: the config's first)")
    args = parser.parse_args()
    config = load_config(args.config)
    manifest = json.load(open(os.path.join(args.work_dir, "manifest.json")))["stages"]
    corpus_dir = manifest["corpus"]["outputs"]["corpus_dir"]
    task = config.preprocess.tasks[0].name
    task_dir = manifest[f"records/{task}"]["outputs"]["task_dir"]
    n_bpe = gk_data.load_metadata(task_dir).vocab.n_vocab
    model_config = config.model.gpt_config(vocab_size=n_bpe)
    spec = config.finetune
    lr = args.lr or spec.learning_rates[0]
    steps = args.steps or config.pretrain.max_steps
    pretraining = functools.partial(pretrain, corpus_dir=corpus_dir, steps=steps, batch=config.pretrain.batch_size,
                                    lr=args.pretrain_lr, warmup=int(config.pretrain.warmup))
    print(f"CPU: {platform.processor() or platform.machine()}; load average {os.getloadavg()}")
    results = {}
    for variant in ("pretrained", "scratch"):
        keras.utils.set_random_seed(config.seed)
        start = time.time()
        lm, body = finetuning_peer(model_config, n_bpe, config.seed,
                                   pretraining if variant == "pretrained" else None)
        results[variant] = finetune(lm, body, task_dir, spec, lr, config.seed)
        results[variant]["seconds"] = round(time.time() - start)
        print(f"peer {variant}: {results[variant]}", flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""GPT-1 models: the backbone, the language model, and the task model.

Reads top to bottom like the paper:
  h_0 = U W_e + W_p;  h_l = block(h_{l-1});  P(u) = softmax(h_n W_e^T)   (eq. 2)
  P(y | x) = softmax(h_l^m W_y)                                         (eq. 3)
  L3 = L2 + lambda * L1                                                 (eq. 5)

Padding is id 0 plus a mask (never an extra embedding row); positions come
from the mask so that left padding does not shift them.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import keras
import numpy as np
from keras import ops

from gpt_keras import releases, saving, step
from gpt_keras import transfer as transfer_modes
from gpt_keras.config import GPTConfig
from gpt_keras.layers import DecoderBlock, TokenAndPositionEmbedding
from gpt_keras.losses import lm_head_loss_sum
from gpt_keras.tasks import TaskFamily


def position_ids(padding_mask):
    """0-based position of each real token; pads get the position before them (clipped at 0)."""
    mask = ops.cast(padding_mask, "int32")
    return ops.maximum(ops.cumsum(mask, axis=-1) - 1, 0)


def attention_mask(padding_mask):
    """[batch, query, key] boolean mask: causal and excluding padded keys."""
    mask = ops.cast(padding_mask, "bool")
    length = ops.shape(mask)[-1]
    causal = ops.tril(ops.ones((length, length), dtype="bool"))
    return ops.logical_and(causal[None, :, :], mask[:, None, :])


@keras.saving.register_keras_serializable(package="gpt_keras")
class GPTBackbone(keras.Model):
    """Token ids + padding mask in, final hidden states out (GPT-1: no final
    LayerNorm; with `normalize_first`, GPT-2's pre-LN blocks and `ln_f`).

    Constructor arguments are the `GPTConfig` fields; use
    `GPTBackbone.from_preset("gpt1")` or `GPTBackbone(**config.to_dict())`.
    """

    def __init__(self, vocab_size: int, n_special: int, n_ctx: int, n_layer: int, n_embd: int,
                 n_head: int, n_inner: int, embd_pdrop: float = 0.1, attn_pdrop: float = 0.1,
                 resid_pdrop: float = 0.1, clf_pdrop: float = 0.1, layer_norm_epsilon: float = 1e-5,
                 initializer_range: float = 0.02, normalize_first: bool = False, **kwargs):
        arguments = locals()  # the signature is the GPTConfig fields (tests/test_model.py checks it)
        config = GPTConfig(**{f.name: arguments[f.name] for f in dataclasses.fields(GPTConfig)})
        super().__init__(**kwargs)
        self.config = config
        self.embed = TokenAndPositionEmbedding(config.total_vocab_size, n_ctx, n_embd, embd_pdrop,
                                               initializer_range, name="embed")
        self.blocks = [DecoderBlock(n_embd, n_head, n_inner, attn_pdrop, resid_pdrop, layer_norm_epsilon,
                                    initializer_range, normalize_first, name=f"h{i}") for i in range(n_layer)]
        # Pre-LN leaves the residual stream unnormalised: a final LayerNorm (GPT-2's ln_f).
        self.ln_f = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="ln_f") if normalize_first \
            else None
        # Build eagerly so that weights exist before loading/transfer.
        self.embed.build()
        for block in self.blocks:
            block.build((None, None, n_embd))
        if self.ln_f is not None:
            self.ln_f.build((None, None, n_embd))
        self.built = True

    def call(self, inputs, training=None, return_all_layers=False):
        """Final hidden states [batch, len, n_embd]; with `return_all_layers`,
        the list of every block's output (the last is the final state; pre-LN:
        each through `ln_f`, so that all are on one scale)."""
        token_ids = ops.convert_to_tensor(inputs["token_ids"], "int32")
        padding_mask = ops.convert_to_tensor(inputs["padding_mask"], "int32")
        x = self.embed(token_ids, position_ids(padding_mask), training=training)
        mask = attention_mask(padding_mask)
        outputs = []
        for block in self.blocks:
            x = block(x, attention_mask=mask, training=training)
            outputs.append(x)
        if not return_all_layers:
            return self.final_norm(x)
        return [self.final_norm(h) for h in outputs]

    def final_norm(self, hidden):
        """`ln_f(hidden)` for a pre-LN backbone; GPT-1 (post-LN) has none."""
        return hidden if self.ln_f is None else self.ln_f(hidden)

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> "GPTBackbone":
        """A backbone from a preset name (random weights; `overrides` change
        config fields) or from a model directory (with its weights), as
        keras-hub's `from_preset` accepts a local preset directory."""
        directory = releases.resolve_preset(preset)
        if directory is None:
            return cls(**GPTConfig.from_preset(preset, **overrides).to_dict())
        _no_overrides(preset, overrides)
        return saving.load_backbone(directory)

    def save_to_preset(self, directory: str, tokenizer: Any = None) -> None:
        """Saves weights, config and tokenizer as a model directory (`gpt_keras.saving`)."""
        saving.save_model(self, directory, tokenizer)

    def call_with_cache(self, token_ids, positions, mask, caches: tuple, cache_update_index):
        """Incremental forward pass for generation.

        Args:
          token_ids: [batch, new] ids of the new positions.
          positions: [batch, new] their position ids.
          mask: [batch, new, max_len] which cache slots each new position may see.
          caches: one `(keys, values)` pair per layer, each
            [batch, n_head, max_len, head_dim] (a tuple, not one stacked
            tensor: re-stacking would copy the whole cache in every decode step).
          cache_update_index: where the new keys/values are written.
        Returns:
          (hidden [batch, new, n_embd], updated caches).
        """
        x = self.embed(token_ids, positions)
        new_caches = []
        for block, cache in zip(self.blocks, caches):
            x, cache = block(x, attention_mask=mask, cache=cache, cache_update_index=cache_update_index)
            new_caches.append(cache)
        return self.final_norm(x), tuple(new_caches)

    def empty_cache(self, batch_size, max_length) -> tuple:
        """Zero per-layer caches for `call_with_cache`."""
        c = self.config
        shape = (batch_size, c.n_head, max_length, c.n_embd // c.n_head)
        dtype = self.embed.compute_dtype  # a mixed-precision model caches in its compute dtype
        return tuple((ops.zeros(shape, dtype=dtype), ops.zeros(shape, dtype=dtype)) for _ in range(c.n_layer))

    def get_config(self):
        """The `GPTConfig` fields (what `config.json` records) plus Keras' name and trainable."""
        return {"name": self.name, "trainable": self.trainable, **self.config.to_dict()}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _no_overrides(preset: Any, overrides: dict) -> None:
    if overrides:
        raise ValueError(f"{preset} is a saved model directory: its sizes are fixed, so config overrides "
                         f"{sorted(overrides)} cannot apply; build from a preset name to change them")


def with_special_tokens(backbone: GPTBackbone, seed: int | None = None) -> GPTBackbone:
    """A backbone with the `_start_`/`_delimiter_`/`_classify_` rows.

    Returned as is when it has them; otherwise a copy with every weight
    transferred and three new rows drawn from N(0, initializer_range) with
    `seed` (`append_special_rows`), as the paper's fine-tuning adds them.
    """
    if backbone.config.n_special:
        return backbone
    config = backbone.config.replace(n_special=3)
    new = GPTBackbone(**config.to_dict(), name=backbone.name)
    for target, source in zip(new.weights, backbone.weights):
        if target.path.endswith("token_embeddings"):
            target.assign(append_special_rows(ops.convert_to_numpy(source), config.n_special,
                                              config.initializer_range, seed))
        else:
            target.assign(source)
    return new


def append_special_rows(embeddings: np.ndarray, n_special: int, stddev: float,
                        seed: int | None = None) -> np.ndarray:
    """`embeddings` [rows, width] with `n_special` rows appended, drawn from
    N(0, stddev): how fine-tuning adds the special tokens to a model that was
    pre-trained without them (`with_special_tokens`; the keras-hub peer of
    `bench/peer_demo.py`). `seed` None draws from NumPy's global generator,
    which `keras.utils.set_random_seed` seeds."""
    rng = np.random if seed is None else np.random.default_rng(seed)
    extra = rng.normal(0.0, stddev, (n_special, embeddings.shape[1])).astype(embeddings.dtype)
    return np.concatenate([embeddings, extra], axis=0)


class _StepModel(keras.Model):
    """Routes `fit`/`evaluate` through `gpt_keras.step`, the one home of the step logic."""

    def loss_terms(self, data, training: bool) -> tuple[step.LossTerms, step.LossTerms]:
        """({name: (loss_sum, count)}, {metric: (sum, count)}) for one batch."""
        raise NotImplementedError

    def train_step(self, data):
        return step.train_step(self, data)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras (TF backend, under a strategy) takes the first batch of every
        # fit/evaluate and averages it across replicas, only to build layers and
        # compiled metrics. That fails when a batch splits unevenly (e.g. 13 rows
        # on 2 replicas: "Inputs to operation AddN ... must have the same size").
        # These models are built when constructed and `train._fit` builds the
        # optimizer, so there is nothing to build.
        if self.built and (self.optimizer is None or self.optimizer.built):
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def test_step(self, data):
        return step.test_step(self, data)

    @property
    def metrics(self):
        return step.metric_trackers(self)


@keras.saving.register_keras_serializable(package="gpt_keras")
class GPTLMModel(_StepModel):
    """Language model: backbone + tied head. `call` returns logits over the vocabulary.

    Its loss (L1, eq. 1) is the shifted next-token cross-entropy over pairs of
    real tokens, normalised by the global number of such pairs.
    """

    def __init__(self, backbone: GPTBackbone, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        step.create_metric_trackers(self)
        self.built = True  # all weights exist already

    def call(self, inputs, training=None):
        hidden = self.backbone(_model_inputs(inputs), training=training)
        return self.backbone.embed.attend(hidden)

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> "GPTLMModel":
        """The language model on `GPTBackbone.from_preset(preset, **overrides)`."""
        return cls(GPTBackbone.from_preset(preset, **overrides))

    def save_to_preset(self, directory: str, tokenizer: Any = None) -> None:
        """Saves the backbone (the LM head is tied to it) as a model directory."""
        self.backbone.save_to_preset(directory, tokenizer)

    def loss_terms(self, data, training):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        hidden = self.backbone(_model_inputs(x), training=training)
        return {"lm": lm_head_loss_sum(self.backbone.embed, hidden, x["token_ids"], x["padding_mask"])}, {}

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "backbone": keras.saving.serialize_keras_object(self.backbone)}

    @classmethod
    def from_config(cls, config):
        return cls(**_with_backbone(config))


def _with_backbone(config: dict) -> dict:
    """`config` with its backbone built: a serialized one is deserialized, a
    built one (what `gpt_keras.saving` and `transfer.merged` pass) kept, as
    keras-hub's `Task.from_config` does."""
    config = dict(config)
    if isinstance(config.get("backbone"), dict):
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
    return config


def _model_inputs(inputs) -> dict:
    return {"token_ids": inputs["token_ids"], "padding_mask": inputs["padding_mask"]}


@keras.saving.register_keras_serializable(package="gpt_keras")
class GPTTaskModel(_StepModel):
    """Fine-tuning model for one task family (paper section 3.3).

    Inputs are `token_ids`/`padding_mask` of shape [batch, n_sequences, length],
    built by `gpt_keras.tasks.build_inputs`. The head reads the hidden state at
    the `_classify_` token of each sequence (similarity: the two orders are
    added; multiple choice: one score per candidate, softmax over them).

    `call` returns the head output: class logits [batch, n_labels], choice
    logits [batch, n_choices], or the regression score [batch].
    """

    def __init__(self, backbone: GPTBackbone, family: str, num_labels: int | None = None,
                 num_choices: int | None = None, lm_weight: float = 0.5,
                 label_names: Sequence[str] | None = None, transfer: str = "full",
                 lora_rank: int = transfer_modes.DEFAULT_LORA_RANK, **kwargs):
        super().__init__(**kwargs)
        self.transfer = transfer_modes.check_mode(transfer, lora_rank)
        self.lora_rank = int(lora_rank)
        self.family = TaskFamily.parse(family)
        self.num_labels = self.family.validate_num_labels(num_labels)
        self.num_choices = self.family.validate_num_choices(num_choices)
        self.label_names = self.family.validate_label_names(label_names, self.num_labels)
        if lm_weight < 0:
            raise ValueError(f"lm_weight (lambda) must be >= 0, got {lm_weight}")
        self.lm_weight = float(lm_weight)
        self.backbone = with_special_tokens(backbone)
        config = self.backbone.config
        self.classify_id = config.classify_id
        self.clf_dropout = keras.layers.Dropout(config.clf_pdrop)
        self.head = keras.layers.Dense(
            self.family.head_units(self.num_labels),
            kernel_initializer=keras.initializers.RandomNormal(stddev=config.initializer_range), name="clf")
        self.head.build((None, config.n_embd))
        if self.transfer == "layer_mix":  # softmax weights over the blocks, uniform at first
            self.layer_mix = self.add_weight(shape=(config.n_layer,), initializer="zeros", name="layer_mix")
        transfer_modes.configure(self)
        mask = transfer_modes.special_row_mask(self)
        self._row_mask = None if mask is None else ops.convert_to_tensor(mask)
        step.create_metric_trackers(self)
        self.built = True  # all weights exist already

    def mask_gradients(self, grads: list) -> list:
        """In `lora` and `layer_mix` only the special-token rows of the token embedding learn."""
        if self._row_mask is None:
            return grads
        token_embeddings = self.backbone.embed.token_embeddings
        return [g * ops.cast(self._row_mask, g.dtype) if v is token_embeddings else g
                for g, v in zip(grads, self.trainable_variables)]

    def _forward(self, inputs, training):
        token_ids = ops.convert_to_tensor(inputs["token_ids"], "int32")
        padding_mask = ops.convert_to_tensor(inputs["padding_mask"], "int32")
        self.family.check_input_rank(token_ids, self.num_choices)
        n_seq, length = ops.shape(token_ids)[1], ops.shape(token_ids)[2]
        flat_ids = ops.reshape(token_ids, (-1, length))
        flat_mask = ops.reshape(padding_mask, (-1, length))
        layers = self.backbone({"token_ids": flat_ids, "padding_mask": flat_mask},
                               training=transfer_modes.backbone_training(self.transfer, training),
                               return_all_layers=True)
        hidden = layers[-1]
        # The extract token (`_classify_`) marks where the head reads.
        extract = ops.argmax(ops.cast(ops.equal(flat_ids, self.classify_id), "int32"), axis=-1)
        if self.transfer == "layer_mix":
            weights = ops.softmax(self.layer_mix)
            states = ops.stack([ops.take_along_axis(h, extract[:, None, None], axis=1)[:, 0] for h in layers])
            h_clf = ops.einsum("l,lbd->bd", ops.cast(weights, states.dtype), states)
        else:
            h_clf = ops.take_along_axis(hidden, extract[:, None, None], axis=1)[:, 0]
        h_clf = ops.reshape(h_clf, (-1, n_seq, ops.shape(hidden)[-1]))
        head_out = self.family.head_output(self.head, self.clf_dropout(h_clf, training=training))
        return head_out, hidden, flat_ids, flat_mask

    def call(self, inputs, training=None):
        return self._forward(inputs, training)[0]

    def loss_terms(self, data, training):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        if y is None:
            y = x["label"]
        head_out, hidden, flat_ids, flat_mask = self._forward(x, training)
        terms = {"task": self.family.loss_sum(head_out, y)}
        if self.lm_weight > 0:
            terms["lm"] = lm_head_loss_sum(self.backbone.embed, hidden, flat_ids, flat_mask)
        return terms, self.family.metric_sums(head_out, y)

    def loss_weights(self) -> dict[str, float]:
        return {"task": 1.0, "lm": self.lm_weight}

    @classmethod
    def from_preset(cls, preset: str, family: str | None = None, num_labels: int | None = None,
                    num_choices: int | None = None, lm_weight: float | None = None,
                    label_names: Sequence[str] | None = None, **overrides: Any) -> "GPTTaskModel":
        """A task model from a fine-tuned model directory (backbone and head as
        saved), or a new head (`family`, `num_labels`/`num_choices`) on a
        pre-trained directory's backbone or on a preset (random weights)."""
        head = {"family": family, "num_labels": num_labels, "num_choices": num_choices,
                "lm_weight": lm_weight, "label_names": label_names}
        given = {k: v for k, v in head.items() if v is not None}
        directory = releases.resolve_preset(preset)
        if directory is not None and saving.is_fine_tuned(directory):
            _no_overrides(preset, overrides)
            model = saving.load_task_model(directory)
            saved = model.task_section()
            clash = {k: (v, saved[k]) for k, v in given.items()
                     if k != "lm_weight" and (list(v) if k == "label_names" else v) != saved[k]}
            if clash:
                raise ValueError(f"{preset} is a fine-tuned {saved['family']} model; arguments that contradict its "
                                 f"task section: {', '.join(f'{k}={a!r} (saved: {b!r})' for k, (a, b) in clash.items())}")
            model.lm_weight = float(given.get("lm_weight", model.lm_weight))
            return model
        if family is None:
            raise ValueError(f"{preset} has no task head: give family= (and num_labels= or num_choices=)")
        backbone = GPTBackbone.from_preset(preset, **overrides)
        return cls(backbone, **{"lm_weight": 0.5, **given})

    def save_to_preset(self, directory: str, tokenizer: Any = None) -> None:
        """Saves backbone, head, task section and tokenizer as a model directory
        (a LoRA model merged first: it reloads as plain, `transfer: full`)."""
        saving.save_model(self, directory, tokenizer)

    def task_section(self) -> dict[str, Any]:
        """What `task.json` records: enough to rebuild the head and name its outputs
        (`from_config` of these and the backbone)."""
        section = {"family": self.family.value, "num_labels": self.num_labels, "num_choices": self.num_choices,
                   "label_names": self.label_names, "lm_weight": self.lm_weight, "transfer": self.transfer}
        if self.transfer == "lora":  # an unmerged model only: `saving.save_model` merges first
            section["lora_rank"] = self.lora_rank
        return section

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "backbone": keras.saving.serialize_keras_object(self.backbone),
                **self.task_section(), "lora_rank": self.lora_rank}

    @classmethod
    def from_config(cls, config):
        return cls(**_with_backbone(config))

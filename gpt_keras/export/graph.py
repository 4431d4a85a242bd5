"""Graph pieces shared by the export modules: bounded text encoding and
id -> text decoding, in core TF ops only (what the stock TF Serving binary has)."""
from __future__ import annotations

import tensorflow as tf

from gpt_keras.config import GPTConfig
from gpt_keras.tokenizer import GPTTokenizer
from gpt_keras.tokenizer.vocab_io import EOW

# Texts are cut to this many bytes per context position before tokenizing.
# The transform keeps at most n_ctx tokens of a text's prefix, and a BPE token
# of English averages ~5 bytes, so the cut only matters for texts averaging
# more than this many bytes (mostly whitespace or punctuation) per token. It
# bounds the tokenizer's work on huge inputs, also under the real TF Serving.
BYTES_PER_POSITION = 64


def check_tokenizer(tokenizer: GPTTokenizer, config: GPTConfig) -> None:
    """Raise if the tokenizer's vocabulary does not fit the model's."""
    if tokenizer.n_vocab != config.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.n_vocab} BPE tokens but the model's vocab_size is "
                         f"{config.vocab_size}; export the model with the tokenizer it was trained with")


def default_max_text_bytes(config: GPTConfig) -> int:
    return BYTES_PER_POSITION * config.n_ctx


def cut_text(texts: tf.Tensor, max_bytes: int) -> tf.Tensor:
    """The first `max_bytes` bytes of each string (a cut UTF-8 character
    becomes U+FFFD at the very end, past what the model reads)."""
    return tf.strings.substr(texts, 0, max_bytes, unit="BYTE")


def encode(tokenizer_layer, texts: tf.Tensor, max_bytes: int) -> tf.RaggedTensor:
    """[batch] strings -> ragged [batch, (ids)] with the project's tokenizer."""
    return tokenizer_layer(cut_text(tf.reshape(texts, [-1]), max_bytes))


class Decoder(tf.Module):
    """In-graph `GPTTokenizer.decode` (skip_special_tokens=True): ids -> text.

    Tokens are joined, `</w>` becomes a space and one trailing space is
    dropped, exactly as the Python method (tests compare the two)."""

    def __init__(self, tokenizer: GPTTokenizer):
        super().__init__(name="decoder")
        # Specials decode to "" (skipped); the table is a graph constant.
        self._pieces = tf.constant([t.replace(EOW, " ") for t in tokenizer.decoder] + [""] * 3)

    def __call__(self, ids: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
        """[batch, n] int ids, [batch] valid lengths -> [batch] strings."""
        ids = tf.clip_by_value(ids, 0, tf.shape(self._pieces)[0] - 1)
        ragged = tf.RaggedTensor.from_tensor(ids, lengths=lengths)
        text = tf.strings.reduce_join(tf.gather(self._pieces, ragged), axis=-1)
        return tf.strings.regex_replace(text, r" \z", "")  # \z: the very end (RE2)

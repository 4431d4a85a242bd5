"""GPT-1 BPE tokenizer: train, save/load (original + HF formats), encode and
decode in Python and as TF graph ops. See docs/tokenizer.md.

    from gpt_keras.tokenizer import GPTTokenizer, train_bpe, count_words
    tok = train_bpe(count_words(texts), num_merges=40000)
    tok.save("vocab/")                       # encoder_bpe_40000.json + vocab_40000.bpe
    tok = GPTTokenizer.load("vocab/")
    ids = tok.encode("Hello world!")          # Python
    ragged = tok.tf_encode(tf.constant(["Hello world!"]))   # TF graph op
"""
from gpt_keras.config import SPECIAL_TOKENS
from gpt_keras.tokenizer.core import UNK_TOKEN, GPTTokenizer, count_words, train_bpe
from gpt_keras.tokenizer.text import MODES, normalize, pretokenize

__all__ = ["SPECIAL_TOKENS", "UNK_TOKEN", "MODES", "GPTTokenizer", "train_bpe", "count_words",
           "normalize", "pretokenize"]

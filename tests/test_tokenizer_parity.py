"""Mode "hf" against HF transformers' OpenAIGPTTokenizer on the same files (the
[parity] extra): ~1000 IMDB reviews plus varied text, in Python and in graph."""
import pytest
import tensorflow as tf

from gpt_keras.tokenizer import GPTTokenizer, count_words, train_bpe
from test_tokenizer import VARIED, imdb_texts

pytestmark = pytest.mark.parity

# HF matches its added token "<unk>" in raw text before normalization; we
# treat that text as ordinary characters (documented in docs/tokenizer.md).
PARITY_VARIED = [t for t in VARIED if "<unk>" not in t]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tok = train_bpe(count_words(imdb_texts(1500)), num_merges=2000)
    directory = str(tmp_path_factory.mktemp("vocab_hf"))
    tok.save(directory, format="hf")
    return directory


def test_ids_match_openai_gpt_tokenizer(files):
    transformers = pytest.importorskip("transformers")
    hf = transformers.OpenAIGPTTokenizer.from_pretrained(files)
    ours = GPTTokenizer.load(files)
    texts = imdb_texts(1000, offset=5000) + PARITY_VARIED + [t.upper() for t in PARITY_VARIED]
    expected = [hf(t, add_special_tokens=False)["input_ids"] for t in texts]
    python_ids = ours.encode_batch(texts)
    mismatches = [i for i, (a, b) in enumerate(zip(python_ids, expected)) if a != b]
    assert not mismatches, (texts[mismatches[0]][:300], python_ids[mismatches[0]][:40], expected[mismatches[0]][:40])
    assert ours.tf_encode(tf.constant(texts)).to_list() == expected
    assert len(hf) == ours.n_vocab


def test_unicode_tables_match_installed_tokenizers():
    """The shipped per-code-point tables equal a fresh probe of HF's Rust
    BertNormalizer/BertPreTokenizer (fails if a tokenizers release changes them;
    then regenerate with `python -m gpt_keras.tokenizer._unicode_gen`)."""
    pytest.importorskip("tokenizers")
    from gpt_keras.tokenizer import _unicode_data, _unicode_gen

    for name, value in _unicode_gen.hf_tables().items():
        assert getattr(_unicode_data, name) == value, name

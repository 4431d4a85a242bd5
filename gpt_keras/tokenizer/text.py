"""Normalization and pre-tokenization: text -> words, in Python and in TF.

Both encoders run the *same* step list so that they cannot drift apart:

1. invalid UTF-8 -> U+FFFD (Python `bytes.decode(errors="replace")`, TF
   `unicode_transcode(errors="replace")`; both replace each maximal invalid
   subsequence, so they agree byte for byte);
2. ASCII lowercasing (`bytes.lower()` == `tf.strings.lower` without encoding);
3. an ordered list of regex replacements (`re.sub` == `tf.strings.regex_replace`,
   RE2). The patterns avoid everything the two engines disagree on: no
   `\\w \\s \\b \\d`, no look-around, no back-references, no empty matches;
   Unicode classes are spelled out as explicit ranges from `_unicode_data`;
4. split on spaces -> *raw words* (the word-cache keys of the graph encoder);
5. a per-character map (Unicode lowercasing, HF accent stripping) applied to
   each raw word -> *normalized words*, the input of BPE. ASCII words are
   already normalized after step 2, which keeps the common path cheap.

Mode "hf" reproduces HF `OpenAIGPTTokenizer` (BertNormalizer(lowercase=True)
+ BertPreTokenizer): remove control/format/private-use chars and combining
marks, map whitespace to spaces, isolate punctuation and CJK ideographs.
Mode "original" follows openai/finetune-transformer-lm `text_standardize`
and then approximates spaCy's English tokenizer with regex rules (see
docs/tokenizer.md for where that differs).
"""
from __future__ import annotations

import dataclasses
import functools
import re
from typing import Callable, Mapping

from gpt_keras.tokenizer import _unicode_data as U

MODES = ("hf", "original")
PAD = None  # pseudo-step: surround the text with one space on each side (gives rules context chars)


def _parse_ranges(spec: str) -> list[tuple[int, int]]:
    out = []
    for part in spec.split():
        lo, _, hi = part.partition("-")
        out.append((int(lo, 16), int(hi or lo, 16)))
    return out


def _parse_map(spec: str) -> dict[str, str]:
    out = {}
    for part in spec.split():
        key, _, value = part.partition(":")
        out[chr(int(key, 16))] = "".join(chr(int(v, 16)) for v in value.split("."))
    return out


def _cls_char(cp: int) -> str:
    # \xhh is understood by both engines; above U+00FF a literal char is safe
    # (no regex metacharacter lives there) and avoids \u vs \x{} syntax.
    return f"\\x{cp:02x}" if cp < 0x100 else chr(cp)


def char_class(*specs: str, negate: bool = False, exclude: str = "", limit: int = 0x10FFFF) -> str:
    """A `[...]` class valid for both Python `re` and RE2 from range specs,
    minus the characters in `exclude`, restricted to code points <= `limit`.

    The restriction serves Python only: on a text whose characters are all
    <= limit, the restricted class matches exactly what the full one does, and
    Python's `re` is much faster on classes without astral ranges."""
    ranges = sorted((lo, min(hi, limit)) for spec in specs for lo, hi in _parse_ranges(spec) if lo <= limit)
    for cp in map(ord, exclude):
        ranges = [piece for lo, hi in ranges
                  for piece in ((lo, min(hi, cp - 1)), (max(lo, cp + 1), hi)) if piece[0] <= piece[1]]
    if not ranges:  # cannot happen with the shipped tables (every class has ASCII members)
        raise ValueError(f"empty character class for {specs} below U+{limit:04X}")
    body = "".join(_cls_char(lo) if lo == hi else f"{_cls_char(lo)}-{_cls_char(hi)}" for lo, hi in ranges)
    return f"[{'^' if negate else ''}{body}]"


def _cps(chars: str) -> str:
    return " ".join(f"{ord(c):x}" for c in chars)


# Python runs the variant of the steps restricted to the smallest tier that
# holds every character of the text; TF always runs the full steps.
_TIERS = (0x7F, 0xFFFF, 0x10FFFF)
_ASTRAL = re.compile("[\U00010000-\U0010FFFF]")


@dataclasses.dataclass(frozen=True)
class TextRules:
    """Everything that turns text into normalized words for one mode."""

    mode: str
    build_steps: Callable[[int], tuple]  # limit -> (pattern, rewrite) pairs / PAD, in order
    keep_newlines: bool  # "\n" is a word of its own (original mode)
    char_map: Mapping[str, str]  # applied per character to non-ASCII words

    @functools.cached_property
    def steps(self) -> tuple:
        """The full steps (what the graph runs)."""
        return self.build_steps(_TIERS[-1])

    @functools.cached_property
    def compiled(self) -> dict[int, tuple]:
        """Tier limit -> steps compiled for Python `re`."""
        return {limit: tuple(PAD if s is PAD else (re.compile(s[0]), s[1]) for s in self.build_steps(limit))
                for limit in _TIERS}


def _hf_steps(limit: int) -> tuple:
    return (
        (char_class(U.HF_REMOVE, limit=limit) + "+", ""),  # BertNormalizer clean_text + strip accents (Mn)
        (char_class(U.HF_SPACE, limit=limit) + "+", " "),  # whitespace -> space
        ("(" + char_class(U.HF_ISOLATE, limit=limit) + ")", r" \1 "),  # punctuation, CJK: words of their own
    )


def _hf_rules() -> TextRules:
    cmap = _parse_map(U.HF_MAP)
    # Hangul syllables decompose algorithmically (NFD); the generator checked this.
    for s in range(11172):
        lead, vowel, tail = 0x1100 + s // 588, 0x1161 + (s % 588) // 28, 0x11A7 + s % 28
        cmap[chr(0xAC00 + s)] = chr(lead) + chr(vowel) + (chr(tail) if tail != 0x11A7 else "")
    return TextRules("hf", _hf_steps, keep_newlines=False, char_map=cmap)


def _original_steps(limit: int) -> tuple:
    space = char_class(U.PY_SPACE, limit=limit)  # Python's `\s` (the original code ran on `re`)
    space_not_nl = char_class(U.PY_SPACE, exclude="\n", limit=limit)
    word = char_class(U.PY_WORD, limit=limit)  # letters, marks, digits (Python's `\w` minus "_")
    not_word = char_class(U.PY_WORD, negate=True, limit=limit)
    return (
        # ftfy.fix_text subset the original ran first: line breaks and curly quotes.
        ("\r\n|[\r\x85\u2028\u2029]", "\n"),
        ("[\u02bc\u2018-\u201b]", "'"),
        ("[\u201c-\u201f]", '"'),
        # text_standardize(), verbatim apart from \s spelled out.
        ("[\u2014\u2013\u2015]", "-"),
        ("\u2026", "..."),
        ("\u00b4", "'"),
        (r'(-+|~+|!+|"+|;+|\?+|\++|,+|\)+|\(+|\\+|/+|\*+|\[+|\]+|\}+|\{+|\|+|_+)', r" \1 "),
        (space + "*\n" + space + "*", " \n "),
        (space_not_nl + "+", " "),
        ("^[ \n]+|[ \n]+$", ""),  # .strip(); only " " and "\n" are left as whitespace here
        # spaCy-like splitting (no spaCy): symbols, quotes, contractions, periods.
        PAD,
        ("(" + char_class(U.PY_WORD, U.PY_SPACE, _cps(".'"), negate=True, limit=limit) + ")", r" \1 "),
        ("(" + not_word + ")'", r"\1 ' "),
        ("'(" + not_word + ")", r" ' \1"),
        ("(" + word + ")(n't)", r"\1 \2"),
        ("(" + word + ")('(?:s|m|d|ll|re|ve))(" + not_word + ")", r"\1 \2\3"),
        (r"([^.])\.(" + char_class(U.PY_WORD, "2e", negate=True, limit=limit) + ")", r"\1 . \2"),
        (r"(\.\.+)", r" \1 "),
    )


def _original_rules() -> TextRules:
    return TextRules("original", _original_steps, keep_newlines=True, char_map=_parse_map(U.PY_LOWER))


@functools.lru_cache(maxsize=None)
def get_rules(mode: str) -> TextRules:
    """The (cached) rules of `mode` ("hf" or "original")."""
    if mode not in MODES:
        raise ValueError(f"unknown tokenizer mode {mode!r}; expected one of {MODES}")
    return _hf_rules() if mode == "hf" else _original_rules()


# ----------------------------------------------------------------------------- Python

_SURROGATES = re.compile("[\ud800-\udfff]")


def fix_text(text: str | bytes) -> str:
    """Step 1: bytes -> str with U+FFFD for invalid UTF-8; lone surrogates -> U+FFFD."""
    if isinstance(text, (bytes, bytearray)):
        return bytes(text).decode("utf-8", errors="replace")
    if not isinstance(text, str):
        raise TypeError(f"expected str or bytes, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = _SURROGATES.sub("\ufffd", text)
    return text


def split_words(text: str | bytes, mode: str = "hf") -> list[str]:
    """Steps 1-4: raw words (not yet per-character normalized)."""
    rules = get_rules(mode)
    text = fix_text(text).encode("utf-8").lower().decode("utf-8")  # ASCII-only lowercasing
    tier = _TIERS[0] if text.isascii() else _TIERS[2] if _ASTRAL.search(text) else _TIERS[1]
    for step in rules.compiled[tier]:
        text = f" {text} " if step is PAD else step[0].sub(step[1], text)
    return [w for w in text.split(" ") if w]


def normalize_word(word: str, mode: str = "hf") -> str:
    """Step 5: the per-character map (identity on ASCII words)."""
    if word.isascii():
        return word
    cmap = get_rules(mode).char_map
    return "".join([cmap.get(c, c) for c in word])


def pretokenize(text: str | bytes, mode: str = "hf") -> list[str]:
    """Text -> normalized words, the units BPE runs on."""
    return [normalize_word(w, mode) for w in split_words(text, mode)]


def normalize(text: str | bytes, mode: str = "hf") -> str:
    """The normalized words joined by single spaces (for inspection and docs)."""
    return " ".join(pretokenize(text, mode))


# ----------------------------------------------------------------------------- TF


def tf_fix_utf8(texts):
    """Step 1 in graph: invalid UTF-8 -> U+FFFD, like `bytes.decode(errors="replace")`.

    The ICU transcoder is the costliest op of the pipeline, so only rows with
    a byte >= 0x80 go through it (ASCII is always valid UTF-8)."""
    import tensorflow as tf

    ascii_only = tf.strings.regex_full_match(texts, "[\\x00-\\x7f]*")
    keep = tf.cast(tf.where(ascii_only)[:, 0], tf.int32)
    fix = tf.cast(tf.where(~ascii_only)[:, 0], tf.int32)
    fixed = tf.strings.unicode_transcode(tf.gather(texts, fix), "UTF-8", "UTF-8", errors="replace",
                                         replacement_char=0xFFFD)
    return tf.dynamic_stitch([keep, fix], [tf.gather(texts, keep), fixed])


def tf_split_words(texts, mode: str = "hf"):
    """Steps 1-4 in graph: 1-D string tensor -> RaggedTensor [batch, words]."""
    import tensorflow as tf

    rules = get_rules(mode)
    x = tf.strings.lower(tf_fix_utf8(texts))  # no encoding given: ASCII only, like bytes.lower()
    for step in rules.steps:
        if step is PAD:
            x = tf.strings.join([" ", x, " "])
        else:
            x = tf.strings.regex_replace(x, step[0], step[1])
    if not rules.keep_newlines:
        # Only " " is left as whitespace here, so splitting on ASCII whitespace
        # (skipping empties, in C++) equals Python's split-and-drop-empties.
        return tf.strings.split(x)
    words = tf.strings.split(x, sep=" ")
    return tf.ragged.boolean_mask(words, tf.strings.length(words) > 0)


def tf_normalize_words(words, table):
    """Step 5 in graph on a 1-D string tensor, with `table` a char -> replacement
    StaticHashTable whose default is "" (no word character maps to "")."""
    import tensorflow as tf

    chars = tf.strings.unicode_split(words, "UTF-8")
    mapped = table.lookup(chars.flat_values)
    flat = tf.where(mapped == "", chars.flat_values, mapped)
    return tf.strings.reduce_join(chars.with_flat_values(flat), axis=-1)

"""Vocabulary files: read, validate, write, fingerprint.

Two on-disk formats hold the same data (token -> id JSON + ranked merges):

* original (openai/finetune-transformer-lm): `encoder_bpe_<merges>.json` and
  `vocab_<merges>.bpe`, e.g. `encoder_bpe_40000.json` + `vocab_40000.bpe`;
* HF (`OpenAIGPTTokenizer`): `vocab.json` and `merges.txt`.

Merges files: an optional first line starting with `#version` (any value,
e.g. `#version: 0.2` or `#version 0.0`), then one `left right` pair per line
in rank order; blank lines are ignored; `\\r\\n` line ends are accepted.
Duplicate pairs keep their *last* rank, as both the original code
(`dict(zip(merges, range(...)))`) and HF do.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
from typing import Iterable

HF_VOCAB, HF_MERGES = "vocab.json", "merges.txt"
MERGES_HEADER = "#version: 0.2"
# Written beside the vocabulary by `GPTTokenizer.save`: the encoding mode and
# fingerprint travel with the files (not `tokenizer.json`: HF uses that name).
TOKENIZER_INFO = "gpt_keras_tokenizer.json"
TOKENIZER_INFO_FORMAT = "gpt_keras.tokenizer/1"
EOW = "</w>"


def _fix_hint(path: str) -> str:
    return (f"Check that '{path}' is a GPT-1 BPE vocabulary file (original: encoder_bpe_40000.json + "
            f"vocab_40000.bpe; HF: vocab.json + merges.txt), or re-create it with "
            f"train_bpe(...).save(directory).")


def _open_text(path: str, what: str) -> str:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: '{path}'. {_fix_hint(path)}")
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} file '{path}' is not valid UTF-8 ({e}). {_fix_hint(path)}") from None


def read_encoder(path: str) -> dict[str, int]:
    """Reads a token -> id JSON file and checks ids are 0..n-1 without gaps."""
    raw = _open_text(path, "vocabulary")
    try:
        enc = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"vocabulary file '{path}' is not valid JSON ({e}). {_fix_hint(path)}") from None
    if not isinstance(enc, dict) or not enc:
        raise ValueError(f"vocabulary file '{path}' must hold a non-empty JSON object token -> id. {_fix_hint(path)}")
    bad = [(k, v) for k, v in enc.items() if not isinstance(v, int) or isinstance(v, bool)]
    if bad:
        raise ValueError(f"vocabulary file '{path}': ids must be integers, got {bad[0]!r}. {_fix_hint(path)}")
    validate_encoder(enc, source=path)
    return enc


def validate_encoder(encoder: dict[str, int], source: str = "encoder") -> None:
    """Ids must be exactly 0..n-1 (they index embedding rows); tokens non-empty."""
    ids = sorted(encoder.values())
    if ids != list(range(len(ids))):
        dup = next((a for a, b in zip(ids, ids[1:]) if a == b), None)
        detail = f"id {dup} is used twice" if dup is not None else f"ids span {ids[0]}..{ids[-1]} with gaps"
        raise ValueError(f"{source}: token ids must be 0..{len(ids) - 1} without gaps or repeats; {detail}.")
    if "" in encoder:
        raise ValueError(f"{source}: the empty string is not a valid token.")


def read_merges(path: str) -> list[tuple[str, str]]:
    """Reads a merges file (see module docstring for the accepted format)."""
    lines = _open_text(path, "merges").split("\n")
    merges = []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if not line or (number == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"merges file '{path}', line {number}: expected two tokens separated by one "
                             f"space, got {line[:80]!r}. {_fix_hint(path)}")
        merges.append((parts[0], parts[1]))
    return merges


def validate_merges(encoder: dict[str, int], merges: list[tuple[str, str]], source: str = "merges") -> None:
    """Every merge's parts and result must be tokens, as HF's loader demands
    (otherwise BPE would create pieces that can only encode as unknown)."""
    for rank, (a, b) in enumerate(merges):
        if " " in a or " " in b or not a or not b:
            raise ValueError(f"{source}: merge #{rank} {(a, b)!r} has an empty token or one with a space.")
        for piece in (a, b, a + b):
            if piece not in encoder:
                raise ValueError(
                    f"{source}: merge #{rank} ({a!r} {b!r}) needs token "
                    f"{piece!r}, which is not in the vocabulary. The merges file does not belong to this "
                    f"vocabulary; load the matching pair of files.")


def find_files(directory: str) -> tuple[str, str, str]:
    """Detects the format in `directory` -> (format, vocab_path, merges_path).

    HF names win when both are present (they are unambiguous)."""
    if not os.path.isdir(directory):
        if os.path.exists(directory):
            raise ValueError(f"'{directory}' is a file; GPTTokenizer.load expects the directory holding the "
                             f"vocabulary files, or use from_original(encoder, bpe) / from_hf(vocab, merges).")
        raise FileNotFoundError(f"tokenizer directory not found: '{directory}'.")
    hf = os.path.join(directory, HF_VOCAB), os.path.join(directory, HF_MERGES)
    if all(os.path.isfile(p) for p in hf):
        return "hf", *hf
    encoders = sorted(glob.glob(os.path.join(glob.escape(directory), "encoder*.json")))
    bpes = sorted(glob.glob(os.path.join(glob.escape(directory), "*.bpe")))
    if len(encoders) == 1 and len(bpes) == 1:
        return "original", encoders[0], bpes[0]
    listing = sorted(os.listdir(directory))[:20]
    raise FileNotFoundError(
        f"no unique GPT-1 vocabulary in '{directory}' (found {listing}). Expected {HF_VOCAB} + {HF_MERGES}, "
        f"or exactly one encoder*.json + one *.bpe file; otherwise call from_original(encoder_path, bpe_path) "
        f"or from_hf(vocab_path, merges_path) with explicit paths.")


def original_names(num_merges: int) -> tuple[str, str]:
    """File names the original release uses, keyed by the merge count."""
    return f"encoder_bpe_{num_merges}.json", f"vocab_{num_merges}.bpe"


def write_files(directory: str, encoder: dict[str, int], merges: Iterable[tuple[str, str]],
                fmt: str = "original") -> tuple[str, str]:
    """Writes both files deterministically (ids ascending, '\\n' line ends)."""
    merges = list(merges)
    if fmt == "original":
        names = original_names(len(merges))
    elif fmt == "hf":
        names = HF_VOCAB, HF_MERGES
    else:
        raise ValueError(f"unknown vocabulary format {fmt!r}; expected 'original' or 'hf'.")
    os.makedirs(directory, exist_ok=True)
    paths = tuple(os.path.join(directory, n) for n in names)
    ordered = dict(sorted(encoder.items(), key=lambda kv: kv[1]))
    with open(paths[0], "w", encoding="utf-8", newline="\n") as f:
        json.dump(ordered, f, ensure_ascii=False)
    with open(paths[1], "w", encoding="utf-8", newline="\n") as f:
        f.write(MERGES_HEADER + "\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return paths


def fingerprint(encoder: dict[str, int], merges: Iterable[tuple[str, str]]) -> str:
    """sha256 hex of the tokens in id order and the merges in rank order.

    A canonical JSON encoding, so neither dict order nor `hash()` matter, and
    the same vocabulary gives the same value in either file format."""
    tokens = [t for t, _ in sorted(encoder.items(), key=lambda kv: kv[1])]
    payload = json.dumps({"tokens": tokens, "merges": [list(m) for m in merges]},
                         ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("ascii")).hexdigest()


def write_tokenizer_info(directory: str, info: dict) -> str:
    """Writes `TOKENIZER_INFO` (mode, fingerprint, ...) into `directory`."""
    path = os.path.join(directory, TOKENIZER_INFO)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        json.dump({"format": TOKENIZER_INFO_FORMAT, **info}, f, indent=2, sort_keys=True)
        f.write("\n")
    return path


def read_tokenizer_info(directory: str) -> dict | None:
    """The recorded tokenizer info of `directory`, or None when it has none
    (vocabularies from elsewhere)."""
    path = os.path.join(directory, TOKENIZER_INFO)
    if not os.path.isfile(path):
        return None
    try:
        info = json.loads(_open_text(path, "tokenizer info"))
    except json.JSONDecodeError as e:
        raise ValueError(f"tokenizer info '{path}' is not valid JSON ({e}); delete it to load the vocabulary "
                         "in the default mode, or re-save the tokenizer") from None
    if not isinstance(info, dict) or info.get("format") != TOKENIZER_INFO_FORMAT or "mode" not in info:
        raise ValueError(f"tokenizer info '{path}' is not a {TOKENIZER_INFO_FORMAT} file with a 'mode'; "
                         "re-save the tokenizer with GPTTokenizer.save")
    return info

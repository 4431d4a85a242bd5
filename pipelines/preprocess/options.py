"""Options: `PreprocessOptions`, the one object that says how every
preprocessing run reads, checks and runs (built once by each caller: the CLI,
the pipeline's preprocess stage, Python code). Beam's own pipeline options are
in `pipelines.preprocess.runner`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from gpt_keras.tokenizer.text import MODES

TEXT_UNITS = ("line", "paragraph", "file")
MiB = 1 << 20


@dataclasses.dataclass(frozen=True)
class PreprocessOptions:
    """How a preprocessing run reads, checks and runs (docs/preprocess.md, "Options").

    Reading: `text_field` names the JSONL field / CSV column / TFDS feature
    with the text (and the key plain-text documents get); `text_unit` cuts
    plain-text files into a document per "line", "paragraph" or "file";
    `where` keeps only rows whose columns equal these values (others are
    skipped, not counted); `clean_html` turns `<br />` into newlines; both add
    to an `InputSpec`'s own. `tfds_data_dir`: where TFDS inputs are prepared.

    Limits (bad input goes to the dead letter, never crashes or hangs a worker):
    `max_line_bytes` caps one physical line; `max_document_bytes` caps one
    document of several lines (`text_unit` "paragraph"/"file"); a quoted
    CSV field spanning more than `max_record_lines` lines or
    `max_record_bytes` bytes is broken: its first line is rejected and reading
    resumes at the next line. `min_label_count`, `rare_labels`: without
    `label_names`, a label seen fewer times is a likely typo; "warn" keeps it
    and prints a warning with the label counts, "reject" sends its rows to the
    dead letter (`rare_label`) so that it does not become a class.

    Checks and run: `max_bad_fraction` fails the run when more rows are
    rejected; `mode` is the tokenizer mode; `batch_size` the rows per
    tokenizer batch; `split_salt` changes the hash split; `num_shards` per
    split (0: the runner decides); `overwrite` replaces earlier output;
    `verbose` prints the summary."""

    text_field: str = "text"
    text_unit: str = "line"
    where: Mapping[str, str] = dataclasses.field(default_factory=dict)
    clean_html: bool = False
    tfds_data_dir: str | None = None
    max_line_bytes: int = 8 * MiB
    max_document_bytes: int = 64 * MiB
    max_record_lines: int = 1000
    max_record_bytes: int = 16 * MiB
    min_label_count: int = 2
    rare_labels: str = "warn"
    max_bad_fraction: float = 0.1
    mode: str = "hf"
    batch_size: int = 256
    split_salt: str = ""
    num_shards: int = 0
    overwrite: bool = False
    verbose: bool = True

    def __post_init__(self):
        object.__setattr__(self, "where", {str(k): str(v) for k, v in dict(self.where or {}).items()})
        problems = [
            (self.text_unit in TEXT_UNITS, "text_unit", f"must be one of {TEXT_UNITS}"),
            (self.mode in MODES, "mode", f"must be one of {MODES}"),
            (0.0 <= self.max_bad_fraction <= 1.0, "max_bad_fraction", "must be in [0, 1]"),
            (self.batch_size >= 1, "batch_size", "must be >= 1"),
            (self.num_shards >= 0, "num_shards", "must be >= 0 (0: the runner decides)"),
            (self.min_label_count >= 1, "min_label_count", "must be >= 1"),
            (self.rare_labels in ("warn", "reject"), "rare_labels", "must be 'warn' or 'reject'"),
        ] + [(getattr(self, k) >= 1, k, "must be >= 1") for k in
             ("max_line_bytes", "max_document_bytes", "max_record_lines", "max_record_bytes")]
        for ok, key, message in problems:
            if not ok:
                raise ValueError(f"PreprocessOptions.{key} {message}, got {getattr(self, key)!r}")

    def replace(self, **changes: Any) -> "PreprocessOptions":
        return dataclasses.replace(self, **changes)


OPTION_NAMES = tuple(f.name for f in dataclasses.fields(PreprocessOptions))

"""`PreprocessOptions`: the one object that says how every preprocessing run
reads, checks and runs, built once by each caller (the CLI, the pipeline's
preprocess stage, Python code).

Each option is declared once, here: its name, default, help and, for the
command line, the commands that take it (`python -m pipelines.preprocess`
makes its flags from these fields; `from_sections` takes a config's keys of
the same names). Beam's own pipeline options are in `pipelines.preprocess.runner`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from gpt_keras.tokenizer.text import MODES

COMMANDS = ("vocab", "corpus", "task")
TEXT = ("vocab", "corpus")     # jobs that read documents of one text field
SPLITS = ("corpus", "task")    # jobs that write split records
MiB = 1 << 20


def _option(default: Any, help: str, *, commands: Sequence[str] = COMMANDS, choices: Sequence[str] | None = None,
            flag: str | None = None, metavar: str | None = None) -> Any:
    """A PreprocessOptions field with what the command line needs: its help,
    choices (also checked in `__post_init__`), the commands that take it, and
    the flag when it is not `--<name>`."""
    value = {"default_factory": dict} if isinstance(default, dict) else {"default": default}
    return dataclasses.field(**value, metadata={"help": help, "commands": tuple(commands), "choices": choices,
                                                "flag": flag, "metavar": metavar})


@dataclasses.dataclass(frozen=True)
class PreprocessOptions:
    """How a preprocessing run reads, checks and runs (docs/preprocess.md, "Options").

    The limits keep one hostile or broken record from crashing or hanging a
    worker, or swallowing the rest of a file: what breaks one goes to the
    dead letter with its line number and raw text. `where` and `clean_html`
    add to each `InputSpec`'s own."""

    text_field: str = _option("text", "JSONL field / CSV column / TFDS feature with the text (the key plain-text "
                              "documents get)", commands=TEXT)
    text_unit: str = _option("line", "plain-text files: a document per line, blank-line paragraph, or file",
                             commands=TEXT, choices=("line", "paragraph", "file"))
    where: Mapping[str, str] = _option({}, "keep only rows whose column has this value (others are skipped, not "
                                       "counted); repeatable, e.g. --where source=imdb", metavar="COLUMN=VALUE")
    clean_html: bool = _option(False, "turn <br /> into newlines (IMDB)")
    tfds_data_dir: str | None = _option(None, "where TFDS inputs are prepared")
    max_line_bytes: int = _option(8 * MiB, "reject longer physical lines; only this much of one is held in memory")
    max_document_bytes: int = _option(64 * MiB, "reject longer multi-line documents (text_unit paragraph/file)",
                                      commands=TEXT)
    max_record_lines: int = _option(1000, "a quoted CSV field spanning more lines is broken: its first line is "
                                    "rejected, reading resumes at the next")
    max_record_bytes: int = _option(16 * MiB, "the same limit in bytes")
    min_label_count: int = _option(2, "without label_names, labels seen fewer times are likely typos (see "
                                   "rare_labels)", commands=("task",))
    rare_labels: str = _option("warn", "warn about rare labels (they stay classes), or reject their rows to the "
                               "dead letter", commands=("task",), choices=("warn", "reject"))
    max_bad_fraction: float = _option(0.1, "fail the run if a larger share of the rows is rejected")
    mode: str = _option("hf", "tokenizer mode", choices=MODES)
    batch_size: int = _option(256, "max rows per tokenizer batch")
    split_salt: str = _option("", "salt of the stable hash split", commands=SPLITS)
    num_shards: int = _option(0, "shards per split (0: the runner decides)", commands=SPLITS)
    overwrite: bool = _option(False, "replace earlier output in the output directory")
    verbose: bool = _option(True, "print the run's summary", flag="--quiet")

    def __post_init__(self):
        object.__setattr__(self, "where", {str(k): str(v) for k, v in dict(self.where or {}).items()})
        problems = [
            (0.0 <= self.max_bad_fraction <= 1.0, "max_bad_fraction", "must be in [0, 1]"),
            (self.batch_size >= 1, "batch_size", "must be >= 1"),
            (self.num_shards >= 0, "num_shards", "must be >= 0 (0: the runner decides)"),
            (self.min_label_count >= 1, "min_label_count", "must be >= 1"),
        ] + [(getattr(self, k) >= 1, k, "must be >= 1") for k in
             ("max_line_bytes", "max_document_bytes", "max_record_lines", "max_record_bytes")
        ] + [(getattr(self, f.name) in f.metadata["choices"], f.name, f"must be one of {f.metadata['choices']}")
             for f in dataclasses.fields(self) if f.metadata["choices"]]
        for ok, key, message in problems:
            if not ok:
                raise ValueError(f"PreprocessOptions.{key} {message}, got {getattr(self, key)!r}")

    def replace(self, **changes: Any) -> "PreprocessOptions":
        """A copy with these options changed (checked again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_sections(cls, *sections: Any, **given: Any) -> "PreprocessOptions":
        """The options a config gives: every attribute of `sections` named like
        an option (a later section wins), then `given` (options the config
        names otherwise, e.g. `mode` from its tokenizer mode)."""
        values = {f.name: getattr(section, f.name) for section in sections for f in dataclasses.fields(cls)
                  if hasattr(section, f.name)}
        return cls(**{**values, **given})

"""Options: `PreprocessOptions`, the one object that says how every
preprocessing run reads, checks and runs (built once by each caller: the CLI,
the pipeline's preprocess stage, Python code), and Beam's pipeline options.

Beam options (the runner itself is built in `pipelines.preprocess.runner`):
* Default / `--runner=DirectRunner`: Beam 2.77's DirectRunner first tries to
  download and start a Prism binary (no network here), so we select the
  in-process FnApiRunner ourselves, exactly as DirectRunner's fallback does.
  `--direct_num_workers=N --direct_running_mode=multi_processing` runs N worker
  processes (`in_memory`, the default, ignores N).
* `--runner=DataflowRunner` with the standard Google Cloud options
  (`--project --region --temp_location [--staging_location]
  [--sdk_container_image] ...`); `--setup_file` defaults to this repository's
  setup.py so workers install gpt_keras + pipelines.
* Beam's `--dry_run` flag has no type: `--dry_run=False` would count as true.
  We normalize it (`False/0/no` -> absent, bare or true -> `True`).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions, TestOptions

from gpt_keras.tokenizer.text import MODES

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_FALSE = {"false", "0", "no", "off", ""}
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


def normalize_args(pipeline_args: Sequence[str] | None) -> list[str]:
    """Beam argv with `--dry_run` made unambiguous (see module docstring)."""
    out = []
    for arg in pipeline_args or ():
        if arg == "--dry_run":
            out.append("--dry_run=True")
        elif arg.startswith("--dry_run="):
            if arg.split("=", 1)[1].strip().lower() not in _FALSE:
                out.append("--dry_run=True")
        else:
            out.append(arg)
    return out


def pipeline_options(pipeline_args: Sequence[str] | None = None) -> PipelineOptions:
    """PipelineOptions from argv-style args, with the defaults this project needs."""
    options = PipelineOptions(normalize_args(pipeline_args))
    if is_dataflow(options):
        setup = options.view_as(SetupOptions)
        default_setup = os.path.join(REPO_ROOT, "setup.py")
        if not setup.setup_file and not setup.requirements_file and os.path.isfile(default_setup):
            setup.setup_file = default_setup
    return options


def runner_name(options: PipelineOptions) -> str | None:
    runner = options.view_as(StandardOptions).runner
    return runner if isinstance(runner, str) or runner is None else type(runner).__name__


def is_dataflow(options: PipelineOptions) -> bool:
    return (runner_name(options) or "").lower() in ("dataflowrunner", "dataflow")


def is_dry_run(options: PipelineOptions) -> bool:
    return bool(options.view_as(TestOptions).dry_run)

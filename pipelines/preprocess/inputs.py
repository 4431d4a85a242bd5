"""Inputs: the one `InputSpec` (also the pipeline config's `input:` section),
parsed from strings and resolved to files or TFDS builders before any Beam work.

An input is one of
  * a glob of files; the format is `InputSpec.format`, or with "auto" comes
    from the extension (a trailing `.gz` is looked through) or a `format:`
    prefix: `text:`, `jsonl:`, `csv:`, `tsv:`;
  * `tfds:NAME[:SPLIT,SPLIT]`, a TFDS dataset prepared in `tfds_data_dir`
    (splits default to the dataset's splits whose name does not start with "test");
  * rows held in memory (`memory_input(rows)`), for Python callers.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterable, Mapping, Sequence

FILE_FORMATS = ("text", "jsonl", "csv", "tsv")
FORMATS = ("auto",) + FILE_FORMATS + ("tfds", "memory")
_EXTENSIONS = {".txt": "text", ".text": "text", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
               ".csv": "csv", ".tsv": "tsv"}


@dataclasses.dataclass
class InputSpec:
    """Where rows come from.

    `paths` are globs (.gz ok; `pkg://package/relative/path` in pipeline
    configs) or TFDS dataset names; `format` is one of FORMATS ("auto": from
    the extension). `where` keeps only rows whose columns have these values
    (e.g. {source: imdb}); `clean_html` turns `<br />` into newlines (IMDB).
    `split` keeps every row in that split (else rows are hash-split);
    `tfds_splits` picks a TFDS dataset's splits; `rows` holds in-memory rows."""

    paths: list[str] = dataclasses.field(default_factory=list)
    format: str = "auto"
    where: dict[str, str] = dataclasses.field(default_factory=dict)
    clean_html: bool = False
    split: str | None = None
    tfds_splits: list[str] = dataclasses.field(default_factory=list)
    rows: list[Any] = dataclasses.field(default_factory=list)

    def problems(self, path: str = "input") -> list[tuple[str, str]]:
        """Every (dotted key, message) that is wrong, e.g. ("input.paths", "needs ...")."""
        found = []
        if self.format not in FORMATS:
            found.append((f"{path}.format", f"must be one of {', '.join(FORMATS[:-1])}; got {self.format!r}"))
        if self.format == "memory":
            if not self.rows:
                found.append((f"{path}.rows", "an in-memory input has no rows"))
        elif not self.paths or not all(isinstance(p, str) and p for p in self.paths):
            found.append((f"{path}.paths", f"needs at least one path or glob, got {self.paths!r}"))
        bad = {k: v for k, v in self.where.items() if not isinstance(v, (str, int, float))}
        if bad:
            found.append((f"{path}.where", f"values must be scalars, got {bad}"))
        return found

    def validate(self, path: str = "input") -> "InputSpec":
        """Raises ValueError naming every dotted key (`path.format`, ...) that is wrong."""
        found = self.problems(path)
        if found:
            raise ValueError("; ".join(f"{key}: {message}" for key, message in found))
        return self

    @property
    def path(self) -> str:
        """The one path of a parsed (single-path) spec."""
        return self.paths[0] if self.paths else ""

    def describe(self) -> str:
        if self.format == "memory":
            return f"memory:{len(self.rows)} rows"
        suffix = f":{','.join(self.tfds_splits)}" if self.tfds_splits else ""
        return f"{self.format}:{','.join(self.paths)}{suffix}" + (f" (split {self.split})" if self.split else "")


def memory_input(rows: Iterable[Any], split: str | None = None) -> InputSpec:
    """In-memory rows (dicts, or strings meaning {text_field: string}) as an input."""
    return InputSpec(format="memory", split=split, rows=list(rows))


def _format_of(path: str) -> str:
    stem = path[:-3] if path.endswith(".gz") else path
    return _EXTENSIONS.get(os.path.splitext(stem)[1].lower(), "text")


def parse_input(value: "str | InputSpec", split: str | None = None) -> InputSpec:
    """`path/glob*.jsonl.gz`, `csv:path`, `tfds:glue/sst2:train` -> InputSpec
    (an InputSpec is returned as it is, in `split` if given)."""
    if isinstance(value, InputSpec):
        return dataclasses.replace(value, split=split) if split else value
    if not isinstance(value, str) or not value:
        raise TypeError(f"an input must be a path/glob, 'format:path', 'tfds:name' or an InputSpec; got {value!r}")
    head, sep, rest = value.partition(":")
    if sep and head == "tfds":
        name, _, splits = rest.partition(":")
        if split and splits:
            raise ValueError(f"{value!r} names its TFDS splits; do not also assign it to split {split!r}")
        return InputSpec([name], "tfds", split=split, tfds_splits=[s for s in splits.split(",") if s])
    if sep and head in FILE_FORMATS:
        return InputSpec([rest], head, split=split)
    return InputSpec([value], _format_of(value), split=split)


def _expand(spec: InputSpec) -> list[InputSpec]:
    """One spec per path, each with a concrete format (the config's `format` wins over the extension)."""
    spec.validate()
    if spec.format == "memory":
        return [spec]
    return [dataclasses.replace(spec, paths=[p], format=_format_of(p) if spec.format == "auto" else spec.format)
            for p in spec.paths]


def parse_inputs(inputs: Any, where: Mapping[str, str] | None = None, clean_html: bool = False) -> list[InputSpec]:
    """Inputs as a spec, a list of them, a list of row dicts (in memory), or a
    mapping split name -> any of these (the splits are kept as given).

    `where` and `clean_html` (the run's options) add to each spec's own."""
    if isinstance(inputs, Mapping):
        specs = [spec for split, value in inputs.items() for spec in _parse_list(value, split)]
    else:
        specs = _parse_list(inputs, None)
    return [dataclasses.replace(s, where={**dict(where or {}), **s.where}, clean_html=s.clean_html or clean_html)
            for s in specs]


def _parse_list(value: Any, split: str | None) -> list[InputSpec]:
    if isinstance(value, (str, InputSpec)):
        return _expand(parse_input(value, split))
    value = list(value)
    if value and all(isinstance(v, Mapping) for v in value):
        return [memory_input(value, split)]
    if not value:
        raise ValueError("no inputs given")
    return [spec for v in value for spec in _expand(parse_input(v, split))]


def local_path(path: str) -> str:
    """Absolute local paths (Beam's local glob ignores bare relative patterns); URLs unchanged."""
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


@dataclasses.dataclass(frozen=True)
class ResolvedInput:
    spec: InputSpec
    files: tuple[str, ...] = ()   # file formats
    builder: Any = None           # tfds
    tfds_splits: tuple[str, ...] = ()

    @property
    def kept_splits(self) -> tuple[str, ...]:
        """Split names this input fixes (empty: its rows are hash-split)."""
        if self.spec.format == "tfds":
            return (self.spec.split,) if self.spec.split else self.tfds_splits
        return (self.spec.split,) if self.spec.split else ()


def resolve_inputs(specs: Sequence[InputSpec], tfds_data_dir: str | None = None) -> list[ResolvedInput]:
    """Expands globs and opens TFDS builders, failing fast (before any Beam
    work) on a pattern that matches nothing or a dataset that is not prepared."""
    from apache_beam.io.filesystems import FileSystems

    resolved = []
    for spec in specs:
        if spec.format == "memory":
            if not spec.rows:
                raise ValueError("an in-memory input has no rows")
            resolved.append(ResolvedInput(spec))
        elif spec.format == "tfds":
            builder, splits = _tfds_builder(spec, tfds_data_dir)
            resolved.append(ResolvedInput(spec, builder=builder, tfds_splits=splits))
        elif spec.format in FILE_FORMATS:
            matches = FileSystems.match([local_path(spec.path)])[0].metadata_list
            files = tuple(sorted(m.path for m in matches if not m.path.endswith("/")))
            if not files:
                raise FileNotFoundError(f"input {spec.path!r} matches no files")
            resolved.append(ResolvedInput(spec, files=files))
        else:
            raise ValueError(f"unknown input format {spec.format!r}; expected one of {FILE_FORMATS + ('tfds',)}")
    return resolved


def _tfds_builder(spec: InputSpec, data_dir: str | None):
    import tensorflow_datasets as tfds

    hint = (f"prepare it first where there is network access, e.g. `tfds build {spec.path} "
            f"--data_dir={data_dir or '~/tensorflow_datasets'}`, and pass --tfds_data_dir")
    try:
        builder = tfds.builder(spec.path, data_dir=data_dir)
    except Exception as e:  # DatasetNotFoundError and friends; the message lists every dataset
        raise FileNotFoundError(f"TFDS dataset {spec.path!r} not found in data_dir {data_dir!r} "
                                f"({type(e).__name__}); {hint}") from None
    if not builder.is_prepared():
        raise FileNotFoundError(f"TFDS dataset {spec.path!r} is not prepared in data_dir {data_dir!r}; {hint}")
    available = list(builder.info.splits.keys())
    splits = tuple(spec.tfds_splits) or tuple(s for s in available if not s.startswith("test"))
    unknown = [s for s in splits if s not in available]
    if unknown or not splits:
        raise ValueError(f"TFDS dataset {spec.path!r} has splits {available}; cannot read {list(unknown or splits)}")
    return builder, tuple(splits)

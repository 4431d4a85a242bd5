"""Command line: `python -m pipelines.preprocess {vocab,corpus,task} --help`.

Arguments this CLI does not know are Beam pipeline options, e.g.
  --direct_num_workers=2 --direct_running_mode=multi_processing
  --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Sequence

from pipelines.preprocess.corpus import BOUNDARY_CHOICES, run_corpus
from pipelines.preprocess.errors import PreprocessError
from pipelines.preprocess.options import PreprocessOptions
from pipelines.preprocess.vocab import SAVE_FORMATS, run_vocab

RUNNER_HELP = """Beam options (any argument not listed above is passed to Beam):
  default runner           in-process FnApiRunner (offline; no Prism download)
  --direct_num_workers=N --direct_running_mode=multi_processing   N local worker processes
  --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp
      [--staging_location=...] [--sdk_container_image=...] [--setup_file=./setup.py (default)]
  --dry_run=True           build the job without running it (Dataflow: add --no_auth offline)
"""


def _key_values(items: Sequence[str] | None, what: str) -> dict[str, str]:
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: {what} must look like KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def _fractions(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    return {k: float(v) for k, v in _key_values(text.split(","), "--split_fractions").items()}


def _inputs(args) -> object:
    split_inputs = _key_values(args.split_input, "--split_input")
    if split_inputs and args.input:
        raise SystemExit("error: use either --input (hash-split) or --split_input NAME=PATTERN (kept splits)")
    if split_inputs:
        return {k: v for k, v in split_inputs.items()}
    if not args.input:
        raise SystemExit("error: give at least one --input (or --split_input NAME=PATTERN)")
    return list(args.input)


def _inputs_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", action="append", help="glob (.txt/.jsonl/.csv/.tsv, optionally .gz), "
                   "'format:glob', or 'tfds:NAME[:SPLIT,...]'; repeatable")
    p.add_argument("--out_dir", required=True, help="output directory (local or gs://)")


def _option_flags(p: argparse.ArgumentParser, command: str) -> None:
    """A flag for each `PreprocessOptions` field this command takes, made from the field."""
    for field in dataclasses.fields(PreprocessOptions):
        meta = field.metadata
        if command not in meta["commands"]:
            continue
        default, flag = _default(field), _flag(field)
        if isinstance(default, bool):  # a switch away from the default
            p.add_argument(flag, dest=field.name, action="store_false" if default else "store_true",
                           help=f"do not {meta['help']}" if default else meta["help"])
        elif isinstance(default, dict):  # KEY=VALUE pairs, parsed by build_options
            p.add_argument(flag, dest=field.name, action="append", metavar=meta["metavar"], help=meta["help"])
        else:
            p.add_argument(flag, dest=field.name, type=str if default is None else type(default), default=default,
                           choices=meta["choices"], help=meta["help"])


def _default(field: dataclasses.Field) -> object:
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


def _flag(field: dataclasses.Field) -> str:
    return field.metadata["flag"] or f"--{field.name}"


def _splits(p: argparse.ArgumentParser, val_default: float) -> None:
    p.add_argument("--split_input", action="append", metavar="SPLIT=GLOB", help="input kept in SPLIT; repeatable")
    p.add_argument("--val_fraction", type=float, default=val_default, help="hash-split share of 'validation'")
    p.add_argument("--split_fractions", default=None, help="e.g. train=0.8,validation=0.1,test=0.1")
    p.add_argument("--n_ctx", type=int, default=512, help="max sequence length (model context)")


def build_parser() -> argparse.ArgumentParser:
    """The three commands' parser; the option flags come from `PreprocessOptions`' fields."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.preprocess", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    v = sub.add_parser("vocab", help="count words with Beam and train a BPE vocabulary", epilog=RUNNER_HELP,
                       formatter_class=fmt)
    _inputs_flags(v)
    _option_flags(v, "vocab")
    v.add_argument("--num_merges", type=int, required=True)
    v.add_argument("--min_frequency", type=int, default=2, help="stop merging below this pair count")
    v.add_argument("--save_format", default="original", choices=SAVE_FORMATS)

    c = sub.add_parser("corpus", help="raw text -> packed pre-training TFRecords", epilog=RUNNER_HELP,
                       formatter_class=fmt)
    _inputs_flags(c)
    _option_flags(c, "corpus")
    _splits(c, 0.01)
    c.add_argument("--vocab_dir", default=None, help="existing vocabulary (else --num_merges trains one)")
    c.add_argument("--num_merges", type=int, default=None, help="train a vocabulary into OUT_DIR/vocab first")
    c.add_argument("--boundary", default="auto", choices=BOUNDARY_CHOICES,
                   help="document-boundary policy (docs/preprocess.md)")
    c.add_argument("--num_groups", type=int, default=16, help="packing groups per split")

    t = sub.add_parser("task", help="labeled rows -> fine-tuning TFRecords", epilog=RUNNER_HELP, formatter_class=fmt)
    _inputs_flags(t)
    _option_flags(t, "task")
    _splits(t, 0.1)
    t.add_argument("--family", required=True,
                   choices=["classification", "entailment", "similarity", "multiple_choice", "regression"])
    t.add_argument("--field", action="append", metavar="FIELD=COLUMN", help="e.g. text=sentence, label=label, "
                   "id=idx, choices=endings (list column) or choices=ending0,ending1 (numbered columns)")
    t.add_argument("--vocab_dir", required=True)
    t.add_argument("--label_names", default=None, help="comma-separated label vocabulary (else derived)")
    t.add_argument("--num_choices", type=int, default=None)
    t.add_argument("--split_field", default=None, help="column naming each row's split (train / validation / "
                   "test; dev, val, valid, eval = validation); other values go to the dead letter")
    return parser


def build_options(args: argparse.Namespace) -> PreprocessOptions:
    """The run's one PreprocessOptions from the parsed arguments (defaults for those a command lacks)."""
    given = {}
    for field in dataclasses.fields(PreprocessOptions):
        if hasattr(args, field.name):
            value = getattr(args, field.name)
            given[field.name] = _key_values(value, _flag(field)) if isinstance(_default(field), dict) else value
    return PreprocessOptions(**given)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; returns the exit status (1 on a preprocessing error)."""
    args, pipeline_args = build_parser().parse_known_args(argv)
    try:
        options = build_options(args)
        if args.command == "vocab":
            run_vocab(_inputs(argparse.Namespace(input=args.input, split_input=None)), args.out_dir, args.num_merges,
                      pipeline_args, options=options, min_frequency=args.min_frequency, save_format=args.save_format)
        elif args.command == "corpus":
            run_corpus(_inputs(args), args.out_dir, args.vocab_dir, args.n_ctx,
                       None if args.split_fractions else args.val_fraction, pipeline_args, options=options,
                       split_fractions=_fractions(args.split_fractions), boundary=args.boundary,
                       num_groups=args.num_groups, num_merges=args.num_merges)
        else:
            # Here, not at the top: the task job imports TensorFlow, which vocab and corpus runs need not load.
            from pipelines.preprocess.task import run_task

            fields: dict[str, object] = dict(_key_values(args.field, "--field"))
            if "," in str(fields.get("choices", "")):
                fields["choices"] = str(fields["choices"]).split(",")
            run_task(_inputs(args), args.family, fields or None, args.out_dir, args.vocab_dir, args.n_ctx,
                     args.label_names.split(",") if args.label_names else None, pipeline_args, options=options,
                     num_choices=args.num_choices, val_fraction=None if args.split_fractions else args.val_fraction,
                     split_fractions=_fractions(args.split_fractions), split_field=args.split_field)
    except (PreprocessError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0

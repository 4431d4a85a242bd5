"""The runner: Beam's pipeline options, the pipeline on the runner they name,
the run, and its result as the run's summary.

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

import logging
import os
import re
import time
from typing import Any, Callable, Mapping, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import (DirectOptions, PipelineOptions, SetupOptions, StandardOptions,
                                                  TestOptions)

from gpt_keras import schema
from pipelines.preprocess import stats as st
from pipelines.preprocess.errors import ERROR_MARK, PreprocessError
from pipelines.preprocess.sinks import RECORD_FILES, prepare_out_dir
from pipelines.preprocess.stats import NAMESPACE

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_DIRECT = {None, "", "DirectRunner", "direct", "FnApiRunner", "SwitchingDirectRunner"}
_FALSE = {"false", "0", "no", "off", ""}

log = logging.getLogger(__name__)


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
    """The runner the options name (a class name when they hold a runner object)."""
    runner = options.view_as(StandardOptions).runner
    return runner if isinstance(runner, str) or runner is None else type(runner).__name__


def is_dataflow(options: PipelineOptions) -> bool:
    """Whether the options name Dataflow."""
    return (runner_name(options) or "").lower() in ("dataflowrunner", "dataflow")


def is_dry_run(options: PipelineOptions) -> bool:
    """Whether the job is to be built but not run (`--dry_run`)."""
    return bool(options.view_as(TestOptions).dry_run)


def create_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """A Pipeline on the runner the options name; the local default is the
    in-process FnApiRunner (offline; honours direct_num_workers/running_mode)."""
    if runner_name(options) not in _DIRECT:
        return beam.Pipeline(options=options)
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode == "multi_processing":
        # Worker processes unpickle our DoFns: they must import this repository
        # even when it is used from a checkout rather than pip-installed.
        path = os.environ.get("PYTHONPATH", "")
        if REPO_ROOT not in path.split(os.pathsep):
            os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, path) if p)
    elif direct.direct_num_workers not in (1, None):
        log.warning("--direct_num_workers=%s has no effect without --direct_running_mode=multi_processing",
                    direct.direct_num_workers)
    # The same provision info DirectRunner hands the FnApiRunner (pipeline options for the workers).
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    info = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return beam.Pipeline(runner=fn_runner.FnApiRunner(provision_info=info), options=options)


def run_pipeline(pipeline: beam.Pipeline) -> tuple[object, float, dict[str, int]]:
    """Runs and waits; returns (result, seconds, our Beam counters).

    A PreprocessError raised inside the pipeline is re-raised here with its
    clean message, whatever the runner wrapped it in."""
    start = time.perf_counter()
    try:
        result = pipeline.run()
        result.wait_until_finish()
    except Exception as e:  # runners wrap worker errors in their own types
        match = re.search(re.escape(ERROR_MARK) + r" (.*?)(?: \[while running|\\n|\n|$)", str(e), re.S)
        if match:
            raise PreprocessError(match.group(1).strip()) from None
        raise
    seconds = time.perf_counter() - start
    return result, seconds, counters(result)


def counters(result) -> dict[str, int]:
    """Our namespace's counters from a finished run ({} if the runner has none)."""
    try:
        found = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(NAMESPACE))["counters"]
    except Exception:  # dry runs and some runners expose no metrics
        return {}
    out: dict[str, int] = {}
    for c in found:
        value = c.committed if c.committed is not None else c.attempted
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(value or 0)
    return dict(sorted(out.items()))


def execute(build: Callable[[beam.Pipeline], None], out_dir: str, overwrite: bool,
            pipeline_args: Sequence[str] | None, verbose: bool = True, extra: Mapping[str, Any] | None = None,
            owned: Sequence[str] = RECORD_FILES) -> dict:
    """Prepares `out_dir` (not for dry runs), builds the pipeline with
    `build(p)`, runs it, and returns (and prints) the summary."""
    options = pipeline_options(pipeline_args)
    if not is_dry_run(options):
        prepare_out_dir(out_dir, overwrite, owned)
    pipeline = create_pipeline(options)
    build(pipeline)
    result, seconds, counters = run_pipeline(pipeline)
    if is_dry_run(options):
        summary = {"out_dir": out_dir, "dry_run": True, "state": str(getattr(result, "state", None)),
                   "setup_file": options.view_as(SetupOptions).setup_file}
        job = getattr(result, "job", None)  # DataflowRunner: the job it would have submitted
        if job is not None:
            summary.update(job_name=job.proto.name, transforms=len(job.proto_pipeline.components.transforms))
        if verbose:
            print(f"[preprocess] dry run: the job was built but not run ({summary['state']})")
        return summary
    stats = st.read_json(st.join(out_dir, schema.STATS_FILENAME))
    summary = st.summarize(stats, out_dir, seconds, counters, extra)
    if verbose:
        print(st.format_summary(summary), flush=True)
    return summary

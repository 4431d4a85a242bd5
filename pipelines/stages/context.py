"""What every stage shares: how stages are named and grouped, and the
`Context` a stage runs with."""
from __future__ import annotations

import dataclasses

from pipelines.config.experiment import ExperimentConfig
from pipelines.resolve import ResolvedConfig
from pipelines.stages.outputs import RECORDS, T


def group_of(stage: str) -> str:
    """`records/x` -> preprocess, `finetune/x` -> finetune, `transfer/x/m` -> analysis."""
    prefix = stage.split("/")[0]
    if prefix in ("import", "vocab", "corpus", "records"):
        return "preprocess"
    return "analysis" if prefix in ("transfer", "zeroshot") else prefix


def seed_runs(config: ExperimentConfig) -> list[tuple[int, str]]:
    """(seed, name suffix) of each fine-tuning run of every variant: one per
    `finetune.seeds`, its stages and models named with `-seed<k>`; without
    seeds, one run with the experiment `seed` under the plain names."""
    if config.finetune.seeds:
        return [(k, f"-seed{k}") for k in config.finetune.seeds]
    return [(config.seed, "")]


def finetune_stage(task: str, suffix: str = "") -> str:
    """The stage that fine-tunes `task` (pre-trained, and from scratch) for the seed of `suffix`."""
    return f"finetune/{task}{suffix}"


def records_stage(task: str) -> str:
    """The stage that writes `task`'s records."""
    return f"records/{task}"


def transfer_stage(task: str, variant: str, suffix: str = "") -> str:
    """The stage of an analysis variant of `task` for the seed of `suffix`."""
    return f"transfer/{task}/{variant}{suffix}"


def has_zeroshot(config: ExperimentConfig) -> bool:
    """Whether the plan has a `zeroshot/<task>` stage per task (the analysis section asks for one)."""
    a = config.analysis
    return bool(a.zero_shot or a.few_shot or a.figure2)


def missing_output(stage: str, key: str) -> RuntimeError:
    """The error for a stage output that is not recorded: it names the group to run."""
    group = group_of(stage)
    return RuntimeError(f"stage output {stage}.{key} is missing: run the {group!r} stage first "
                        f"(python pipelines/run.py --stages {group})")


@dataclasses.dataclass
class Context:
    """What a stage sees: the config (and what it leaves open, resolved), Beam
    arguments, and the outputs of finished stages."""
    config: ExperimentConfig
    resolved: ResolvedConfig
    beam_args: list[str]
    artifacts: dict[str, dict]  # stage -> its manifest entry "outputs", as recorded (`StageOutput.to_dict`)
    work_dir: str
    fingerprints: dict[str, str]

    def output(self, stage: str, kind: type[T]) -> T:
        """The outputs of the finished `stage` as the record it writes, which
        must be a `kind` (`outputs.RECORDS`): e.g. `ctx.output("pretrain",
        PretrainOutput).model_dir`. A field it did not record raises a
        RuntimeError that names the stage to run."""
        recorded = RECORDS.get(stage.split("/")[0])
        if recorded is None or not issubclass(recorded, kind):
            raise TypeError(f"stage {stage!r} does not record a {kind.__name__}"
                            + (f" but a {recorded.__name__}" if recorded else ""))
        values = self.artifacts.get(stage, {})
        missing = recorded.missing(values)
        if missing:
            raise missing_output(stage, missing[0])
        return recorded.from_dict(values)

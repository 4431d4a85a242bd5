"""What each stage records as its outputs: small typed records.

A stage's run returns a `StageResult`: one of the records below and its
metrics. `run.py` writes the record into `manifest.json` and the stage's
`stage.json` as a plain dict (`to_dict`: the keys are the field names, and a
field left None is not written), and a later stage reads it back through
`Context.output(stage, kind)` as the record again, so that a misspelt field is
an AttributeError at the line that names it (and to a type checker), not a
KeyError deep in a run.
"""
from __future__ import annotations

import dataclasses
from typing import Any, TypeVar


@dataclasses.dataclass(frozen=True)
class StageOutput:
    """A stage's outputs: paths inside its directory, or small values."""

    def to_dict(self) -> dict[str, Any]:
        """As recorded in the manifest: every field that is set."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def missing(cls, values: dict[str, Any]) -> list[str]:
        """The fields without a default that recorded `values` lack."""
        return [f.name for f in dataclasses.fields(cls) if f.name not in values
                and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """The record of recorded `values` (keys it does not know are left out)."""
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


T = TypeVar("T", bound=StageOutput)


@dataclasses.dataclass(frozen=True)
class ImportOutput(StageOutput):
    """import: `model.init_from` as a gpt_keras model directory."""
    model_dir: str


@dataclasses.dataclass(frozen=True)
class VocabOutput(StageOutput):
    """vocab: the BPE vocabulary's directory."""
    vocab_dir: str


@dataclasses.dataclass(frozen=True)
class CorpusOutput(StageOutput):
    """corpus: the packed pre-training records' directory."""
    corpus_dir: str


@dataclasses.dataclass(frozen=True)
class RecordsOutput(StageOutput):
    """records/<task>: the task's records (and their metadata.json)."""
    task_dir: str


@dataclasses.dataclass(frozen=True)
class PretrainOutput(StageOutput):
    """pretrain: the LM's model directory (with `pretrain.enabled: false`, the
    imported one, and no curves or snapshots)."""
    model_dir: str
    curves: str | None = None     # curves.png
    snapshots: str | None = None  # step_<n> model directories (`pretrain.snapshots`)


@dataclasses.dataclass(frozen=True)
class TransferOutput(StageOutput):
    """transfer/<task>/<name>, and the start of every finetune record: the
    fine-tuned model directories by model key (`<task>/<variant><suffix>`)."""
    models: dict[str, str]
    # Model key -> the parameters its fine-tuning changed, counted while it trained
    # (None: the stage ran before they were recorded).
    trainable_parameters: dict[str, int] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetuneOutput(TransferOutput):
    """finetune/<task>: the pre-trained and scratch models, and the records
    they were trained on (evaluate scores their test split)."""
    task_dir: str


@dataclasses.dataclass(frozen=True)
class ZeroShotOutput(StageOutput):
    """zeroshot/<task>: the rows evaluate adds to its table, by model key."""
    metrics: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class EvaluateOutput(StageOutput):
    """evaluate: metrics.json, predictions/<task>.json and the figures asked for."""
    metrics: str
    predictions: str
    figure2: dict[str, str] | None = None  # its .png and .json
    data_efficiency: str | None = None


@dataclasses.dataclass(frozen=True)
class ExportOutput(StageOutput):
    """export: the SavedModel's version directory, the base directory a model
    server reads, and the name it serves the model under."""
    saved_model: str
    base_dir: str
    model_name: str


# The record each stage writes, by the first part of its name.
RECORDS: dict[str, type[StageOutput]] = {
    "import": ImportOutput, "vocab": VocabOutput, "corpus": CorpusOutput, "records": RecordsOutput,
    "pretrain": PretrainOutput, "finetune": FinetuneOutput, "transfer": TransferOutput, "zeroshot": ZeroShotOutput,
    "evaluate": EvaluateOutput, "export": ExportOutput,
}


@dataclasses.dataclass(frozen=True)
class StageResult:
    """What a stage's run returns: its outputs, and the metrics recorded beside them."""
    outputs: StageOutput
    metrics: dict[str, Any]

"""The analysis and export sections, and `ExperimentConfig`: a whole config
file, with the checks that span its sections."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, StrictBool, model_validator

from pipelines.config.data import DEFAULT_NUM_MERGES, PreprocessSpec
from pipelines.config.training import DEFAULT_PRESET, FinetuneSpec, ModelSpec, PretrainSpec
from pipelines.config.validation import Problems, Section, check, subsection


class PromptSpec(Section):
    """How a classification-like task is asked of the LM zero/few-shot."""
    template: str = "{text} very"  # the paper's sentiment heuristic: append "very"
    # One word per label, in label order (empty: the label names); or per label a list of
    # candidate words, of which the combination best on the validation split is kept.
    label_words: list[str | list[str]] = []


class AnalysisSpec(Section):
    """Transfer without (full) fine-tuning, beside the fine-tuned models: the
    paper's section 5 (zero-shot) and cheaper fine-tuning modes. Off by default;
    `pipelines/configs/analysis.yaml` turns it on over a finished demo run."""
    transfer: list[str] = []                  # more modes fine-tuned from the pre-trained model, compared
    learning_rates: dict[str, float] = {}     # per mode (default finetune.learning_rate)
    zero_shot: StrictBool = False             # score each task with the LM alone
    few_shot: list[int | Literal["max"]] = []  # demonstrations per query; "max": as many as fit
    calibrate: StrictBool = True              # label offsets / thresholds fitted on the validation split
    prompts: dict[str, PromptSpec] = {}       # per task name
    # The paper's Table 5: also fine-tune without the auxiliary LM loss (lambda = 0);
    # the full model and the one without pre-training are the finetune stage's.
    table5: StrictBool = False
    # The paper's Figure 2: fine-tune with 0..n_layer-1 pre-trained blocks (left), and
    # score every pre-training snapshot zero-shot (right; needs pretrain.snapshots).
    figure2: StrictBool = False
    # Data efficiency (the paper's and ULMFiT's argument): fine-tune the pre-trained model
    # and its scratch twin on only this many labelled examples (a random subset per seed,
    # nested across sizes); evaluate draws test accuracy against examples, up to all of them.
    data_efficiency: list[int] = []
    data_efficiency_min_steps: int | None = Field(None, ge=1)  # their finetune.min_steps (unset: finetune's)

    @model_validator(mode="after")
    def _values(self) -> "AnalysisSpec":
        from gpt_keras.transfer import MODES  # pylint: disable=g-import-not-at-top
        bad = [m for m in self.transfer + list(self.learning_rates) if m not in MODES]
        check(not bad, "transfer", f"unknown transfer mode(s) {bad}; modes are {', '.join(MODES)}")
        check(all(k == "max" or k > 0 for k in self.few_shot), "few_shot", "must be positive integers or 'max'")
        check(all(v > 0 for v in self.learning_rates.values()), "learning_rates", "must be > 0")
        check(all(n > 0 for n in self.data_efficiency) and len(set(self.data_efficiency)) == len(self.data_efficiency),
               "data_efficiency", f"must be distinct numbers of examples > 0; got {self.data_efficiency}")
        candidates = [task for task, prompt in self.prompts.items() if any(isinstance(w, list) for w in prompt.label_words)]
        check(self.calibrate or not candidates, "prompts",
               f"candidate label words ({', '.join(candidates)}) are chosen on the validation split: "
               "set analysis.calibrate: true, or give one word per label")
        return self


class ExportSpec(Section):
    base_dir: str = ""          # default: <work_dir>/serving
    model_name: str = ""        # default: the first task's name


class ExperimentConfig(Section):
    name: str = "demo"
    work_dir: str = "runs/demo"
    seed: int = 0
    model: ModelSpec = subsection()
    preprocess: PreprocessSpec = subsection()
    pretrain: PretrainSpec = subsection()
    finetune: FinetuneSpec = subsection()
    export: ExportSpec = subsection()
    analysis: AnalysisSpec = subsection()

    @model_validator(mode="after")
    def _sizes(self) -> "ExperimentConfig":
        problems = Problems()
        if self.model.init_from:
            self._init_from_keys(problems)  # sizes are the checkpoint's: pipelines.init_from checks them
        else:
            self._preset_sizes(problems)
        tasks = [t.name for t in self.preprocess.tasks]
        problems.check(not self.export.model_name or self.export.model_name in tasks, "export.model_name",
                       f"{self.export.model_name!r} is not a task in preprocess.tasks {tasks}")
        unknown = sorted(set(self.analysis.prompts) - set(tasks))
        problems.check(not unknown, "analysis.prompts", f"{unknown} are not tasks in preprocess.tasks {tasks}")
        problems.raise_found()
        return self

    def _preset_sizes(self, problems: Problems) -> None:
        if not problems.check(self.pretrain.enabled, "pretrain.enabled",
                              "false needs model.init_from (a checkpoint to fine-tune instead of pre-training); "
                              "set model.init_from=<dir> or pretrain.enabled=true"):
            return  # the sizes would be the checkpoint's: checking the preset's would only mislead
        config, want = self.model.gpt_config(), self.preprocess.n_ctx
        preset = f"model.preset={self.model.preset or DEFAULT_PRESET!r}"
        key = ("model.overrides.n_ctx={}" if "n_ctx" in self.model.overrides
               else f"{preset} has n_ctx={{}}").format(config.n_ctx)
        problems.check(config.n_ctx >= want, "", f"{key}, less than preprocess.n_ctx={want}: the model must fit "
                       f"the records; set model.overrides.n_ctx >= {want} or lower preprocess.n_ctx")
        problems.check(self.model.n_head is None, "model.n_head", "is for model.init_from in the original release "
                       "layout; set the heads with model.overrides.n_head")
        n = self.finetune.n_transfer
        problems.check(n is None or n <= config.n_layer, "finetune.n_transfer",
                       f"{n} is more than the model's {config.n_layer} blocks ({preset}); use 0..{config.n_layer} "
                       "or leave it unset (all)")

    def _init_from_keys(self, problems: Problems) -> None:
        problems.check(self.preprocess.num_merges is None, "preprocess.num_merges",
                       "asks for a learned vocabulary, but the vocabulary comes from model.init_from; remove "
                       "preprocess.num_merges (or model.init_from to pre-train from scratch)")

    @property
    def num_merges(self) -> int:
        """BPE merges of a learned vocabulary (`preprocess.num_merges` or the default)."""
        return self.preprocess.num_merges or DEFAULT_NUM_MERGES

    @property
    def export_task(self) -> str:
        """The task whose fine-tuned model `export` serves ("" without tasks)."""
        return self.export.model_name or next((t.name for t in self.preprocess.tasks), "")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

"""Stage outputs: typed records, recorded as the plain dicts the manifest has always held."""
import pytest

from pipelines.config.loading import load_config
from pipelines.resolve import resolve
from pipelines.stages.context import Context
from pipelines.stages.outputs import FinetuneOutput, PretrainOutput, RecordsOutput, TransferOutput, VocabOutput


def _context(artifacts: dict) -> Context:
    config = load_config("demo")
    return Context(config=config, resolved=resolve(config), beam_args=[], artifacts=artifacts, work_dir="w",
                   fingerprints={})


def test_a_record_is_written_as_the_dict_the_manifest_holds():
    # A disabled pretrain stage records its model directory only, as it always has.
    assert PretrainOutput("import/model").to_dict() == {"model_dir": "import/model"}
    recorded = {"models": {"t/pretrained": "p", "t/scratch": "s"}, "task_dir": "records/t/records",
                "trainable_parameters": {"t/pretrained": 10, "t/scratch": 10}}
    assert FinetuneOutput.from_dict(recorded).to_dict() == recorded


def test_a_stage_output_is_read_as_its_record():
    ctx = _context({"vocab": {"vocab_dir": "v"}, "finetune/t": {"models": {"t/pretrained": "p"}, "task_dir": "d"}})
    assert ctx.output("vocab", VocabOutput).vocab_dir == "v"
    fine_tuned = ctx.output("finetune/t", TransferOutput)  # a finetune record is a transfer record, and more
    assert isinstance(fine_tuned, FinetuneOutput) and fine_tuned.task_dir == "d"
    assert fine_tuned.trainable_parameters is None  # recorded before stages counted them
    with pytest.raises(AttributeError):
        ctx.output("vocab", VocabOutput).vocab_dri  # noqa: B018  (a typo fails where it is written)


def test_a_missing_output_names_the_stage_to_run():
    ctx = _context({})
    with pytest.raises(RuntimeError, match=r"stage output pretrain.model_dir is missing: run the 'pretrain' stage"):
        ctx.output("pretrain", PretrainOutput)
    with pytest.raises(RuntimeError, match=r"records/t.task_dir is missing: run the 'preprocess' stage first"):
        ctx.output("records/t", RecordsOutput)


def test_a_stage_is_read_only_as_the_record_it_writes():
    ctx = _context({"vocab": {"vocab_dir": "v"}})
    with pytest.raises(TypeError, match="stage 'vocab' does not record a PretrainOutput but a VocabOutput"):
        ctx.output("vocab", PretrainOutput)
    with pytest.raises(TypeError, match="stage 'tokens' does not record a VocabOutput"):
        ctx.output("tokens", VocabOutput)

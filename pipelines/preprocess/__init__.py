"""Apache Beam preprocessing: raw corpora and labeled tasks -> TFRecords.

    from pipelines.preprocess import run_vocab, run_corpus, run_task
    run_vocab(["corpus/*.txt.gz"], "out/vocab", num_merges=8000)
    run_corpus(["corpus/*.txt.gz"], "out/lm", "out/vocab", n_ctx=128, val_fraction=0.01)
    run_task({"train": "sst/train.tsv", "validation": "sst/dev.tsv"}, "classification",
             {"text": "sentence"}, "out/sst2", "out/vocab", n_ctx=128)

Each returns a summary dict and writes, in its output directory, the shards,
`metadata.json`, `stats.json` and `dead_letter.jsonl` (see gpt_keras.schema).
`pipeline_args` are Beam options; the default runner is the in-process
FnApiRunner (offline). See docs/preprocess.md and `python -m pipelines.preprocess --help`.
"""
from pipelines.preprocess.common import PreprocessError
from pipelines.preprocess.corpus import pack_documents, run_corpus
from pipelines.preprocess.options import create_pipeline, pipeline_options
from pipelines.preprocess.readers import InputSpec, memory_input, parse_input
from pipelines.preprocess.task import TFDS_TASKS, run_task
from pipelines.preprocess.vocab import run_vocab

__all__ = ["run_vocab", "run_corpus", "run_task", "PreprocessError", "InputSpec", "memory_input", "parse_input",
           "pack_documents", "pipeline_options", "create_pipeline", "TFDS_TASKS"]

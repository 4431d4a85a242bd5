"""Apache Beam preprocessing: raw corpora and labeled tasks -> TFRecords.

    from pipelines.preprocess import PreprocessOptions, run_vocab, run_corpus
    from pipelines.preprocess.task import run_task
    options = PreprocessOptions(clean_html=True, mode="hf")
    run_vocab(["corpus/*.txt.gz"], "out/vocab", num_merges=8000, options=options)
    run_corpus(["corpus/*.txt.gz"], "out/lm", "out/vocab", n_ctx=128, val_fraction=0.01, options=options)
    run_task({"train": "sst/train.tsv", "validation": "sst/dev.tsv"}, "classification",
             {"text": "sentence"}, "out/sst2", "out/vocab", n_ctx=128, options=options)

Each returns a summary dict and writes, in its output directory, the shards,
`metadata.json`, `stats.json` and `dead_letter.jsonl` (see gpt_keras.schema).
`pipeline_args` are Beam options; the default runner is the in-process
FnApiRunner (offline). See docs/preprocess.md and `python -m pipelines.preprocess --help`.

Each job (vocab.py, corpus.py, task.py) reads as a graph, top to bottom:
`readers.ReadInputs` -> its own steps -> `sinks.Finish` (dead letter, stats,
report); `runner.execute` runs it. `run_task` is not imported here: the task
job imports TensorFlow (its transform), and every Beam worker imports this
package to unpickle its DoFns, so vocabulary and corpus workers would load
TensorFlow for nothing.
"""
from pipelines.preprocess.corpus import pack_documents, run_corpus
from pipelines.preprocess.errors import PreprocessError
from pipelines.preprocess.inputs import InputSpec, memory_input, parse_input
from pipelines.preprocess.options import PreprocessOptions
from pipelines.preprocess.runner import create_pipeline, pipeline_options
from pipelines.preprocess.vocab import run_vocab

__all__ = ["run_vocab", "run_corpus", "PreprocessOptions", "PreprocessError", "InputSpec", "memory_input",
           "parse_input", "pack_documents", "pipeline_options", "create_pipeline"]

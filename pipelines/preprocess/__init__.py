"""Apache Beam preprocessing: raw corpora and labeled tasks -> TFRecords.

    from pipelines.preprocess import PreprocessOptions, run_vocab, run_corpus, run_task
    options = PreprocessOptions(clean_html=True, mode="hf")
    run_vocab(["corpus/*.txt.gz"], "out/vocab", num_merges=8000, options=options)
    run_corpus(["corpus/*.txt.gz"], "out/lm", "out/vocab", n_ctx=128, val_fraction=0.01, options=options)
    run_task({"train": "sst/train.tsv", "validation": "sst/dev.tsv"}, "classification",
             {"text": "sentence"}, "out/sst2", "out/vocab", n_ctx=128, options=options)

Each returns a summary dict and writes, in its output directory, the shards,
`metadata.json`, `stats.json` and `dead_letter.jsonl` (see gpt_keras.schema).
`pipeline_args` are Beam options; the default runner is the in-process
FnApiRunner (offline). See docs/preprocess.md and `python -m pipelines.preprocess --help`.

Names load on first use (PEP 562): a Beam worker that unpickles a corpus DoFn
imports only what that DoFn needs (no TensorFlow, no Keras).
"""
import importlib as _importlib

_LAZY = {
    "run_vocab": "vocab", "run_corpus": "corpus", "pack_documents": "corpus", "run_task": "task",
    "TFDS_TASKS": "task", "PreprocessError": "common", "PreprocessOptions": "options",
    "pipeline_options": "options", "create_pipeline": "runner", "InputSpec": "inputs", "memory_input": "inputs",
    "parse_input": "inputs",
}

__all__ = ["run_vocab", "run_corpus", "run_task", "PreprocessOptions", "PreprocessError", "InputSpec",
           "memory_input", "parse_input", "pack_documents", "pipeline_options", "create_pipeline", "TFDS_TASKS"]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pipelines.preprocess' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f"pipelines.preprocess.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))

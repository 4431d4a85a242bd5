"""Where the time of one classify request goes, stage by stage, in process.

The exported `classify` signature of a 2-label classifier (random weights,
`--preset`, default `demo`) runs, for one Rotten Tomatoes sentence:

    parse the tf.Example -> cut + tokenize -> task transform + pad -> model -> outputs

Each prefix of that chain is traced as its own tf.function from the export's
`TaskServingModule` (the same objects the SavedModel is saved from), and all
are timed round-robin (one call each in turn, in a rotating order, so that
they share the machine's load). A stage's time is the difference between two
consecutive prefixes (the first, `parse`, includes entering a graph at
all); `module` is the whole classify function in process (the
model in length buckets, `gpt_keras.export.bucketing`, and the outputs), and
`signature` the loaded SavedModel's `classify` signature (what a server
calls). `model` alone, on the batch padded as one, shows what the buckets
save. Every figure is also printed as a ratio to `signature`.

    python bench/profile_serving.py [--preset demo] [--requests 300] [--batch 1] [--intra_op_threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tensorflow as tf  # noqa: E402

import gpt_keras as gk  # noqa: E402
from bench_serving import bench_tokenizer, example_bytes, movie_reviews, time_interleaved  # noqa: E402
from gpt_keras.export import TaskServingModule, export_task_model  # noqa: E402
from gpt_keras.preprocessor import pad  # noqa: E402
from machine import cpu_flags, machine_line  # noqa: E402


def stage_functions(module: TaskServingModule) -> dict:
    """{name: tf.function of serialized examples [b]} for each prefix of the
    classify chain, plus `model` (the model alone, on padded ids)."""
    pre = module.preprocessor
    string = [tf.TensorSpec([None], tf.string)]

    def parse(e):
        return module.parse_examples(e)["text"]

    def tokenize(e):
        return pre.tokenize(module.parse_examples(e))["text"].flat_values

    def transform(e):
        built = pre.transform(pre.tokenize(module.parse_examples(e)))
        return pad(built["token_ids"])

    functions = {name: tf.function(fn, input_signature=string, autograph=False)
                 for name, fn in (("parse", parse), ("tokenize", tokenize),
                                  ("transform", transform))}
    ids = tf.TensorSpec([None, 1, None], tf.int32)
    functions["model"] = tf.function(lambda x: module.model(x, training=False), autograph=False,
                                     input_signature=[{"token_ids": ids, "padding_mask": ids}])
    return functions


def profile(preset: str, tok, texts: list[str], requests: int, batch: int, work: str) -> dict:
    """Median ms per call of every stage function and of the loaded signature."""
    config = gk.GPTConfig.from_preset(preset, vocab_size=tok.n_vocab)
    model = gk.GPTTaskModel(gk.GPTBackbone(**config.to_dict()), "classification", num_labels=2)
    path = export_task_model(model, tok, work, preset, label_names=["neg", "pos"])
    module = TaskServingModule(model, tok, ["neg", "pos"])
    functions = stage_functions(module)
    concrete = module.signatures()["classify"]
    functions["module"] = lambda e: concrete(inputs=e)  # in process, before saving
    loaded = tf.saved_model.load(path).signatures["classify"]
    functions["signature"] = lambda e: loaded(inputs=e)

    examples = [tf.constant([example_bytes(texts[(i * batch + k) % len(texts)]) for k in range(batch)])
                for i in range(requests)]
    padded = [functions["transform"](e) for e in examples]
    inputs = {name: padded if name == "model" else examples for name in functions}

    def run(fn):
        return lambda x: tf.nest.map_structure(lambda t: t.numpy(), fn(x))

    times = time_interleaved({name: run(fn) for name, fn in functions.items()}, inputs, warmup=10)
    ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    stages = {"entering a graph + parse tf.Example": ms["parse"],
              "tokenizer": ms["tokenize"] - ms["parse"], "transform + pad": ms["transform"] - ms["tokenize"],
              "model in length buckets + outputs": ms["module"] - ms["transform"],
              "saved vs in-process function": ms["signature"] - ms["module"]}
    # The model alone on the batch padded as one (what the buckets save on a long batch).
    stages["(model alone, one padded batch)"] = ms["model"]
    return {"preset": preset, "batch": batch, "median_ms": {k: round(v, 3) for k, v in ms.items()},
            "stages_ms": {k: round(v, 3) for k, v in stages.items()},
            "stages_ratio_to_signature": {k: round(v / ms["signature"], 3) for k, v in stages.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--requests", type=int, default=300, help="timed calls of each stage")
    parser.add_argument("--batch", type=int, default=1, help="sentences per call")
    parser.add_argument("--merges", type=int, default=8000, help="BPE merges of the benchmark tokenizer")
    parser.add_argument("--intra_op_threads", type=int, default=0, help="TensorFlow intra-op threads (0 = default)")
    args = parser.parse_args(argv)
    if args.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    tok = bench_tokenizer(args.merges)
    texts = movie_reviews("rotten_tomatoes")[:1000]
    print(machine_line(), flush=True)
    with tempfile.TemporaryDirectory() as work:
        result = profile(args.preset, tok, texts, args.requests, args.batch, work)
    result["load_average_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=1))
    width = max(map(len, result["stages_ms"]))
    for name, value in result["stages_ms"].items():
        print(f"{name:<{width}}  {value:7.3f} ms  {result['stages_ratio_to_signature'][name]:6.3f} x signature")
    print(f"{'signature':<{width}}  {result['median_ms']['signature']:7.3f} ms  (python {platform.python_version()}, "
          f"tf {tf.__version__}; flags: {cpu_flags()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

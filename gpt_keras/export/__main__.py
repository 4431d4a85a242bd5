"""`python -m gpt_keras.export`: export a model for TF Serving.

    python -m gpt_keras.export --model runs/demo/finetune/rt_polarity/pretrained \\
        --base_dir exports --model_name sentiment
    python -m gpt_keras.export --model runs/demo/pretrain/model --base_dir exports --model_name gpt \\
        --max_new_tokens 64
    python -m gpt_keras.export --model lm.keras --tokenizer vocab/ --base_dir exports --model_name gpt

`--model` is a model directory (`gpt_keras.saving`: its tokenizer and label
names come with it) or a `.keras` file plus `--tokenizer`. A fine-tuned
model gets the task signatures, a pre-trained one the generation signatures
(see docs/serving.md). Prints the version directory written.
"""
from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpt_keras.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True,
                        help="a model directory, or a .keras file holding a GPTTaskModel or GPTLMModel")
    parser.add_argument("--tokenizer", default=None,
                        help="vocabulary directory (default: the model directory's own tokenizer)")
    parser.add_argument("--tokenizer_mode", default=None,
                        help="encoding mode (hf or original) of a --tokenizer without a recorded mode")
    parser.add_argument("--base_dir", required=True, help="TF Serving model base directory")
    parser.add_argument("--model_name", required=True, help="served model name (a directory under base_dir)")
    parser.add_argument("--version", type=int, default=None, help="default: the next free version")
    parser.add_argument("--label_names", default=None,
                        help="comma-separated class names (default: the model's own, else 0..n-1)")
    parser.add_argument("--max_new_tokens", type=int, default=64, help="LM: upper bound on new tokens per request")
    parser.add_argument("--max_text_bytes", type=int, default=None, help="per-string byte cut (default 64*n_ctx)")
    parser.add_argument("--weights", choices=("fp32", "bf16", "auto"), default="fp32",
                        help="LM: serve bf16 copies of the matrices (half the bytes per generated token); "
                             "auto: bf16 where that decodes faster on this machine (a CPU with AMX)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from gpt_keras import saving  # pylint: disable=g-import-not-at-top
    from gpt_keras.export import export_lm, export_task_model  # pylint: disable=g-import-not-at-top
    from gpt_keras.model import GPTTaskModel  # pylint: disable=g-import-not-at-top
    from gpt_keras.tokenizer import GPTTokenizer  # pylint: disable=g-import-not-at-top

    try:
        if args.model.endswith(".keras"):
            import keras  # pylint: disable=g-import-not-at-top
            model, tokenizer = keras.models.load_model(args.model), None
        else:
            model, tokenizer = saving.load_model(args.model)
        if args.tokenizer:
            tokenizer = GPTTokenizer.load(args.tokenizer, mode=args.tokenizer_mode)
        if tokenizer is None:
            raise ValueError(f"{args.model} carries no tokenizer; pass --tokenizer DIR")
        if isinstance(model, GPTTaskModel):
            labels = args.label_names.split(",") if args.label_names else None
            path = export_task_model(model, tokenizer, args.base_dir, args.model_name, args.version, labels,
                                     args.max_text_bytes)
        else:
            path = export_lm(model, tokenizer, args.base_dir, args.model_name, args.version, args.max_new_tokens,
                             max_text_bytes=args.max_text_bytes, weights=args.weights)
    except (ValueError, TypeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

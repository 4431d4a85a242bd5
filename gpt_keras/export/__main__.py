"""`python -m gpt_keras.export`: export a saved Keras model for TF Serving.

    python -m gpt_keras.export --model run/classifier.keras --tokenizer vocab/ \\
        --base_dir exports --model_name sentiment --label_names neg,pos
    python -m gpt_keras.export --model run/lm.keras --tokenizer vocab/ \\
        --base_dir exports --model_name gpt --max_new_tokens 64

A `GPTTaskModel` gets the task signatures, a `GPTLMModel` the generation
signatures (see docs/serving.md). Prints the version directory written.
"""
from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpt_keras.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a .keras file holding a GPTTaskModel or GPTLMModel")
    parser.add_argument("--tokenizer", required=True, help="vocabulary directory (GPTTokenizer.load)")
    parser.add_argument("--tokenizer_mode", default="hf", help="tokenizer encoding mode (hf or original)")
    parser.add_argument("--base_dir", required=True, help="TF Serving model base directory")
    parser.add_argument("--model_name", required=True, help="served model name (a directory under base_dir)")
    parser.add_argument("--version", type=int, default=None, help="default: the next free version")
    parser.add_argument("--label_names", default=None, help="comma-separated class names (classification-like)")
    parser.add_argument("--max_new_tokens", type=int, default=64, help="LM: upper bound on new tokens per request")
    parser.add_argument("--max_text_bytes", type=int, default=None, help="per-string byte cut (default 64*n_ctx)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import keras  # pylint: disable=g-import-not-at-top

    from gpt_keras.export import export_lm, export_task_model  # pylint: disable=g-import-not-at-top
    from gpt_keras.model import GPTTaskModel  # pylint: disable=g-import-not-at-top
    from gpt_keras.tokenizer import GPTTokenizer  # pylint: disable=g-import-not-at-top

    try:
        model = keras.models.load_model(args.model)
        tokenizer = GPTTokenizer.load(args.tokenizer, mode=args.tokenizer_mode)
        if isinstance(model, GPTTaskModel):
            labels = args.label_names.split(",") if args.label_names else None
            path = export_task_model(model, tokenizer, args.base_dir, args.model_name, args.version, labels,
                                     args.max_text_bytes)
        else:
            path = export_lm(model, tokenizer, args.base_dir, args.model_name, args.version, args.max_new_tokens,
                             max_text_bytes=args.max_text_bytes)
    except (ValueError, TypeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

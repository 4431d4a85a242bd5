"""`python -m gpt_keras.generate --model DIR --prompt TEXT [...]`: generate text
with a gpt_keras language model (`gpt_keras.generate.generate`)."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from gpt_keras import precision
from gpt_keras.compress import WEIGHT_FORMATS
from gpt_keras.generate import STRATEGIES, as_backbone, generate


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    """(backbone, tokenizer) from `--model`: a model directory (pre-trained or
    fine-tuned: its backbone generates), or a `.keras` GPTLMModel file with `--tokenizer DIR`."""
    from gpt_keras import saving  # pylint: disable=g-import-not-at-top

    if args.model.endswith(".keras"):
        import keras  # pylint: disable=g-import-not-at-top
        backbone, tokenizer = as_backbone(keras.models.load_model(args.model)), None
    else:
        backbone, tokenizer = saving.load_backbone(args.model), saving.load_tokenizer(args.model)
    if args.tokenizer:
        from gpt_keras.tokenizer import GPTTokenizer  # pylint: disable=g-import-not-at-top
        tokenizer = GPTTokenizer.load(args.tokenizer)
    if tokenizer is None:
        raise ValueError(f"No tokenizer found for {args.model}; pass --tokenizer DIR (a vocabulary directory)")
    return backbone, tokenizer


def main(argv: list[str] | None = None) -> int:
    """`python -m gpt_keras.generate --model DIR --prompt TEXT [...]`."""
    parser = argparse.ArgumentParser(prog="python -m gpt_keras.generate",
                                     description="Generate text with a gpt_keras language model.")
    parser.add_argument("--model", required=True,
                        help="gpt_keras model directory (gpt_keras.saving; foreign checkpoints: gpt_keras.convert), "
                             "or a .keras GPTLMModel file")
    parser.add_argument("--tokenizer", default=None,
                        help="vocabulary directory (default: the one in --model)")
    parser.add_argument("--prompt", required=True, action="append",
                        help="prompt text; repeat for a batch")
    parser.add_argument("--max_new_tokens", type=int, default=50)
    parser.add_argument("--strategy", choices=STRATEGIES, default="greedy")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top_k", type=int, default=0, help="0 = off")
    parser.add_argument("--top_p", type=float, default=1.0, help="1.0 = off")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--stop", type=int, action="append", default=[], help="stop token id (repeatable)")
    parser.add_argument("--no_xla", action="store_true", help="run the decode loop without XLA")
    parser.add_argument("--weights", choices=(precision.AUTO, *WEIGHT_FORMATS), default=precision.AUTO,
                        help="weights to generate with: bf16 reads half the bytes per token (gpt_keras.compress); "
                             "auto: bf16 where that is faster (one prompt, a CPU with AMX)")
    args = parser.parse_args(argv)
    try:
        backbone, tokenizer = _load(args)
        prompts = [tokenizer.encode(text) for text in args.prompt]
        outputs = generate(backbone, prompts, args.max_new_tokens, strategy=args.strategy,
                           temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                           stop_token_ids=args.stop, jit_compile=False if args.no_xla else None,
                           weights=args.weights)
    except (ValueError, TypeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # Decoding prompt + continuation together joins the BPE pieces correctly.
    for i, (prompt, new) in enumerate(zip(prompts, outputs)):
        text = tokenizer.decode(prompt + new)
        print(text if len(prompts) == 1 else f"[{i}] {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m gpt_keras.convert {import,export-hf,export-original} SRC DST`.

    python -m gpt_keras.convert import openai_release/ models/gpt1 --n-head 12
    python -m gpt_keras.convert export-hf models/gpt1 hf_out/
    python -m gpt_keras.convert export-original models/gpt1 release_out/ --shards 10
"""
from __future__ import annotations

import argparse
import logging
import sys

from gpt_keras import saving
from gpt_keras.convert import convert_checkpoint, hf, load_any, original
from gpt_keras.saving import ModelDirectoryError, detect_format


def main(argv: list[str] | None = None) -> int:
    """`python -m gpt_keras.convert {import,export-hf,export-original} SRC DST`."""
    parser = argparse.ArgumentParser(
        prog="python -m gpt_keras.convert",
        description="Convert GPT-1 checkpoints between the original OpenAI release, HF openai-gpt and gpt_keras.")
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="original release or HF openai-gpt dir -> gpt_keras model dir")
    imp.add_argument("src")
    imp.add_argument("dst")
    imp.add_argument("--n-head", type=int, default=None,
                     help="heads (original releases carry no config; default n_embd // 64)")
    imp.add_argument("--no-special-tokens", action="store_true", help="do not add the 3 special-token rows")
    imp.add_argument("--seed", type=int, default=0, help="seed of the new special-token rows")
    imp.add_argument("--no-vocab", action="store_true", help="convert the weights only, ignoring vocabulary files")
    imp.add_argument("--tokenizer-mode", choices=("original", "hf"), default=None,
                     help="text handling of the tokenizer (default: the source's own)")
    for name, what in (("export-hf", "HF layout (config.json + model.safetensors)"),
                       ("export-original", "original release layout (params_*.npy)")):
        exp = sub.add_parser(name, help=f"gpt_keras model dir (or any supported dir) -> {what}")
        exp.add_argument("src")
        exp.add_argument("dst")
    sub.choices["export-original"].add_argument("--shards", type=int, default=10)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if args.command == "import":
            out = convert_checkpoint(args.src, args.dst, n_head=args.n_head,
                                     add_special_tokens=not args.no_special_tokens, seed=args.seed,
                                     include_vocab=not args.no_vocab, tokenizer_mode=args.tokenizer_mode)
        else:
            if detect_format(args.src) == "gpt_keras":
                backbone, tokenizer = saving.load_backbone(args.src), saving.load_tokenizer(args.src)
            else:
                backbone, tokenizer = load_any(args.src), None
            if args.command == "export-hf":
                out = hf.export_hf(backbone, args.dst, tokenizer)
            else:
                out = original.write_original(backbone, args.dst, args.shards)
                if tokenizer is not None:
                    tokenizer.save(str(out), format="original")
    except ModelDirectoryError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

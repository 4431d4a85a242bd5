"""Released weights that ship inside the package, by name.

`gpt_keras/weights/<name>/` is a model directory (`gpt_keras.saving`) whose
weights are stored as float16 (half the bytes; they load as float32), beside
`MANIFEST.json`: the command that trained it, the machine and the hours it
took, its held-out perplexity. A name works wherever a model directory does:

    GPTBackbone.from_preset("demo_imdb")       # keras-hub style
    python pipelines/run.py --set model.init_from=demo_imdb

Write one from a trained model directory with
`python -m gpt_keras.releases --model_dir DIR --name NAME --manifest FILE.json`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from gpt_keras.config import PRESETS

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST_FILE = "MANIFEST.json"
MAX_BYTES = 20 << 20  # what a repository should carry
# What a manifest must say, so that a user can judge and reproduce the weights.
MANIFEST_KEYS = ("command", "machine", "hours", "held_out_perplexity")


def names(root: Path | None = None) -> list[str]:
    """The released models shipped here (`root`: another folder of releases)."""
    return sorted(p.parent.name for p in (root or WEIGHTS_DIR).glob(f"*/{MANIFEST_FILE}"))


def path(name: str, root: Path | None = None) -> Path | None:
    """The model directory of released model `name`, or None."""
    directory = (root or WEIGHTS_DIR) / name
    return directory if name and "/" not in name and (directory / MANIFEST_FILE).is_file() else None


def resolve_preset(preset: str | os.PathLike[str]) -> Path | None:
    """The model directory `preset` names (a directory, or a released model's
    name), or None for a preset name (`gpt_keras.config.PRESETS`: random weights)."""
    if isinstance(preset, str) and not os.path.isdir(preset):
        if preset in PRESETS:
            return None
        released = path(preset)
        if released is not None:
            return released
    directory = Path(preset)
    if directory.is_dir():
        return directory
    raise ValueError(f"{preset!r} is neither a preset ({sorted(PRESETS)}), a released model ({names()}) "
                     "nor a model directory")


def manifest(name: str, root: Path | None = None) -> dict[str, Any]:
    """The manifest of released model `name`."""
    directory = path(name, root)
    if directory is None:
        raise ValueError(f"no released model {name!r}; released: {names(root)}")
    return json.loads((directory / MANIFEST_FILE).read_text())


def _copy_as_float16(source: Path, target: Path) -> None:
    """Writes h5 weights file `source` to `target` with every float32 dataset as
    float16 (a new file: HDF5 does not give back the space of a dataset deleted in place)."""
    with h5py.File(source, "r") as src, h5py.File(target, "w") as dst:
        dst.attrs.update(src.attrs)

        def copy(name: str, item: Any) -> None:
            if isinstance(item, h5py.Group):
                dst.require_group(name).attrs.update(item.attrs)
                return
            data = item[()]
            if data.dtype == np.float32:
                if np.abs(data).max(initial=0.0) >= np.finfo(np.float16).max:
                    raise ValueError(f"{source}: {name} holds values beyond float16's range")
                data = data.astype(np.float16)
            dst.create_dataset(name, data=data).attrs.update(item.attrs)

        src.visititems(copy)


def write_release(model_dir: str | Path, name: str, facts: dict[str, Any], root: Path | None = None) -> Path:
    """Copies model directory `model_dir` to `root/name` with float16 weights and
    a manifest of `facts` (MANIFEST_KEYS at least) plus the files' sizes and
    sha256; refuses a release over MAX_BYTES. Returns the new directory."""
    from gpt_keras import saving  # pylint: disable=g-import-not-at-top  (keeps name look-ups free of Keras)

    missing = [k for k in MANIFEST_KEYS if k not in facts]
    if missing:
        raise ValueError(f"the manifest needs {missing} (what trained the weights, where, how long, how well)")
    if not name.replace("_", "").isalnum():
        raise ValueError(f"a release name is an identifier (letters, digits, _), got {name!r}")
    saving.load_backbone(model_dir)  # a readable model directory, before anything is written
    target = (root or WEIGHTS_DIR) / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(model_dir, target, ignore=shutil.ignore_patterns("*.weights.h5"))
    for weights_file in Path(model_dir).glob("*.weights.h5"):
        _copy_as_float16(weights_file, target / weights_file.name)
    files = {p.name: {"bytes": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
             for p in sorted(target.iterdir()) if p.is_file()}
    total = sum(f["bytes"] for f in files.values())
    if total > MAX_BYTES:
        shutil.rmtree(target)
        raise ValueError(f"{name}: {total / 2**20:.1f} MiB is more than a release may carry ({MAX_BYTES >> 20} MiB)")
    record = {"name": name, **facts, "weights_dtype": "float16", "files": files}
    (target / MANIFEST_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True, help="a trained gpt_keras model directory")
    parser.add_argument("--name", required=True, help="the release's name (gpt_keras/weights/<name>)")
    parser.add_argument("--manifest", required=True,
                        help=f"a JSON file with at least {', '.join(MANIFEST_KEYS)} (what, where, how long, how well)")
    args = parser.parse_args(argv)
    try:
        facts = json.loads(Path(args.manifest).read_text())
        print(write_release(args.model_dir, args.name, facts))
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Stable splits: the fractions a run draws, the content hash that picks a
row's split, and the plan of which splits a run writes."""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Mapping, Sequence

from gpt_keras import schema
from pipelines.preprocess.inputs import ResolvedInput


def resolve_split_fractions(val_fraction: float | None = None,
                            fractions: Mapping[str, float] | None = None) -> dict[str, float]:
    """{"train": 1 - v, "validation": v} or explicit fractions (validated, in order).

    Splits with fraction 0 are left out."""
    if fractions is None:
        v = 0.0 if val_fraction is None else float(val_fraction)
        if not 0.0 <= v < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
        fractions = {"train": 1.0 - v, "validation": v}
    elif val_fraction is not None:
        raise ValueError("give either val_fraction or split_fractions, not both")
    fractions = {str(k): float(v) for k, v in fractions.items()}
    if any(v < 0 for v in fractions.values()) or abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    return {k: v for k, v in fractions.items() if v > 0}


def split_plan(resolved: Sequence[ResolvedInput],
               fractions: Mapping[str, float]) -> tuple[dict[str, float | None], bool]:
    """({split: hash fraction, or None for splits given with the input}, any hash split);
    split names are checked here, before any work."""
    kept = sorted({s for r in resolved for s in r.kept_splits})
    hashed = any(not r.kept_splits for r in resolved)
    plan = {**(dict(fractions) if hashed else {}), **{k: None for k in kept}}
    for name in plan:
        schema.shard_prefix(name)
    return plan, hashed


def content_digest(parts: Sequence[str], salt: str = "") -> bytes:
    """sha256 over the salt and the parts (length-prefixed, so ("ab","c") != ("a","bc")).

    hashlib, never `hash()`: the value must be the same in every process and run."""
    h = hashlib.sha256(salt.encode("utf-8") + b"\x00")
    for part in parts:
        data = part.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.digest()


@dataclasses.dataclass(frozen=True)
class SplitAssigner:
    """Maps a content digest to a split: its first 8 bytes as a number in
    [0, 1), compared against the cumulative fractions (in the given order)."""

    fractions: tuple[tuple[str, float], ...]

    @classmethod
    def create(cls, fractions: Mapping[str, float]) -> "SplitAssigner":
        """An assigner over {split: fraction}, in that order."""
        return cls(tuple(fractions.items()))

    def __call__(self, digest: bytes) -> str:
        u = int.from_bytes(digest[:8], "big") / 2.0 ** 64
        edge = 0.0
        for name, fraction in self.fractions:
            edge += fraction
            if u < edge:
                return name
        return self.fractions[-1][0]  # rounding at the top edge

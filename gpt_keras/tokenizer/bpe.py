"""Byte-pair encoding in Python: applying merges and learning them.

Written here rather than taken from HF `tokenizers` because the library must
run without the `[parity]` extra, learning must be reproducible bit for bit
(fixed tie-break below) and the counting step must be separable for Beam.
"""
from __future__ import annotations

import collections
import heapq
from typing import Iterable, Mapping

from gpt_keras.tokenizer.vocab_io import EOW

Pair = tuple[str, str]


def word_symbols(word: str) -> tuple[str, ...]:
    """Initial symbols of a word: its characters, the last one marked `</w>`."""
    return tuple(word[:-1]) + (word[-1] + EOW,)


def merge_pair(symbols: tuple[str, ...], first: str, second: str) -> tuple[str, ...]:
    """Merges every occurrence of (first, second), left to right, no overlap."""
    out, i, n = [], 0, len(symbols)
    while i < n:
        if i < n - 1 and symbols[i] == first and symbols[i + 1] == second:
            out.append(first + second)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def apply_bpe(word: str, ranks: Mapping[Pair, int]) -> tuple[str, ...]:
    """BPE of one normalized word, as the original `TextEncoder.bpe`: repeatedly
    merge the lowest-ranked adjacent pair (all its occurrences) until none is left."""
    symbols = word_symbols(word)
    while len(symbols) > 1:
        pairs = set(zip(symbols, symbols[1:]))
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        symbols = merge_pair(symbols, *best)
    return symbols


def learn_merges(word_counts: Mapping[str, int], num_merges: int,
                 min_frequency: int = 2) -> tuple[list[str], list[Pair]]:
    """Learns up to `num_merges` merges -> (base symbols, merges).

    Each step merges the pair with the highest corpus count; ties go to the
    smallest (left, right) in code point order, so the result depends only on
    the counts (not on dict order or `hash()`). Stops early when the best
    count drops below `min_frequency`. Base symbols are ordered by
    descending frequency, then code point order.
    Pair counts are updated incrementally (only words containing the merged
    pair are touched) with a lazy max-heap, so 40k merges stay practical.
    """
    items = sorted((w, c) for w, c in word_counts.items() if c > 0)
    for w, c in items[:1] + items[-1:]:
        if not isinstance(w, str) or not isinstance(c, int):
            raise TypeError(f"word_counts must map str -> int, got {type(w).__name__} -> {type(c).__name__}")
    bad = next((w for w, _ in items if not w or " " in w), None)
    if bad is not None:
        raise ValueError(f"word_counts holds {bad!r}: words must be non-empty and contain no space "
                         f"(count pre-tokenized words, e.g. with count_words).")
    words = [word_symbols(w) for w, _ in items]
    counts = [c for _, c in items]

    symbol_freq: collections.Counter = collections.Counter()
    pair_counts: collections.Counter = collections.Counter()
    where: dict[Pair, set[int]] = collections.defaultdict(set)
    for i, (symbols, count) in enumerate(zip(words, counts)):
        for s in symbols:
            symbol_freq[s] += count
        for pair in zip(symbols, symbols[1:]):
            pair_counts[pair] += count
            where[pair].add(i)
    base = sorted(symbol_freq, key=lambda s: (-symbol_freq[s], s))

    heap = [(-c, a, b) for (a, b), c in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[Pair] = []
    done: set[Pair] = set()
    while heap and len(merges) < num_merges:
        neg, a, b = heapq.heappop(heap)
        if pair_counts.get((a, b), 0) != -neg or (a, b) in done:
            continue  # stale heap entry
        if -neg < min_frequency:
            break
        merges.append((a, b))
        done.add((a, b))
        changed: set[Pair] = set()
        for i in where.pop((a, b), ()):
            old = words[i]
            new = merge_pair(old, a, b)
            if new == old:
                continue
            count = counts[i]
            for pair in zip(old, old[1:]):
                pair_counts[pair] -= count
                changed.add(pair)
            for pair in zip(new, new[1:]):
                pair_counts[pair] += count
                where[pair].add(i)
                changed.add(pair)
            words[i] = new
        for pair in changed:
            c = pair_counts[pair]
            if c <= 0:
                del pair_counts[pair]
            elif pair not in done:
                heapq.heappush(heap, (-c, *pair))
    return base, merges


def count_pretokenized(words_per_text: Iterable[Iterable[str]]) -> collections.Counter:
    """Counts words from an iterable of word lists."""
    counter: collections.Counter = collections.Counter()
    for words in words_per_text:
        counter.update(words)
    return counter

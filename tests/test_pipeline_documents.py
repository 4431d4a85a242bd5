"""`preprocess.corpus.text_unit`: a document of several sentences is packed
into windows that hold its sentences in order, and the split is by document."""
import re

import numpy as np
import yaml

from gpt_keras import data as gk_data
from gpt_keras.tokenizer import GPTTokenizer
from pipelines.config.loading import load_config
from pipelines.run import run

WORDS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen".split()
BOOKS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]


def _books(tmp_path):
    """Each file a book: one sentence per line, numbered in order."""
    for book in BOOKS:
        lines = [f"{book} sentence {WORDS[k]} ." for k in range(len(WORDS))]
        (tmp_path / f"{book}.txt").write_text("\n".join(lines) + "\n")
    return str(tmp_path / "*.txt")


def test_file_documents_keep_sentences_in_order_and_split_by_book(tmp_path):
    config = {"name": "books", "work_dir": str(tmp_path / "work"), "seed": 1, "model": {"preset": "tiny"},
              "preprocess": {"num_merges": 40, "n_ctx": 32, "val_fraction": 0.25,
                             "corpus": {"input": {"paths": [_books(tmp_path)], "format": "text"},
                                        "text_unit": "file", "max_document_bytes": 4096}}}
    path = tmp_path / "books.yaml"
    path.write_text(yaml.safe_dump(config))
    assert load_config(str(path)).preprocess.corpus.text_unit == "file"
    entries = run(["--config", str(path), "--stages", "vocab,corpus"])
    tok = GPTTokenizer.load(entries["vocab"]["outputs"]["vocab_dir"])
    corpus = entries["corpus"]["outputs"]["corpus_dir"]
    seen, counts = {}, []
    for split in ("train", "validation"):
        for batch in gk_data.pretrain_dataset(corpus, split, 4):
            for ids, mask in zip(batch["token_ids"].numpy(), batch["padding_mask"].numpy()):
                text = tok.decode([int(i) for i in ids[mask == 1]])
                found = re.findall(r"(" + "|".join(BOOKS) + r") sentence (" + "|".join(WORDS) + r") \.", text)
                counts.append(len(found))
                for book, _ in found:
                    seen.setdefault(book, set()).add(split)
                for (b1, w1), (b2, w2) in zip(found, found[1:]):
                    if b1 == b2:  # within one book: the next sentence, in order
                        assert WORDS.index(w2) == WORDS.index(w1) + 1, text
    assert max(counts) >= 5  # a window holds several sentences of a book, not one line
    assert set(seen) == set(BOOKS)
    assert all(len(splits) == 1 for splits in seen.values()), seen  # a book lies in one split
    assert {s for splits in seen.values() for s in splits} == {"train", "validation"}

"""Beam readers under hostile input (issue 15, items 9-12), the one options
object and InputSpec, and lean corpus workers (no TensorFlow, no Keras)."""
import json
import os
import subprocess
import sys

import pytest

from gpt_keras.tokenizer import count_words, train_bpe
from pipelines.preprocess import PreprocessOptions, memory_input, run_corpus
from pipelines.preprocess.inputs import InputSpec
from pipelines.preprocess.readers import ReadFileFn
from pipelines.preprocess.rows import DeadLetter, SourceRow
from pipelines.preprocess.task import run_task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = PreprocessOptions(verbose=False)


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    d = tmp_path_factory.mktemp("vocab")
    train_bpe(count_words(["good movie", "bad film", "great plot", "awful acting", "the cat sat"] * 5), 40).save(str(d))
    return str(d)


def _read(path, fmt, **options):
    """Everything ReadFileFn yields for one file: (rows, dead letters)."""
    fn = ReadFileFn(InputSpec([str(path)], fmt), PreprocessOptions(**options))
    fn.setup()
    out = list(fn.process(str(path)))
    rows = [r for r in out if isinstance(r, SourceRow)]
    dead = [r.value for r in out if not isinstance(r, SourceRow)]
    assert all(isinstance(d, DeadLetter) for d in dead)
    return rows, dead


def _dead_file(out_dir):
    with open(os.path.join(out_dir, "dead_letter.jsonl")) as f:
        return [json.loads(line) for line in f]


# ------------------------------------------------------------------ 9. CSV re-synchronises

def test_unterminated_quote_costs_one_line_not_the_rest_of_the_file(tmp_path, vocab):
    lines = [f"review number {i},{'pos' if i % 2 else 'neg'}" for i in range(1, 1001)]
    lines[499] = '"review number 500 never closes its quote,pos'  # data row 500 = physical line 501
    (tmp_path / "t.csv").write_text("text,label\n" + "\n".join(lines) + "\n")
    rows, dead = _read(tmp_path / "t.csv", "csv")
    assert len(rows) == 999 and [(d.row, d.reason) for d in dead] == [(501, "malformed_csv")]
    assert dead[0].raw == '"review number 500 never closes its quote,pos\n'
    assert sorted(r.row for r in rows) == [n for n in range(2, 1002) if n != 501]  # every other line is a row
    s = run_task(str(tmp_path / "t.csv"), "classification", None, str(tmp_path / "out"), vocab, n_ctx=16,
                 options=QUIET)
    assert s["counts"]["input"] == 1000 and s["written"] == 999 and s["rejected"] == 1


def test_a_quoted_field_over_the_line_limit_is_broken_and_reading_resumes(tmp_path):
    body = "\n".join(f"line {i}" for i in range(8))
    (tmp_path / "m.csv").write_text(f'text,label\n"{body}",pos\nafter,neg\n"two\nlines",pos\n')
    rows, dead = _read(tmp_path / "m.csv", "csv", max_record_lines=4)
    # Line 2 opens a field of 8 lines (limit 4): it is rejected; lines 3-9 are read again as rows of their own.
    assert (dead[0].row, dead[0].reason) == (2, "broken_record") and "max_record_lines=4" in dead[0].detail
    accounted = sorted([d.row for d in dead] + [r.row for r in rows])
    assert accounted == list(range(2, 12))  # every line after the header starts a row or a dead letter (12 ends 11)
    assert [r.data for r in rows if r.row >= 10] == [{"text": "after", "label": "neg"},
                                                    {"text": "two\nlines", "label": "pos"}]
    _, dead = _read(tmp_path / "m.csv", "csv", max_record_bytes=30)
    assert (dead[0].row, dead[0].reason) == (2, "broken_record") and "max_record_bytes=30" in dead[0].detail


# ------------------------------------------------------------------ 10. hostile JSON goes to the dead letter

def test_deep_nesting_and_huge_numbers_are_dead_letters_not_crashes(tmp_path):
    (tmp_path / "h.jsonl").write_text('{"text": "fine"}\n' + "[" * 100_000 + "]" * 100_000 + "\n"
                                      + '{"text": "x", "n": ' + "9" * 5000 + "}\n" + '{"text": "also fine"}\n')
    rows, dead = _read(tmp_path / "h.jsonl", "jsonl")
    assert [r.data["text"] for r in rows] == ["fine", "also fine"]
    assert [(d.row, d.reason) for d in dead] == [(2, "malformed_json"), (3, "malformed_json")]
    assert "RecursionError" in dead[0].detail and "ValueError" in dead[1].detail


# ------------------------------------------------------------------ 11. a typo does not silently become a class

def test_rare_labels_warn_with_counts_or_go_to_the_dead_letter(tmp_path, vocab, capsys):
    rows = [{"text": "good movie", "label": "positive"}] * 30 + [{"text": "bad film", "label": "negative"}] * 30
    rows.append({"text": "great plot", "label": "postive"})
    s = run_task(rows, "classification", None, str(tmp_path / "warn"), vocab, n_ctx=16)
    out = capsys.readouterr().out
    assert s["labels"] == {"negative": 30, "positive": 30, "postive": 1}
    assert "labels: negative=30, positive=30, postive=1" in out and "WARNING label(s) ['postive']" in out
    s = run_task(rows, "classification", None, str(tmp_path / "reject"), vocab, n_ctx=16,
                 options=QUIET.replace(rare_labels="reject"))
    assert s["labels"] == {"negative": 30, "positive": 30} and s["rejected_by_reason"] == {"rare_label": 1}
    assert s["rare_labels"] == {"postive": 1}
    (d,) = _dead_file(str(tmp_path / "reject"))
    assert d["reason"] == "rare_label" and "'postive' is seen only 1 time(s)" in d["detail"]
    with open(os.path.join(tmp_path, "reject", "metadata.json")) as f:
        assert json.load(f)["label_names"] == ["negative", "positive"]


# ------------------------------------------------------------------ 12. BOM, NUL bytes, line limit

def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbftext,label\ngood movie,pos\n")
    rows, dead = _read(tmp_path / "bom.csv", "csv")
    assert [r.data for r in rows] == [{"text": "good movie", "label": "pos"}] and not dead
    (tmp_path / "bom.jsonl").write_bytes(b'\xef\xbb\xbf{"text": "a"}\n')
    assert [r.data for r in _read(tmp_path / "bom.jsonl", "jsonl")[0]] == [{"text": "a"}]


@pytest.mark.parametrize("fmt,header", [("csv", b"text,label\n"), ("tsv", b"text\tlabel\n"), ("jsonl", b""),
                                        ("text", b"")])
def test_nul_bytes_and_over_long_lines_are_rejected_with_their_line(tmp_path, fmt, header):
    def line(text):
        sep = {"csv": b",", "tsv": b"\t"}.get(fmt)
        return (text + sep + b"pos" if sep else b'{"text": "' + text + b'"}' if fmt == "jsonl" else text) + b"\n"

    path = tmp_path / f"x.{fmt}"
    path.write_bytes(header + line(b"good") + line(b"bad\x00byte") + line(b"x" * 500) + line(b"fine"))
    rows, dead = _read(path, fmt, max_line_bytes=100)
    first = 2 if header else 1
    assert [(d.row, d.reason) for d in dead] == [(first + 1, "nul_byte"), (first + 2, "line_too_long")]
    assert [r.row for r in rows] == [first, first + 3]
    assert len(dead[1].raw) <= 100  # the over-long line is never held whole


def test_document_limit_is_separate_from_the_line_limit(tmp_path):
    (tmp_path / "d.txt").write_text("one two\nthree four\n\n" + "word " * 50 + "\nshort\n")
    rows, dead = _read(tmp_path / "d.txt", "text", text_unit="paragraph", max_document_bytes=100)
    assert [r.data["text"] for r in rows] == ["one two\nthree four\n"]
    assert [(d.row, d.reason) for d in dead] == [(4, "document_too_long")]


# ------------------------------------------------------------------ options, InputSpec

def test_config_input_format_reaches_the_reader(tmp_path, vocab):
    from pipelines.config.data import InputSpec as ConfigInputSpec

    assert issubclass(ConfigInputSpec, InputSpec)
    (tmp_path / "rows.txt").write_text("text\tlabel\ngood movie\tpos\nbad film\tneg\n")
    spec = ConfigInputSpec(paths=[str(tmp_path / "rows.txt")], format="tsv")
    s = run_task(spec, "classification", None, str(tmp_path / "out"), vocab, n_ctx=16, options=QUIET)
    assert s["counts"]["input"] == 2 and s["written"] == 2 and s["labels"] == {"neg": 1, "pos": 1}
    # "auto" reads a .txt file as plain text: the same file is then three documents.
    s = run_corpus(str(tmp_path / "rows.txt"), str(tmp_path / "lm"), vocab, n_ctx=8, val_fraction=0.0, options=QUIET)
    assert s["counts"]["input"] == 3


def test_config_input_errors_name_the_key():
    from pipelines.config.loading import load_config
    from pipelines.config.validation import ConfigError

    with pytest.raises(ConfigError, match=r"preprocess.corpus.input.format: must be one of auto, text, jsonl, csv, "
                                          r"tsv, tfds; got 'xml'"):
        load_config("demo", ["preprocess.corpus.input.format=xml"])
    with pytest.raises(ConfigError, match=r"preprocess.tasks\[0\].input.paths: needs at least one path"):
        load_config("demo", ["preprocess.tasks.0.input.paths=[]"])


def test_options_reach_the_run_and_are_checked(tmp_path, vocab):
    s = run_corpus(memory_input(["good <br />movie"]), str(tmp_path / "a"), vocab, n_ctx=8, val_fraction=0.0,
                   options=QUIET.replace(clean_html=True))
    assert s["written"] == 1
    with pytest.raises(ValueError, match="PreprocessOptions.max_record_lines must be >= 1, got 0"):
        PreprocessOptions(max_record_lines=0)


def test_cli_exposes_the_limits():
    from pipelines.preprocess.cli import build_options, build_parser

    args, _ = build_parser().parse_known_args(
        ["task", "--input", "x.csv", "--out_dir", "o", "--family", "classification", "--vocab_dir", "v",
         "--max_line_bytes", "1000", "--max_record_lines", "7", "--max_record_bytes", "5000",
         "--min_label_count", "3", "--rare_labels", "reject", "--where", "source=imdb"])
    options = build_options(args)
    assert (options.max_line_bytes, options.max_record_lines, options.max_record_bytes) == (1000, 7, 5000)
    assert (options.min_label_count, options.rare_labels, options.where) == (3, "reject", {"source": "imdb"})
    args, _ = build_parser().parse_known_args(["corpus", "--input", "x", "--out_dir", "o",
                                               "--max_document_bytes", "99"])
    assert build_options(args).max_document_bytes == 99


# ------------------------------------------------------------------ lean workers

def test_corpus_workers_import_neither_tensorflow_nor_keras():
    code = ("import sys\n"
            "import gpt_keras, gpt_keras.tokenizer, gpt_keras.schema\n"
            "import pipelines.preprocess, pipelines.preprocess.corpus, pipelines.preprocess.vocab\n"
            "import pipelines.preprocess.readers, pipelines.preprocess.runner, pipelines.preprocess.cli\n"
            "import pipelines.preprocess.rows, pipelines.preprocess.sinks, pipelines.preprocess.splits\n"
            "import pipelines.preprocess.tokenizer\n"
            "from gpt_keras import schema\n"
            "schema.encode_pretraining_example([1, 2, 3])\n"
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n")
    env = {**os.environ, "PYTHONPATH": REPO}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"

"""Every task family through the whole pipeline and its printed summary:
records, fine-tuning over a learning-rate grid, zero-shot where a solver
exists, evaluate, and the printed table (one row per model, any columns)."""
import csv
import json

import numpy as np
import yaml

from pipelines.run import run

WORDS = "the a film movie plot story actor scene music good bad great dull fun slow warm cold".split()


def _sentence(rng, n=4):
    return " ".join(rng.choice(WORDS, n))


def _write(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


def _tasks(tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    files = {
        "classification": _write(tmp_path / "cls.csv", ["text", "label"],
                                 [[_sentence(rng), i % 2] for i in range(n)]),
        "entailment": _write(tmp_path / "nli.csv", ["premise", "hypothesis", "label"],
                             [[_sentence(rng), _sentence(rng, 3), ["entailment", "neutral", "contradiction"][i % 3]]
                              for i in range(n)]),
        "similarity": _write(tmp_path / "sim.csv", ["text_a", "text_b", "label"],
                             [[_sentence(rng), _sentence(rng), i % 2] for i in range(n)]),
        "regression": _write(tmp_path / "sts.csv", ["text_a", "text_b", "label"],
                             [[_sentence(rng), _sentence(rng), float(i % 5)] for i in range(n)]),
        "multiple_choice": _write(tmp_path / "mc.csv", ["context", "c0", "c1", "c2", "label"],
                                  [[_sentence(rng), _sentence(rng, 2), _sentence(rng, 2), _sentence(rng, 2), i % 3]
                                   for i in range(n)]),
    }
    fields = {"classification": {"text": "text"}, "entailment": {"premise": "premise", "hypothesis": "hypothesis"},
              "similarity": {"text_a": "text_a", "text_b": "text_b"},
              "regression": {"text_a": "text_a", "text_b": "text_b"},
              "multiple_choice": {"context": "context", "choices": ["c0", "c1", "c2"]}}
    return [{"name": family, "family": family, "input": {"paths": [path], "format": "csv"},
             "fields": fields[family], "val_fraction": 0.2, "test_fraction": 0.2,
             **({"num_choices": 3} if family == "multiple_choice" else {})} for family, path in files.items()]


def test_every_family_runs_end_to_end_and_prints(tmp_path, capsys):
    corpus = _write(tmp_path / "corpus.csv", ["text"], [[_sentence(np.random.default_rng(i), 8)] for i in range(80)])
    config = {
        "name": "families", "work_dir": str(tmp_path / "work"), "seed": 0, "model": {"preset": "tiny"},
        "preprocess": {"num_merges": 40, "n_ctx": 32, "val_fraction": 0.1,
                       "corpus": {"input": {"paths": [corpus], "format": "csv"}}, "tasks": _tasks(tmp_path)},
        "pretrain": {"batch_size": 8, "learning_rate": 1e-3, "warmup": 1, "max_steps": 3, "jit_compile": False},
        "finetune": {"batch_size": 16, "learning_rate": [1e-3, 3e-3], "epochs": 1, "dropout": 0.0,
                     "ablation_without_pretraining": False},
        "analysis": {"zero_shot": True},
    }
    path = tmp_path / "families.yaml"
    path.write_text(yaml.safe_dump(config))
    entries = run(["--config", str(path)])
    assert all(e["status"] == "complete" for e in entries.values())
    metrics = json.loads((tmp_path / "work" / "evaluate" / "metrics.json").read_text())
    out = capsys.readouterr().out
    for family in ("classification", "entailment", "similarity", "regression", "multiple_choice"):
        row = metrics[f"{family}/pretrained"]
        assert row["split"] == "test" and row["examples"] > 0
        assert ("pearson" in row) if family == "regression" else (0 <= row["accuracy"] <= 1)
        assert f"{family}/pretrained" in out  # a row of the printed table
        # Each variant kept the learning rate that did best on validation.
        chosen = entries[f"finetune/{family}"]["metrics"][f"{family}/pretrained"]
        scores = chosen["validation_by_setting"]
        assert set(scores) == {"learning_rate=0.001", "learning_rate=0.003"}
        best = (min if family == "regression" else max)(scores, key=scores.get)
        assert chosen["chosen_setting"] == best and chosen["learning_rate"] == float(best.split("=")[1])
    assert "classification/zero_shot" in metrics and "multiple_choice/zero_shot" in metrics
    assert "no zero-shot solver" in entries["zeroshot/entailment"]["metrics"]["note"]
    assert "Recipe chosen on the validation split" in out and "Stage time in all" in out
    # finetune.dropout: the kept model trained (and is saved) with it, whatever the model's own.
    from gpt_keras import saving
    config = saving.read_config(str(tmp_path / "work" / "finetune" / "classification" / "pretrained"))
    assert (config.embd_pdrop, config.attn_pdrop, config.resid_pdrop) == (0.0, 0.0, 0.0)
    # Only the kept model of the grid remains.
    kept = sorted(p.name for p in (tmp_path / "work" / "finetune" / "entailment").iterdir() if p.is_dir())
    assert kept == ["pretrained"]

"""The stage runner end to end on tiny data: all stages, skipping, --force,
--stages, adding a task, failure atomicity, and resume of a killed pre-training run."""
import csv
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from pipelines.config.validation import ConfigError
from pipelines.run import run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POSITIVE = ["a great and moving film", "wonderful acting and a great story", "i loved this film so much",
            "brilliant , funny and warm", "a joy from start to end", "great fun with a great cast"]
NEGATIVE = ["a dull and boring film", "terrible acting and a bad story", "i hated this film so much",
            "awful , slow and cold", "a mess from start to end", "bad jokes with a bad cast"]


def _write_data(tmp_path):
    rng = np.random.default_rng(0)
    corpus = tmp_path / "corpus.csv"
    with open(corpus, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "source"])
        for i in range(120):
            w.writerow([" ".join(rng.choice(POSITIVE + NEGATIVE, 3)), i % 2, "lm"])
        fillers = "the movie plot actor scene music story ending".split()
        for i in range(160):
            label = i % 2  # distinct texts: the split hashes the content
            text = f"{rng.choice(POSITIVE if label else NEGATIVE)} {' '.join(rng.choice(fillers, 3))}"
            w.writerow([text, label, "task"])
    return corpus


def _task(name, corpus):
    return {"name": name, "family": "classification",
            "input": {"paths": [str(corpus)], "format": "csv", "where": {"source": "task"}},
            "fields": {"text": "text"}, "label_names": ["0", "1"], "val_fraction": 0.2, "test_fraction": 0.2}


def _config(tmp_path, corpus, tasks=("toy",), finetune=None, **pretrain):
    config = {
        "name": "tiny", "work_dir": str(tmp_path / "work"), "seed": 0,
        "model": {"preset": "tiny"},
        "preprocess": {
            "num_merges": 60, "n_ctx": 32, "val_fraction": 0.1,
            "corpus": {"input": {"paths": [str(corpus)], "format": "csv", "where": {"source": "lm"}}},
            "tasks": [_task(name, corpus) for name in tasks]},
        "pretrain": {"batch_size": 8, "learning_rate": 1e-3, "warmup": 2, "epochs": 1, "max_steps": 6,
                     "steps_per_checkpoint": 2, "validation_batches": 1, "jit_compile": False, **pretrain},
        "finetune": {"batch_size": 16, "learning_rate": 1e-3, "epochs": 1, "jit_compile": False, **(finetune or {})},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


STAGES = ("vocab", "corpus", "records/toy", "pretrain", "finetune/toy", "evaluate", "export")


def _ran(out: str) -> list[str]:
    return [line.split("]")[0][1:] for line in out.splitlines() if line.startswith("[") and "] running" in line]


def test_all_stages_then_skip_force_and_subset(tmp_path, capsys):
    config = _config(tmp_path, _write_data(tmp_path))
    entries = run(["--config", config])
    assert [entries[s]["status"] for s in STAGES] == ["complete"] * len(STAGES)
    work = tmp_path / "work"
    metrics = json.loads((work / "evaluate" / "metrics.json").read_text())
    assert set(metrics) == {"lm", "toy/pretrained", "toy/scratch"}
    assert metrics["lm"]["validation_perplexity"] > 1
    assert 0 <= metrics["toy/pretrained"]["accuracy"] <= 1 and metrics["toy/pretrained"]["split"] == "test"
    assert (work / "pretrain" / "curves.png").stat().st_size > 1000
    assert (work / "finetune" / "toy" / "curves.png").exists()
    for stage in STAGES:
        entry = entries[stage]
        assert entry["code_version"] and entry["start"] <= entry["end"] and "fingerprint" in entry
        assert (work / stage / "stage.json").exists()
    assert os.path.exists(os.path.join(entries["export"]["outputs"]["saved_model"], "saved_model.pb"))
    out = capsys.readouterr().out
    assert "Held-out LM perplexity" in out and "Serve it: python -m serving.server" in out

    # Re-run: everything is fresh and skipped.
    run(["--config", config])
    assert capsys.readouterr().out.count("up to date") == len(STAGES)
    # A changed fine-tuning value re-runs finetune and what reads it, not the stages before.
    run(["--config", config, "--set", "finetune.learning_rate=2e-3"])
    out = capsys.readouterr().out
    assert "[vocab] up to date" in out and "[corpus] up to date" in out and "[records/toy] up to date" in out
    assert "[pretrain] up to date" in out
    assert "[finetune/toy] running" in out and "[evaluate] running" in out and "[export] running" in out
    # --stages and --force.
    run(["--config", config, "--stages", "evaluate", "--force"])
    out = capsys.readouterr().out
    assert "[evaluate] running" in out and "[finetune" not in out

    # The fine-tuned model directory loads in a fresh process and scores the test split as evaluate did.
    model_dir, task_dir = work / "finetune" / "toy" / "pretrained", entries["records/toy"]["outputs"]["task_dir"]
    script = (f"import numpy as np, gpt_keras as gk\nfrom gpt_keras import data\n"
              f"model = gk.GPTTaskModel.from_preset({str(model_dir)!r})\n"
              f"hits = [np.argmax(model(x).numpy(), -1) == y.numpy() for x, y in data.task_dataset({task_dir!r}, 'test', 16)]\n"
              f"print(float(np.mean(np.concatenate(hits))), model.label_names)")
    fresh = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    accuracy, names = fresh.stdout.strip().splitlines()[-1].split(" ", 1)
    metrics = json.loads((work / "evaluate" / "metrics.json").read_text())
    assert float(accuracy) == metrics["toy/pretrained"]["accuracy"] and names == "['0', '1']"


def test_adding_a_task_runs_only_that_task(tmp_path, capsys):
    corpus = _write_data(tmp_path)
    fast = {"ablation_without_pretraining": False}
    run(["--config", _config(tmp_path, corpus, finetune=fast)])
    capsys.readouterr()
    two_tasks = _config(tmp_path, corpus, tasks=("toy", "toy2"), finetune=fast)
    entries = run(["--config", two_tasks])
    out = capsys.readouterr().out
    # export serves the first task, which is unchanged.
    assert _ran(out) == ["records/toy2", "finetune/toy2", "evaluate"], out
    for stage in ("vocab", "corpus", "records/toy", "pretrain", "finetune/toy", "export"):
        assert f"[{stage}] up to date" in out
    metrics = json.loads((tmp_path / "work" / "evaluate" / "metrics.json").read_text())
    assert set(metrics) == {"lm", "toy/pretrained", "toy2/pretrained"}
    assert entries["finetune/toy2"]["status"] == "complete"
    # The export section is read by export alone.
    run(["--config", two_tasks, "--set", f"export.base_dir={tmp_path / 'serving2'}"])
    assert _ran(capsys.readouterr().out) == ["export"]
    # Serving the new task re-exports without re-evaluating.
    run(["--config", two_tasks, "--set", "export.model_name=toy2"])
    assert _ran(capsys.readouterr().out) == ["export"]
    # Users' group names still select whole groups; stage names select one stage.
    run(["--config", two_tasks, "--stages", "finetune/toy2,records", "--force"])
    assert _ran(capsys.readouterr().out) == ["records/toy", "records/toy2", "finetune/toy2"]


def test_validation_batches_caps_each_evaluation_to_the_same_batches():
    import tensorflow as tf

    from pipelines.config.training import OptimSpec
    from pipelines.trainer import _capped
    data = tf.data.Dataset.range(10).batch(2)
    assert [b.numpy().tolist() for b in _capped(data, OptimSpec(validation_batches=2))] == [[0, 1], [2, 3]]
    assert len(list(_capped(data, OptimSpec(validation_batches=0)))) == 5  # 0: the whole split


def test_config_errors_stop_before_any_stage(tmp_path):
    config = _config(tmp_path, _write_data(tmp_path))
    with pytest.raises(ConfigError, match="pretrain.batch_size: must be > 0"):
        run(["--config", config, "--set", "pretrain.batch_size=0"])
    with pytest.raises(ConfigError, match=r"unknown stage\(s\) \['train'\]"):
        run(["--config", config, "--stages", "train"])
    assert not (tmp_path / "work").exists()


def test_a_vocab_size_override_that_disagrees_stops_before_packing(tmp_path):
    config = _config(tmp_path, _write_data(tmp_path))
    with pytest.raises(ConfigError, match=r"model.overrides.vocab_size=50 disagrees with the tokenizer's \d+ BPE "
                                          r"tokens \(preprocess.num_merges=60\); remove the override"):
        run(["--config", config, "--set", "model.overrides.vocab_size=50"])
    stages = json.loads((tmp_path / "work" / "manifest.json").read_text())["stages"]
    assert stages["vocab"]["status"] == "complete" and "corpus" not in stages


def test_a_failed_stage_leaves_no_trusted_artifact(tmp_path):
    config = _config(tmp_path, _write_data(tmp_path))
    with pytest.raises(Exception):
        run(["--config", config, "--stages", "preprocess", "--set",
             "preprocess.corpus.input.paths=[/nonexistent/*.csv]"])
    entry = json.loads((tmp_path / "work" / "manifest.json").read_text())["stages"]["vocab"]
    assert entry["status"] == "failed" and "error" in entry
    assert not (tmp_path / "work" / "vocab").exists()
    with pytest.raises(RuntimeError, match="run the 'preprocess' stage first"):
        run(["--config", config, "--stages", "pretrain"])


def test_killed_pretraining_resumes_from_its_checkpoint(tmp_path):
    config = _config(tmp_path, _write_data(tmp_path), epochs=10, max_steps=40, steps_per_checkpoint=4)
    entries = run(["--config", config, "--stages", "preprocess"])
    assert [entries[s]["status"] for s in ("vocab", "corpus", "records/toy")] == ["complete"] * 3
    assert "pretrain" not in entries
    cmd = [sys.executable, os.path.join(REPO, "pipelines", "run.py"), "--config", config, "--stages", "pretrain"]
    ckpts = tmp_path / "work" / ".checkpoints"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list(ckpts.glob("pretrain-*/ckpt-8.index")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up, as with a lost machine
    proc.wait()
    saved = sorted(int(p.name.split("-")[1].split(".")[0]) for p in ckpts.glob("pretrain-*/ckpt-*.index"))
    assert saved and saved[-1] < 40, saved
    manifest = json.loads((tmp_path / "work" / "manifest.json").read_text())["stages"]
    assert manifest["pretrain"]["status"] == "running" and not (tmp_path / "work" / "pretrain").exists()

    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert f"(step {saved[-1]}/40)" in out.stdout  # resumed, losing only the steps after that checkpoint
    history = json.loads((tmp_path / "work" / "pretrain" / "logs" / "history.json").read_text())
    assert len(history["loss"]) == (40 - saved[-1]) // 4


def test_analysis_stages_reuse_a_finished_run(tmp_path, capsys):
    """An `extends:` config over a finished run adds transfer modes and zero/few-shot
    rows to the same table; nothing the first run made is redone."""
    corpus = _write_data(tmp_path)
    base = _config(tmp_path, corpus, snapshots=3)
    run(["--config", base])
    capsys.readouterr()
    analysis = tmp_path / "analysis.yaml"
    analysis.write_text(yaml.safe_dump({"extends": base, "analysis": {
        "transfer": ["frozen", "lora"], "learning_rates": {"frozen": 3e-3}, "zero_shot": True, "few_shot": [1],
        "prompts": {"toy": {"template": "{text} so", "label_words": [["bad", "dull"], ["great", "fun"]]}},
        "table5": True, "figure2": True}}))
    run(["--config", str(analysis)])
    out = capsys.readouterr().out
    assert _ran(out) == ["transfer/toy/frozen", "transfer/toy/lora", "transfer/toy/no_aux_lm", "transfer/toy/layers_0",
                         "transfer/toy/layers_1", "zeroshot/toy", "evaluate"], out
    metrics = json.loads((tmp_path / "work" / "evaluate" / "metrics.json").read_text())
    # Table 5: full, without the auxiliary LM loss, without pre-training; Figure 2 (left): 0..n_layer blocks.
    assert set(metrics) == {"lm", "toy/pretrained", "toy/scratch", "toy/frozen", "toy/lora", "toy/no_aux_lm", "toy/layers_0",
                            "toy/layers_1", "toy/zero_shot", "toy/few_shot_k1", "toy/zero_shot_by_step"}
    assert "toy/no_aux_lm" in out and "toy/layers_0" in out
    # Figure 2 (right): the pre-training snapshots (step 0 and log-spaced steps), scored zero-shot.
    assert sorted(map(int, metrics["toy/zero_shot_by_step"])) == [0, 6]
    figure = json.loads((tmp_path / "work" / "evaluate" / "figure2.json").read_text())
    assert [p["layers"] for p in figure["layers_transferred"]["toy"]] == [0, 1, 2]
    assert figure["layers_transferred"]["toy"][2]["accuracy"] == metrics["toy/pretrained"]["accuracy"]
    assert [p["step"] for p in figure["zero_shot_by_step"]["toy"]] == [0, 6]
    assert (tmp_path / "work" / "evaluate" / "figure2.png").stat().st_size > 1000
    _check_analysis_values(tmp_path / "work", metrics, figure)
    # At n_ctx 32 with a 60-merge vocabulary a demonstration may not fit: it is dropped, and counted.
    assert metrics["toy/few_shot_k1"]["k"] == 1 and 0 <= metrics["toy/few_shot_k1"]["mean_demonstrations"] <= 1
    for row in ("toy/pretrained", "toy/frozen", "toy/zero_shot", "toy/few_shot_k1"):
        low, high = metrics[row]["accuracy_ci95"]
        assert low <= metrics[row]["accuracy"] <= high and metrics[row]["examples"] > 0
    assert "toy/zero_shot" in out and "95% CI" in out  # the printed table has every row


def _check_analysis_values(work, metrics: dict, figure: dict) -> None:
    """The analysis rows hold the values the library computes: parameter
    counts, the Figure 2 points, and the zero/few-shot scores of the prompt."""
    import gpt_keras as gk
    from gpt_keras import saving
    from gpt_keras.scoring import LMScorer
    from gpt_keras.transfer import trainable_parameters
    from gpt_keras.zeroshot import LabelWordClassifier
    from pipelines.stages.zeroshot import read_task_rows

    stages = json.loads((work / "manifest.json").read_text())["stages"]
    backbone, tok = saving.load_model(stages["pretrain"]["outputs"]["model_dir"])
    n_embd = backbone.config.n_embd
    full = gk.GPTTaskModel(backbone, "classification", num_labels=2)
    assert metrics["toy/pretrained"]["trainable_parameters"] == full.count_params()
    assert metrics["toy/frozen"]["trainable_parameters"] == n_embd * 2 + 2  # the head only
    # Counted while it trained: the saved LoRA model is merged (plain), and would count as full.
    lora = gk.GPTTaskModel(backbone, "classification", num_labels=2, transfer="lora", lora_rank=8)
    assert metrics["toy/lora"]["trainable_parameters"] == trainable_parameters(lora) < full.count_params()
    assert metrics["toy/zero_shot"]["trainable_parameters"] == 0
    points = figure["layers_transferred"]["toy"]
    assert [p["accuracy"] for p in points[:2]] == [metrics[f"toy/layers_{n}"]["accuracy"] for n in (0, 1)]
    # The last pre-training snapshot is the pre-trained model: the same zero-shot score.
    assert metrics["toy/zero_shot_by_step"]["6"]["accuracy"] == metrics["toy/zero_shot"]["accuracy"]
    task_dir = stages["records/toy"]["outputs"]["task_dir"]
    (train, y_train), (val, y_val), (test, y_test) = (
        read_task_rows(task_dir, split, tok, "classification") for split in ("train", "validation", "test"))
    for k, row in ((0, "toy/zero_shot"), (1, "toy/few_shot_k1")):
        solver = LabelWordClassifier(LMScorer(backbone, tok), [["bad", "dull"], ["great", "fun"]], template="{text} so",
                                     demonstrations=list(zip(train, y_train.tolist())), k=k)
        result = solver.calibrate(val, y_val).predict(test)
        # The label words are chosen on validation, once per LM, and recorded with every combination.
        assert metrics[row]["label_words"] == solver.label_words
        assert metrics["toy/zero_shot"]["label_word_selection"]["combinations"] == solver.word_selection
        assert metrics[row]["examples"] == len(y_test)
        assert metrics[row]["accuracy"] == pytest.approx(np.mean(result.predictions == y_test))
        assert metrics[row]["mean_demonstrations"] == pytest.approx(result.demonstrations.mean())


def test_a_time_budget_stops_pretraining_early_and_says_so(tmp_path, capsys):
    """pretrain.max_minutes: a slow machine runs fewer steps, and the stage records how many."""
    config = _config(tmp_path, _write_data(tmp_path), max_steps=6, max_minutes=1e-6)
    entries = run(["--config", config, "--stages", "preprocess,pretrain"])
    metrics = entries["pretrain"]["metrics"]
    assert metrics["stopped_by_time_budget"] is True
    assert metrics["steps"] == 1 and metrics["planned_steps"] == 6  # the first step ends past the budget
    assert "pre-training stopped at step 1 of 6: pretrain.max_minutes=1e-06 was reached" in capsys.readouterr().out


def test_num_shards_writes_that_many_shards_per_split(tmp_path):
    """Several shards are what make pre-training's file shuffle global."""
    config = _config(tmp_path, _write_data(tmp_path))
    entries = run(["--config", config, "--stages", "preprocess", "--set", "preprocess.num_shards=3"])
    corpus_dir = entries["corpus"]["outputs"]["corpus_dir"]
    for split in ("train", "validation"):
        assert len(glob.glob(os.path.join(corpus_dir, f"{split}-*-of-00003.tfrecord.gz"))) == 3
    task_dir = entries["records/toy"]["outputs"]["task_dir"]
    assert len(glob.glob(os.path.join(task_dir, "train-*-of-00003.tfrecord.gz"))) == 3

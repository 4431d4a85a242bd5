"""finetune.seeds end to end: each fine-tuned variant once per seed, as its own
stage, and evaluate's spread over seeds and paired comparisons."""
import contextlib
import io
import json
from pathlib import Path

import pytest

from pipelines.config.loading import load_config
from pipelines.run import run
from pipelines.plan import plan
from tests.test_pipeline_run import _config, _write_data


@pytest.fixture(scope="module")
def seeded_run(tmp_path_factory):
    """One run with two seeds, an analysis variant (no_aux_lm) and a data-efficiency
    curve ([8, 500] examples; 500 is more than the toy task has): (entries, work dir, printed summary)."""
    tmp_path = tmp_path_factory.mktemp("seeded")
    config = _config(tmp_path, _write_data(tmp_path), finetune={"seeds": [0, 1]})
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        entries = run(["--config", config, "--set", "analysis.table5=true", "--set", "analysis.data_efficiency=[8, 500]",
                       "--set", "analysis.data_efficiency_min_steps=3"])
    return entries, tmp_path / "work", printed.getvalue()


def test_each_variant_is_fine_tuned_per_seed_and_compared_with_the_pretrained(seeded_run):
    entries, work, out = seeded_run
    for k in (0, 1):
        for stage, model in ((f"finetune/toy-seed{k}", f"toy/pretrained-seed{k}"),
                             (f"finetune/toy-seed{k}", f"toy/scratch-seed{k}"),
                             (f"transfer/toy/no_aux_lm-seed{k}", f"toy/no_aux_lm-seed{k}")):
            assert entries[stage]["status"] == "complete" and entries[stage]["config"]["seed"] == k
            assert entries[stage]["metrics"][model]["seed"] == k
    assert "finetune/toy" not in entries and "transfer/toy/no_aux_lm" not in entries
    # The seed changes the fine-tuning itself (head, dropout, batch order): the losses differ.
    losses = [json.loads((work / f"finetune/toy-seed{k}/pretrained/logs/history.json").read_text())["loss"]
              for k in (0, 1)]
    assert losses[0] != losses[1]

    metrics = json.loads((work / "evaluate" / "metrics.json").read_text())
    assert {"lm", "toy/pretrained", "toy/scratch", "toy/no_aux_lm", "toy/data_efficiency"} <= set(metrics)
    predictions = json.loads((work / "evaluate" / "predictions" / "toy.json").read_text())
    for variant in ("pretrained", "scratch", "no_aux_lm"):
        row = metrics[f"toy/{variant}"]
        seeds = row["seeds"]
        assert seeds["metric"] == "accuracy" and seeds["n"] == 2 and set(seeds["by_seed"]) == {"0", "1"}
        assert seeds["mean"] == pytest.approx(sum(seeds["by_seed"].values()) / 2) == row["accuracy"]
        assert seeds["std"] >= 0
        answers = predictions["predictions"][f"toy/{variant}"]
        for k in ("0", "1"):  # the saved answers give each seed's accuracy back
            hits = [p == y for p, y in zip(answers[k], predictions["labels"])]
            assert len(hits) == row["examples"] and sum(hits) / len(hits) == pytest.approx(seeds["by_seed"][k])
    assert "vs_pretrained" not in metrics["toy/pretrained"]
    for variant in ("scratch", "no_aux_lm"):
        comparison = metrics[f"toy/{variant}"]["vs_pretrained"]
        low, high = comparison["ci95"]
        assert comparison["reference"] == "toy/pretrained" and comparison["interval"] == "t over 2 paired seeds"
        assert low <= comparison["diff"] <= high
        assert comparison["diff"] == pytest.approx(metrics[f"toy/{variant}"]["accuracy"]
                                                   - metrics["toy/pretrained"]["accuracy"])
        test = comparison["sign_test"]
        assert 0 <= test["p"] <= 1 and test["wins"] + test["losses"] <= 2 * metrics["toy/pretrained"]["examples"]
    assert "Over fine-tuning seeds" in out and "Against the pre-trained model" in out and "p (sign test)" in out
    # Export serves the first seed's pre-trained model.
    assert entries["export"]["inputs"].keys() == {"finetune/toy-seed0"}


def test_seeds_leave_the_split_and_a_run_without_them_unchanged(tmp_path):
    corpus = _write_data(tmp_path)
    plain = {s.name: s for s in plan(load_config(_config(tmp_path, corpus)))}
    seeded = {s.name: s for s in plan(load_config(_config(tmp_path, corpus, finetune={"seeds": [3, 4]})))}
    # The records (and so the split) read the experiment seed, never finetune.seeds.
    assert seeded["records/toy"].config == plain["records/toy"].config
    # Without seeds: the stage names and the config they read are those of before the key existed.
    assert "finetune/toy" in plain and not any("-seed" in name for name in plain)
    assert "seeds" not in plain["finetune/toy"].config["finetune"] and plain["finetune/toy"].config["seed"] == 0
    assert [n for n in seeded if n.startswith("finetune/")] == ["finetune/toy-seed3", "finetune/toy-seed4"]
    assert seeded["finetune/toy-seed4"].config == {**plain["finetune/toy"].config, "seed": 4}


def test_data_efficiency_fine_tunes_both_variants_on_seeded_subsets_and_pairs_them(seeded_run):
    entries, work, out = seeded_run
    task_dir = entries["records/toy"]["outputs"]["task_dir"]
    all_examples = json.loads((Path(task_dir) / "metadata.json").read_text())["splits"]["train"]["records"]
    assert all_examples < 500
    for k in (0, 1):
        for variant in ("pretrained_n8", "scratch_n8"):
            result = entries[f"transfer/toy/{variant}-seed{k}"]["metrics"][f"toy/{variant}-seed{k}"]
            assert result["train_examples"] == 8 and result["seed"] == k
        assert entries[f"transfer/toy/pretrained_n500-seed{k}"]["metrics"][f"toy/pretrained_n500-seed{k}"][
            "train_examples"] == all_examples
    # 8 examples are one batch of 16: each pass is one step, so min_steps=3 makes 3 passes.
    history = json.loads((work / "transfer/toy/scratch_n8-seed0/model/logs/history.json").read_text())
    assert len(history["loss"]) == 3

    metrics = json.loads((work / "evaluate" / "metrics.json").read_text())
    curve = metrics["toy/data_efficiency"]
    # 500 is more than the split holds: that run is the full point's twin, not a point of its own.
    assert curve["metric"] == "accuracy" and [p["train_examples"] for p in curve["points"]] == [8, all_examples]
    predictions = json.loads((work / "evaluate" / "predictions" / "toy.json").read_text())
    labels = predictions["labels"]
    for point, (pre, scratch) in zip(curve["points"], [("pretrained_n8", "scratch_n8"), ("pretrained", "scratch")]):
        assert point["pretrained"] == metrics[f"toy/{pre}"]["seeds"] and point["scratch"] == metrics[f"toy/{scratch}"]["seeds"]
        hits = {v: [[p == y for p, y in zip(predictions["predictions"][f"toy/{v}"][k], labels)] for k in ("0", "1")]
                for v in (pre, scratch)}
        wins = sum(a and not b for ra, rb in zip(hits[pre], hits[scratch]) for a, b in zip(ra, rb))
        losses = sum(b and not a for ra, rb in zip(hits[pre], hits[scratch]) for a, b in zip(ra, rb))
        gain = point["gain"]
        assert gain["diff"] == pytest.approx(point["pretrained"]["mean"] - point["scratch"]["mean"])
        assert gain["interval"] == "t over 2 paired seeds" and gain["ci95"][0] <= gain["diff"] <= gain["ci95"][1]
        assert (gain["sign_test"]["wins"], gain["sign_test"]["losses"]) == (wins, losses)
    assert (work / "evaluate" / "data_efficiency.png").stat().st_size > 10_000
    table = out.split("Data efficiency:")[1].splitlines()
    assert [line.split()[:2] for line in table[3:5]] == [["toy", "8"], ["toy", str(all_examples)]]


def test_a_finetune_stage_recorded_before_its_parameter_count_gets_it_from_its_model(seeded_run):
    from pipelines.resolve import resolve
    from pipelines.stages.context import Context
    from pipelines.stages.evaluate import _trained_count
    from pipelines.stages.outputs import FinetuneOutput

    entries, work, _ = seeded_run
    outputs = {k: v for k, v in entries["finetune/toy-seed0"]["outputs"].items() if k != "trainable_parameters"}
    recorded = entries["finetune/toy-seed0"]["outputs"]["trainable_parameters"]
    for transfer, expected in (("full", recorded), ("lora", None)):
        config = load_config("demo", [f"finetune.transfer={transfer}"])
        ctx = Context(config=config, resolved=resolve(config), beam_args=[], artifacts={"finetune/toy-seed0": outputs},
                      work_dir=str(work), fingerprints={})
        fine_tuned = ctx.output("finetune/toy-seed0", FinetuneOutput)
        assert fine_tuned.trainable_parameters is None
        for key in fine_tuned.models:
            if expected is None:  # a merged LoRA model would count as full: no guess, the missing output is named
                with pytest.raises(RuntimeError, match="finetune/toy-seed0.trainable_parameters is missing"):
                    _trained_count(ctx, "finetune/toy-seed0", fine_tuned, key)
            else:
                assert _trained_count(ctx, "finetune/toy-seed0", fine_tuned, key) == expected[key]

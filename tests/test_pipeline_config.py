"""Experiment configs: shipped configs load; bad keys and values fail before any stage."""
import pytest

from pipelines.config.loading import load_config
from pipelines.config.validation import ConfigError
from pipelines.resolve import resolve


def test_shipped_configs_load_with_the_papers_settings():
    demo = load_config("demo")
    assert demo.model.preset == "demo" and demo.preprocess.tasks[0].family == "classification"
    gpt1 = load_config("gpt1")
    p, f = gpt1.pretrain, gpt1.finetune
    assert (gpt1.preprocess.n_ctx, p.batch_size, p.learning_rate, p.warmup, p.schedule, p.epochs) == \
        (512, 64, 2.5e-4, 2000, "warmup_cosine", 100)
    assert (f.learning_rate, f.batch_size, f.epochs, f.warmup, f.lm_weight, f.schedule) == \
        (6.25e-5, 32, 3, 0.002, 0.5, "warmup_linear")
    # The shipped LM's run: the recipe chosen on validation, each variant picking its dropout per seed.
    shipped = load_config("shipped")
    assert shipped.name == "shipped" and shipped.model.init_from == "demo_imdb" and shipped.finetune.seeds == [0, 1, 2]
    assert shipped.finetune.grid == [{"learning_rate": 1e-4, "lm_weight": 0.0, "dropout": d} for d in (0.0, 0.1)]


def test_overrides_use_dotted_paths_and_are_typed():
    config = load_config("demo", ["pretrain.learning_rate=1e-4", "preprocess.tasks.0.test_fraction=0.2",
                                  "finetune.ablation_without_pretraining=false"])
    assert config.pretrain.learning_rate == 1e-4
    assert config.preprocess.tasks[0].test_fraction == 0.2
    assert config.finetune.ablation_without_pretraining is False


@pytest.mark.parametrize("override,message", [
    ("pretrain.learnig_rate=1", r"pretrain.learnig_rate: unknown key; did you mean 'pretrain.learning_rate'\?"),
    ("finetune.zzz=1", r"finetune.zzz: unknown key; valid keys here: ablation_without_pretraining, batch_size"),
    ("preprocess.tasks.0.input.formt=csv",
     r"preprocess.tasks\[0\].input.formt: unknown key; did you mean 'preprocess.tasks\[0\].input.format'\?"),
    ("pretrain.batch_size=abc", r"pretrain.batch_size: expected int, got 'abc'"),
    ("pretrain.batch_size=0", r"pretrain.batch_size: must be > 0"),
    ("pretrain.schedule=cosine", r"pretrain.schedule: must be warmup_cosine"),
    ("pretrain.validation_batches=-1", r"pretrain.validation_batches: must be >= 0"),
    ("preprocess.tasks.0.family=sentiment", r"preprocess.tasks\[0\].family: Unknown task family 'sentiment'"),
    ("preprocess.tasks.0.fields={}", r"preprocess.tasks\[0\].fields: classification needs a column for \['text'\]"),
    ("model.preset=gpt9", r"model: Unknown preset 'gpt9'"),
    ("model.overrides={n_embd: 10, n_head: 3}", r"model: Invalid GPTConfig.*divisible"),
    ("finetune.ablation_without_pretraining=1", r"expected bool, got 1"),
    ("finetune.learning_rate=[]", r"finetune.learning_rate: must be > 0, or a non-empty list"),
    ("finetune.learning_rate=[1e-4, -1]", r"finetune.learning_rate: must be > 0, or a non-empty list"),
    ("pretrain.dropout=1", r"pretrain.dropout: must be < 1"),
    ("finetune.seeds=[0, 1, 1]", r"finetune.seeds: must be distinct integers >= 0 .*got \[0, 1, 1\]: \[1\] repeated"),
    ("finetune.seeds=[2, -1]", r"finetune.seeds: must be distinct integers >= 0 .*got \[2, -1\]: \[-1\] negative"),
    ("nonsense", r"must look like key.path=value"),
])
def test_bad_configs_fail_with_the_key_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("demo", [override])


def test_unknown_config_name_lists_the_shipped_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"neither a file nor a shipped config "
                                          r"\['analysis', 'demo', 'gpt1', 'gpt1_finetune', 'shipped'\]"):
        load_config("nope")
    # The released-weights config says what it needs.
    with pytest.raises(ConfigError, match=r"pretrain.enabled: false needs model.init_from .*set model.init_from=<dir>"):
        load_config("gpt1_finetune")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))


@pytest.mark.parametrize("overrides,message", [
    (["model.overrides.n_ctx=64"], r"model.overrides.n_ctx=64, less than preprocess.n_ctx=128: .*"
                                   r"set model.overrides.n_ctx >= 128 or lower preprocess.n_ctx"),
    (["preprocess.n_ctx=256"], r"model.preset='demo' has n_ctx=128, less than preprocess.n_ctx=256"),
    (["export.model_name=sst2"], r"export.model_name: 'sst2' is not a task in preprocess.tasks \['rt_polarity'\]"),
])
def test_mismatched_sizes_fail_when_the_config_loads(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("demo", overrides)


def _resolved(*overrides: str):
    return resolve(load_config("demo", list(overrides)))


def test_the_vocabulary_size_comes_from_the_tokenizer():
    # The preset's 8,000 is a default: the learned vocabulary's size wins.
    config = _resolved().gpt_config(8140)
    assert (config.vocab_size, config.n_ctx) == (8140, 128)
    assert _resolved("model.overrides.n_ctx=256").gpt_config(8140).n_ctx == 256
    assert _resolved("model.overrides.vocab_size=8140").gpt_config(8140).vocab_size == 8140
    with pytest.raises(ConfigError, match=r"^model.overrides.vocab_size=8000 disagrees with the tokenizer's 8140 BPE "
                                          r"tokens \(preprocess.num_merges=8000\); remove the override$"):
        _resolved("model.overrides.vocab_size=8000").gpt_config(8140)


def test_resolve_fills_in_what_the_config_leaves_open_without_a_checkpoint():
    demo = _resolved()
    assert (demo.checkpoint, demo.tokenizer_mode, demo.n_layer, demo.analysis_variants) == (None, "hf", 4, {})
    assert _resolved("preprocess.tokenizer_mode=original", "model.overrides.n_layer=2").tokenizer_mode == "original"
    assert _resolved("model.overrides.n_layer=2").n_layer == 2
    analysis = resolve(load_config("analysis", ["analysis.transfer=[lora]", "analysis.learning_rates={lora: 0.001}",
                                                "analysis.data_efficiency=[50]"]))
    assert analysis.analysis_variants == {
        "lora": {"transfer": "lora", "learning_rate": 0.001}, "no_aux_lm": {"lm_weight": 0.0},
        **{f"layers_{n}": {"n_transfer": n} for n in range(4)},
        "pretrained_n50": {"train_examples": 50, "min_steps": 300},
        "scratch_n50": {"train_examples": 50, "init": "scratch", "min_steps": 300}}


def test_an_override_can_append_a_task_and_names_a_bad_index():
    task = "{name: rt2, family: classification, input: {paths: [x.csv]}, fields: {text: text}}"
    config = load_config("demo", [f"preprocess.tasks.1={task}"])
    assert [t.name for t in config.preprocess.tasks] == ["rt_polarity", "rt2"]
    with pytest.raises(ConfigError, match=r"override 'preprocess.tasks.5': index 5 is out of range .* use 1 to append"):
        load_config("demo", [f"preprocess.tasks.5={task}"])


def test_analysis_config_extends_the_demo_and_checks_its_keys(tmp_path):
    analysis, demo = load_config("analysis"), load_config("demo")
    # Everything the demo's stages read is the demo's, so a finished demo run is reused as it is.
    for section in ("model", "preprocess", "pretrain", "finetune", "export"):
        assert getattr(analysis, section) == getattr(demo, section), section
    assert analysis.work_dir == demo.work_dir and analysis.analysis.transfer == ["frozen", "lora", "layer_mix"]
    assert analysis.analysis.few_shot == [1, "max"] and demo.analysis.transfer == []
    with pytest.raises(ConfigError, match=r"analysis.transfer: unknown transfer mode\(s\) \['adapter'\]"):
        load_config("analysis", ["analysis.transfer=[adapter]"])
    with pytest.raises(ConfigError, match=r"finetune.transfer: must be one of full, frozen, lora, layer_mix"):
        load_config("demo", ["finetune.transfer=probe"])
    with pytest.raises(ConfigError, match=r"analysis.prompts: \['nope'\] are not tasks"):
        load_config("analysis", ["analysis.prompts={nope: {label_words: [a, b]}}"])
    # Candidate label words are chosen on the validation split, which calibration reads.
    assert analysis.analysis.prompts["rt_polarity"].label_words[0][0] == "negative"  # the paper's words first
    with pytest.raises(ConfigError, match=r"analysis.prompts: candidate label words \(rt_polarity\) are chosen on"):
        load_config("analysis", ["analysis.calibrate=false"])
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"extends: {loop}\n")
    with pytest.raises(ConfigError, match="'extends' makes a cycle"):
        load_config(str(loop))


def test_every_problem_is_reported_at_once_at_its_full_path(tmp_path):
    """A missing section's required keys are named at their full path, beside
    the other sections' problems (not alone, not as `input.paths`)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\npretrain:\n  learnin_rate: 1.0e-3\n  batch_size: 0\n"
                   "finetune:\n  transfer: nope\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(bad))
    lines = str(err.value).splitlines()
    assert lines[0] == f"{bad}: 4 problems:"
    assert sorted(lines[1:]) == sorted([
        "  - preprocess.corpus.input.paths: needs at least one path or glob, got []",
        "  - pretrain.learnin_rate: unknown key; did you mean 'pretrain.learning_rate'?",
        "  - pretrain.batch_size: must be > 0",
        "  - finetune.transfer: must be one of full, frozen, lora, layer_mix; got 'nope'",
    ])


def test_a_sections_checks_are_reported_together():
    with pytest.raises(ConfigError) as err:
        load_config("demo", ["preprocess.tasks.0.name=bad name", "preprocess.tasks.0.fields={}",
                             "preprocess.tasks.0.input.paths=[]"])
    message = str(err.value)
    for part in ("preprocess.tasks[0].name: must be a non-empty identifier",
                 "preprocess.tasks[0].fields: classification needs a column for ['text']",
                 "preprocess.tasks[0].input.paths: needs at least one path or glob"):
        assert part in message


def test_a_recipe_grid_is_the_product_of_its_lists():
    """finetune.learning_rate, lm_weight and dropout given as lists make one
    fine-tuning run per combination (each variant keeps its best on validation)."""
    spec = load_config("demo", ["finetune.learning_rate=[1e-4, 3e-4]", "finetune.lm_weight=[0, 0.5]"]).finetune
    assert spec.varied == ["learning_rate", "lm_weight"]
    assert spec.grid == [{"learning_rate": lr, "lm_weight": w, "dropout": None} for lr in (1e-4, 3e-4) for w in (0, 0.5)]
    assert load_config("demo").finetune.grid == [{"learning_rate": 1e-4, "lm_weight": 0.5, "dropout": None}]
    with pytest.raises(ConfigError, match=r"finetune.lm_weight: must be >= 0, or a non-empty list"):
        load_config("demo", ["finetune.lm_weight=[]"])
    with pytest.raises(ConfigError, match=r"finetune.dropout: must be in \[0, 1\)"):
        load_config("demo", ["finetune.dropout=[0.1, 1.5]"])
    with pytest.raises(ConfigError, match=r"recipe grid .* has 125 settings, at most 64"):
        load_config("demo", ["finetune.learning_rate=[1, 2, 3, 4, 5]", "finetune.lm_weight=[0, 1, 2, 3, 4]",
                             "finetune.dropout=[0, 0.1, 0.2, 0.3, 0.4]"])

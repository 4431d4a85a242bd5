"""The trainer's one translation from a config section to TrainSettings."""
import inspect

import pytest

from pipelines.config.training import FinetuneSpec, OptimSpec
from pipelines.config.validation import ConfigError, build_section
from pipelines.trainer import snapshot_steps, train_settings


def test_pretraining_checkpoints_every_n_steps_up_to_max_steps():
    optim = OptimSpec(batch_size=16, learning_rate=5e-4, warmup=100, epochs=1, max_steps=1000,
                      steps_per_checkpoint=200, jit_compile=False)
    settings = train_settings(optim, steps_per_pass=1500, checkpoint_dir="ckpt", log_dir="logs")
    assert (settings.epochs, settings.steps_per_epoch) == (5, 200)  # 1,000 steps, not 1,500
    assert (settings.warmup, settings.learning_rate, settings.schedule) == (100, 5e-4, "warmup_cosine")
    assert settings.checkpoint_dir == "ckpt" and settings.jit_compile is False


def test_finetuning_evaluates_once_per_pass():
    settings = train_settings(FinetuneSpec(epochs=3), steps_per_pass=218)
    assert (settings.epochs, settings.steps_per_epoch, settings.warmup) == (3, 218, 0.002)


def test_small_tasks_get_whole_passes_up_to_min_steps():
    settings = train_settings(FinetuneSpec(epochs=3, min_steps=600), steps_per_pass=50)
    assert (settings.epochs, settings.steps_per_epoch) == (12, 50)
    settings = train_settings(FinetuneSpec(epochs=3, min_steps=600), steps_per_pass=213)
    assert (settings.epochs, settings.steps_per_epoch) == (3, 213)


def test_pretraining_snapshots_are_log_spaced_from_step_0():
    assert snapshot_steps(1000, 6) == [0, 10, 25, 63, 158, 398, 1000]
    assert snapshot_steps(1000, 1) == [0, 1000] and snapshot_steps(5, 3) == [0, 5] and snapshot_steps(1000, 0) == []


def test_finetune_defaults_come_from_gpt_keras_train():
    from gpt_keras.train import TrainSettings, finetune
    recipe, spec = TrainSettings(), FinetuneSpec()
    assert (spec.learning_rate, spec.schedule, spec.warmup, spec.epochs, spec.l2, spec.max_grad_norm) == (
        recipe.learning_rate, recipe.schedule, recipe.warmup, recipe.epochs, recipe.l2, recipe.max_grad_norm)
    assert isinstance(spec.epochs, float)  # the schema's type, so that stage fingerprints keep 3.0
    assert spec.lm_weight == inspect.signature(finetune).parameters["lm_weight"].default
    assert OptimSpec().l2 == recipe.l2 and OptimSpec().learning_rate == 2.5e-4  # pre-training keeps its own rate


def test_a_section_from_plain_values_names_its_keys():
    assert build_section(FinetuneSpec, {"batch_size": 8}, "optim") == FinetuneSpec(batch_size=8)
    with pytest.raises(ConfigError, match=r"optim.lm_weight: must be >= 0"):
        build_section(FinetuneSpec, {"lm_weight": -1}, "optim")

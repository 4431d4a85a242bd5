"""Mixed precision: the policy stays inside training, float16 stays finite,
loss scaling skips overflows and resumes, bf16 pre-training tracks float32."""
import logging

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import random_ids, tiny_config

import gpt_keras as gk
from gpt_keras import precision, saving
from gpt_keras.optim import OpenAIAdam
from gpt_keras.train import TrainSettings, pretrain

SINGLE = tf.distribute.OneDeviceStrategy("/cpu:0")


def _lm_data(n=16, length=16, seed=0):
    ids = random_ids(np.random.default_rng(seed), (n, length), 97)
    mask = np.ones_like(ids)
    return tf.data.Dataset.from_tensor_slices({"token_ids": ids, "padding_mask": mask}).batch(8)


def _settings(**kwargs):
    return TrainSettings(**{"learning_rate": 1e-3, "schedule": "constant", "epochs": 1, "steps_per_epoch": 2,
                            "verbose": 0, **kwargs})


def test_policy_stays_inside_training_and_saved_models_load_float32(tmp_path):
    model, _ = pretrain(tiny_config(), _lm_data(), _settings(dtype_policy="mixed_bfloat16"), strategy=SINGLE)
    assert keras.config.dtype_policy().name == "float32"
    block = model.backbone.blocks[0]
    assert block.c_fc.compute_dtype == "bfloat16" and block.c_fc.kernel.dtype == "float32"
    assert gk.GPTBackbone(**tiny_config().to_dict()).blocks[0].c_fc.compute_dtype == "float32"
    saving.save_model(model.backbone, tmp_path / "m")
    loaded = saving.load_backbone(tmp_path / "m")
    assert loaded.blocks[0].c_fc.compute_dtype == "float32"
    ids = np.array([[5, 6, 7, 8]], "int32")
    out = loaded({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    assert out.dtype == "float32"


def test_policy_is_restored_after_an_error_and_unknown_names_fail():
    with pytest.raises(RuntimeError):
        with precision.dtype_policy("mixed_float16"):
            assert keras.config.dtype_policy().name == "mixed_float16"
            raise RuntimeError("boom")
    assert keras.config.dtype_policy().name == "float32"
    with pytest.raises(ValueError, match="mixed_bfloat16"):
        TrainSettings(dtype_policy="bfloat16")


def test_float16_left_padded_rows_stay_finite_and_real_rows_match_float32():
    config = tiny_config()
    reference = gk.GPTBackbone(**config.to_dict())
    with precision.dtype_policy("mixed_float16"):
        half = gk.GPTBackbone(**config.to_dict())
    half.set_weights(reference.get_weights())
    # Left padding: query 0 sees only key 0, a pad, so its row is fully masked.
    ids = np.array([[0, 0, 0, 11, 12, 13], [21, 22, 23, 24, 25, 26]], "int32")
    mask = (ids > 0).astype("int32")
    out = np.asarray(half({"token_ids": ids, "padding_mask": mask}), "float32")
    assert np.isfinite(out).all()
    expected = np.asarray(reference({"token_ids": ids, "padding_mask": mask}))
    real = mask.astype(bool)
    np.testing.assert_allclose(out[real], expected[real], atol=2e-2)


def _half_lm(optimizer):
    with precision.dtype_policy("mixed_float16"):
        model = gk.GPTLMModel(gk.GPTBackbone(**tiny_config().to_dict()))
    model.compile(optimizer=optimizer, auto_scale_loss=False)
    return model


def test_loss_scaling_skips_overflowing_steps_then_trains():
    # 2**40 makes float16 gradients overflow: the step is skipped and the scale halves.
    model = _half_lm(OpenAIAdam(1e-3, dynamic_loss_scale=True, initial_loss_scale=2.0 ** 40))
    batch = next(iter(_lm_data()))
    before = [w.numpy() for w in model.trainable_weights]
    model.train_on_batch(batch)
    opt = model.optimizer
    assert float(opt.loss_scale.numpy()) == 2.0 ** 39
    assert int(opt.iterations.numpy()) == 1  # the skipped step still counts: resume stays on the stream
    for a, b in zip(before, model.trainable_weights):
        np.testing.assert_array_equal(a, b.numpy())
    opt.loss_scale.assign(2.0 ** 8)  # as if halved 31 times more
    for _ in range(3):
        model.train_on_batch(batch)
    assert float(opt.loss_scale.numpy()) == 2.0 ** 8
    moved = max(np.abs(a - b.numpy()).max() for a, b in zip(before, model.trainable_weights))
    assert moved > 1e-4 and all(np.isfinite(w.numpy()).all() for w in model.trainable_weights)


def test_loss_scaling_unscales_the_summed_gradients_before_clipping():
    opt = OpenAIAdam(1e-3, dynamic_loss_scale=True, initial_loss_scale=1024.0, max_grad_norm=1.0)
    variable = keras.Variable(np.zeros((2, 2), "float32"))
    opt.build([variable])
    small = np.full((2, 2), 0.25, "float32")  # norm 0.5: kept as is once unscaled
    (grad, _), = opt._all_reduce_sum_gradients([(tf.constant(1024.0 * small), variable)])
    np.testing.assert_allclose(grad, small, rtol=1e-6)
    (grad, _), = opt._all_reduce_sum_gradients([(tf.constant(1024.0 * 4 * small), variable)])
    np.testing.assert_allclose(np.linalg.norm(grad), 1.0, rtol=1e-6)  # norm 2 clipped to 1


def test_loss_scale_state_is_checkpointed_and_resumed(tmp_path):
    settings = _settings(dtype_policy="mixed_float16", checkpoint_dir=str(tmp_path), epochs=2)

    class LowerScale(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.model.optimizer.loss_scale.assign(1024.0)

    keras.utils.set_random_seed(4)
    first, _ = pretrain(tiny_config(), _lm_data(), settings, strategy=SINGLE, callbacks=[LowerScale()])
    assert int(first.optimizer._finite_steps.numpy()) == 4
    resumed, history = pretrain(tiny_config(), _lm_data(), TrainSettings(**{**vars(settings), "epochs": 3}),
                                strategy=SINGLE)
    assert len(history.history["loss"]) == 1  # only the third epoch ran
    assert float(resumed.optimizer.loss_scale.numpy()) == 1024.0
    assert int(resumed.optimizer._finite_steps.numpy()) == 6


def test_bfloat16_pretraining_tracks_float32_within_the_seed_spread():
    # A learnable stream (a repeated phrase) so the loss falls well below log(vocab).
    phrase = np.array([5, 17, 42, 8, 63, 29, 71, 12], "int32")
    ids = np.tile(phrase, (32, 2))
    for row in range(32):
        ids[row] = np.roll(ids[row], row)
    data = tf.data.Dataset.from_tensor_slices({"token_ids": ids, "padding_mask": np.ones_like(ids)}).batch(8)

    def curve(policy, seed):
        keras.utils.set_random_seed(seed)
        settings = _settings(dtype_policy=policy, learning_rate=3e-3, epochs=24, steps_per_epoch=1)
        return np.array(pretrain(tiny_config(), data, settings, strategy=SINGLE)[1].history["loss"])

    fp32_a, fp32_b, bf16 = curve("float32", 0), curve("float32", 1), curve("mixed_bfloat16", 0)
    assert fp32_a[-1] < 0.5 * fp32_a[0]  # it learned
    spread = np.abs(fp32_a - fp32_b).mean()
    assert np.abs(bf16 - fp32_a).mean() <= spread, (bf16, fp32_a, fp32_b)


def test_pipeline_key_reaches_the_train_settings():
    from pipelines.config.training import FinetuneSpec, PretrainSpec
    from pipelines.config.validation import ConfigError, build_section
    from pipelines.trainer import train_settings

    spec = build_section(FinetuneSpec, {"dtype_policy": "mixed_float16"}, "finetune")
    assert train_settings(spec, steps_per_pass=4).dtype_policy == "mixed_float16"
    default = train_settings(build_section(PretrainSpec, {}), steps_per_pass=4)
    assert default.dtype_policy == "auto" and default.jit_compile is None  # both follow the machine
    with pytest.raises(ConfigError, match=r"pretrain\.dtype_policy.*mixed_bfloat16"):
        build_section(PretrainSpec, {"dtype_policy": "bf16"}, "pretrain")


# ------------------------------------------------------------------ auto: precision that follows the hardware

AVX2 = frozenset({"avx2", "fma"})
ZEN4 = AVX2 | {"avx512f", "avx512_bf16"}
SAPPHIRE_RAPIDS = ZEN4 | {"amx_tile", "amx_bf16"}


@pytest.fixture
def cpu(monkeypatch):
    """Fakes the CPU's flags (no GPU here): cpu(flags)."""
    precision._warn_emulated.cache_clear()
    yield lambda flags: monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    precision._warn_emulated.cache_clear()


@pytest.mark.parametrize("flags,width,want", [
    (AVX2, 768, "float32"),                   # emulated bf16: slower than fp32
    (ZEN4, 768, "mixed_bfloat16"),            # bf16 dot products in hardware
    (SAPPHIRE_RAPIDS, 768, "mixed_bfloat16"),
    (SAPPHIRE_RAPIDS, 256, "float32"),        # too narrow to be matmul-bound
    (frozenset(), 768, "float32"),            # flags unknown (not Linux): the safe choice
])
def test_auto_policy_follows_the_cpu_and_the_model_width(cpu, flags, width, want):
    cpu(flags)
    assert precision.resolve_policy("auto", width) == want


@pytest.mark.parametrize("limit,want", [("AVX2", "float32"), ("avx512_core", "float32"),
                                        ("AVX512_CORE_BF16", "mixed_bfloat16"), ("", "mixed_bfloat16")])
def test_auto_policy_follows_a_onednn_isa_limit(cpu, monkeypatch, limit, want):
    """ONEDNN_MAX_CPU_ISA below bf16 makes oneDNN emulate it even on a bf16 CPU (bench/ --isa avx2)."""
    cpu(ZEN4)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", limit)
    assert precision.resolve_policy("auto", 768) == want


def test_explicit_bf16_without_hardware_warns_once_and_is_kept(cpu, caplog):
    cpu(AVX2)
    caplog.set_level(logging.WARNING, logger="gpt_keras.precision")
    for _ in range(3):
        assert precision.resolve_policy("mixed_bfloat16", 768) == "mixed_bfloat16"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "emulated" in warnings[0] and "0.97x" in warnings[0]
    cpu(ZEN4)
    precision._warn_emulated.cache_clear()
    caplog.clear()
    assert precision.resolve_policy("mixed_bfloat16", 768) == "mixed_bfloat16"
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("flags,batch,want", [(AVX2, 1, "fp32"), (ZEN4, 1, "fp32"),
                                              (SAPPHIRE_RAPIDS, 1, "bf16"), (SAPPHIRE_RAPIDS, 8, "fp32")])
def test_auto_generation_weights_are_bf16_only_where_measured_faster(cpu, flags, batch, want):
    cpu(flags)
    assert precision.resolve_weights("auto", batch) == want


def test_auto_generation_weights_follow_a_onednn_isa_limit(cpu, monkeypatch):
    """Under bench/'s AVX2 limit oneDNN has no bf16 kernels: auto must not pick them."""
    cpu(SAPPHIRE_RAPIDS)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert precision.resolve_weights("auto", 1) == "fp32"


def test_auto_training_builds_the_resolved_policy(cpu):
    """TrainSettings' default is auto: a tiny model trains in float32 even on a bf16 CPU."""
    cpu(SAPPHIRE_RAPIDS)
    assert TrainSettings().dtype_policy == "auto"
    model, _ = pretrain(tiny_config(), _lm_data(), _settings(), strategy=SINGLE)
    assert model.backbone.blocks[0].c_fc.compute_dtype == "float32"
    wide = tiny_config().replace(n_embd=512, n_head=4)
    model, _ = pretrain(wide, _lm_data(), _settings(steps_per_epoch=1), strategy=SINGLE)
    assert model.backbone.blocks[0].c_fc.compute_dtype == "bfloat16"


def test_the_gpu_check_skips_cleanly_without_a_gpu():
    import os
    import subprocess

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is here: bench/gpu_check.sh would run the benchmarks")
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "gpu_check.sh")
    done = subprocess.run(["bash", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "no GPU visible" in done.stdout and "skipped" in done.stdout, done.stderr


def test_bench_isa_limit_reruns_with_every_library_limited(tmp_path):
    """bench/ --isa avx2: the benchmark re-runs itself with oneDNN, XLA, torch and MKL
    limited, and names the limit beside the CPU's flags."""
    import os
    import subprocess
    import sys

    bench = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
    script = tmp_path / "probe.py"
    script.write_text(f"import os, sys\nsys.path.insert(0, {bench!r})\nimport machine\nprint('start')\n"
                      "machine.limit_isa('avx2')\n"
                      "print(os.environ['ONEDNN_MAX_CPU_ISA'], os.environ['ATEN_CPU_CAPABILITY'], "
                      "os.environ['XLA_FLAGS'])\nprint(machine.cpu_flags())\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "XLA_FLAGS": "--xla_cpu_use_thunk_runtime=true"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:2] == ["start", "start"]  # re-run once, not again
    assert lines[2] == "AVX2 avx2 --xla_cpu_use_thunk_runtime=true --xla_cpu_max_isa=AVX2"
    assert lines[3].endswith("; kernels limited to AVX2]")


def test_a_bench_worker_that_dies_ends_the_benchmark_with_its_exit_code(tmp_path):
    """A system's process aborting (as oneDNN does for bf16 under the AVX2 limit)
    stops the driver with the exit code instead of leaving it waiting forever."""
    import os
    import subprocess
    import sys

    bench = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
    script = tmp_path / "die.py"
    script.write_text(f"import os, sys\nsys.path.insert(0, {bench!r})\nimport machine\n"
                      "def die(conn):\n    os._exit(3)\n"
                      "if __name__ == '__main__':\n    machine.Worker('dying', die).recv()\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "benchmark worker 'dying' died (exit code 3)" in out.stderr, out.stderr


def test_bench_refuses_tensorflow_bf16_systems_under_the_isa_limit(monkeypatch):
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
    import machine

    machine.check_systems_under_limit(["keras_xla", "ours_bf16"])  # no limit: anything runs
    monkeypatch.setenv("GPT_KERAS_BENCH_ISA", "AVX2")
    machine.check_systems_under_limit(["keras_xla", "hf_torch_bf16"])
    with pytest.raises(SystemExit, match=r"--isa avx2: \['ours_bf16'\] cannot be measured under the limit"):
        machine.check_systems_under_limit(["keras_xla", "ours_bf16"])

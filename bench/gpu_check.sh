#!/usr/bin/env bash
# The GPU check of issue 24, prepared to run in one short call on a machine
# with an NVIDIA GPU (under 5 minutes): the gpt1 training step in float32 + XLA,
# mixed_bfloat16 and auto against keras-hub and HF torch (bf16 autocast), then
# greedy generation, each printing its ratios. Without a GPU it says so and
# exits 0, so CI and CPU machines can run it.
#   bash bench/gpu_check.sh            # from the repository root
#   GPU_CHECK_ROUNDS=2 bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${GPU_CHECK_ROUNDS:-2}"

gpus=$(python - <<'PY' 2>/dev/null || echo 0
import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf
print(len(tf.config.list_physical_devices("GPU")))
PY
)
if [ "${gpus:-0}" = "0" ]; then
  echo "gpu_check: no GPU visible to TensorFlow here; nothing to check (skipped)"
  exit 0
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv,noheader
python - <<'PY'
from gpt_keras import precision
print("auto picks:", precision.resolve_policy("auto", 768), "for gpt1;", precision.fast_bf16())
PY
echo "== training step, gpt1, 8 x 128 (${ROUNDS} rounds, systems alternate per round)"
timeout 200 python bench/bench_train.py --preset gpt1 --batch 8 --rounds "$ROUNDS" --min-seconds 2 \
  --systems keras_xla,keras_bf16_xla,keras_bf16,keras_hub,hf_torch,hf_torch_bf16
echo "== greedy generation, gpt1 shape, batch 1 and 8"
timeout 90 python bench/bench_generate.py --rounds "$ROUNDS" --new_tokens 64 --systems ours_xla,ours_bf16,keras_hub_xla

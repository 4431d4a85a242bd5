"""What a benchmark ran on: the CPU, its vector/matrix flags, the load.

Every figure a benchmark prints depends on these (oneDNN picks its kernels
by the flags; the load says how shared the machine was), so the serving
benchmarks print `machine_line()` when they start and when they end.
"""
from __future__ import annotations

import os
import platform
import sys

# The flags that decide which kernels oneDNN and Eigen use for fp32 / bf16 / int8.
FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")


def cpu_flags() -> str:
    """The CPU's model name and which of `FLAGS` it has (Linux /proc/cpuinfo)."""
    model, flags = platform.processor() or "?", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    limited = f"; kernels limited to {os.environ[_ISA_MARK]}" if os.environ.get(_ISA_MARK) else ""
    return f"{model} [{' '.join(f for f in FLAGS if f in flags) or 'flags unknown'}{limited}]"


def machine_line() -> str:
    """CPU count, model and flags, and the 1/5/15-minute load averages now."""
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"machine: {os.cpu_count()} CPUs, {cpu_flags()}; load average {load}"


# What `limit_isa` sets: oneDNN (TF's and torch's matmuls), XLA's CPU code
# generator, torch's own ATen kernels and MKL. TF's Eigen kernels are built for
# AVX2 already. The mark tells the re-run process (and `cpu_flags`) it is done.
ISAS = ("avx2",)
_ISA_MARK = "GPT_KERAS_BENCH_ISA"


def limit_isa(isa: str | None) -> None:
    """Re-runs this benchmark with every library limited to `isa` ("avx2"), so
    that an AVX-512 machine measures what an AVX2-only CPU would run; the
    environment must be set before TensorFlow or torch load, hence the re-run.
    None: nothing to do."""
    if not isa or os.environ.get(_ISA_MARK) == isa.upper():
        return
    if isa not in ISAS:
        raise SystemExit(f"--isa {isa!r}: choose one of {ISAS}")
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2", ATEN_CPU_CAPABILITY="avx2", MKL_ENABLE_INSTRUCTIONS="AVX2",
               XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_max_isa=AVX2".strip(), **{_ISA_MARK: "AVX2"})
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

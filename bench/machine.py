"""What a benchmark ran on: the CPU, its vector/matrix flags, the load.

Every figure a benchmark prints depends on these (oneDNN picks its kernels
by the flags; the load says how shared the machine was), so the serving
benchmarks print `machine_line()` when they start and when they end.
"""
from __future__ import annotations

import os
import platform

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
    return f"{model} [{' '.join(f for f in FLAGS if f in flags) or 'flags unknown'}]"


def machine_line() -> str:
    """CPU count, model and flags, and the 1/5/15-minute load averages now."""
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"machine: {os.cpu_count()} CPUs, {cpu_flags()}; load average {load}"

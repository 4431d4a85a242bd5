"""What a benchmark ran on: the CPU, its vector/matrix flags, the load; and
the worker process each compared system runs in.

Every figure a benchmark prints depends on these (oneDNN picks its kernels
by the flags; the load says how shared the machine was), so the serving
benchmarks print `machine_line()` when they start and when they end.
"""
from __future__ import annotations

import multiprocessing
import os
import platform
import sys
from typing import Any, Callable

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
    limited = f"; kernels limited to {isa_limit()}" if isa_limit() else ""
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


# Systems that cannot run under `limit_isa`: outside XLA, TF chooses its bf16
# kernels by the CPU's real flags and hands them to oneDNN, which, limited to
# AVX2, has none (the worker aborts with "dnnl::error: could not create a
# primitive descriptor"). XLA's bf16 dots and torch's bf16 autocast still run.
TF_BF16_SYSTEMS = ("keras_bf16", "matmul_bf16", "ours_bf16")


def isa_limit() -> str | None:
    """The instruction set `limit_isa` limited this process to ("AVX2"), or None."""
    return os.environ.get(_ISA_MARK) or None


def check_systems_under_limit(systems: list[str]) -> None:
    """Refuses, with the reason, TensorFlow bf16 systems while `limit_isa` is in force."""
    limit = isa_limit()
    refused = [s for s in systems if s in TF_BF16_SYSTEMS]
    if limit and refused:
        raise SystemExit(f"--isa {limit.lower()}: {refused} cannot be measured under the limit (TensorFlow picks "
                         "bf16 kernels by the CPU's real flags and oneDNN, limited, has none, so the process "
                         "aborts); drop them, or time them on a real AVX2 CPU, where they run emulated")


class Worker:
    """One compared system in its own spawned process, driven over a pipe, so
    that one framework's thread pools and memory cannot slow another.

    `target(*args, conn)` runs in the child. A child that dies (a library
    aborting) ends the benchmark with its exit code: the driver closes its copy
    of the child's end, so it sees end-of-file instead of waiting forever."""

    def __init__(self, label: str, target: Callable[..., None], *args: Any):
        ctx = multiprocessing.get_context("spawn")
        self.label = label
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=target, args=(*args, child), daemon=True)
        self.process.start()
        child.close()

    def recv(self) -> Any:
        try:
            return self.conn.recv()
        except EOFError:
            self.process.join()
            raise SystemExit(f"benchmark worker {self.label!r} died (exit code {self.process.exitcode}); "
                             "its error is printed above") from None

    def ask(self, request: Any) -> Any:
        """Sends `request` and returns the answer."""
        self.conn.send(request)
        return self.recv()

    def close(self, stop: Any) -> None:
        """Sends `stop` (if the worker still runs) and waits for it to exit."""
        if self.process.is_alive():
            try:
                self.conn.send(stop)
            except OSError:  # it died meanwhile
                pass
        self.process.join()

"""What this CPU computes fast: bfloat16 matmuls, and its name for printed figures."""

from __future__ import annotations

import platform
import time
from functools import cache
from pathlib import Path

import torch

MATMUL_SIZE = 256
REPEATS = 5


def _best_seconds(a: torch.Tensor, b: torch.Tensor) -> float:
    """Best wall time of ``a @ b`` over :data:`REPEATS` runs, after one warm-up."""
    a @ b
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return best


@cache
def matmul_rates() -> tuple[float, float]:
    """One thread's float32 and bfloat16 rates (GFLOP/s) of a 256 x 256 matmul on this CPU,
    measured once per process (well under a second, even where bfloat16 falls back to a
    slow generic kernel)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        generator = torch.Generator().manual_seed(0)
        a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=generator)
        b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=generator)
        flops = 2 * MATMUL_SIZE**3 / 1e9
        fp32 = flops / _best_seconds(a, b)
        bf16 = flops / _best_seconds(a.bfloat16(), b.bfloat16())
    finally:
        torch.set_num_threads(threads)
    return fp32, bf16


def fast_bf16() -> bool:
    """Whether bfloat16 matmuls are faster than float32 ones on this CPU, as measured
    (:func:`matmul_rates`). oneDNN's support flag is not enough: an Intel CPU with
    AVX512-BF16 and no AMX was measured at 74-77 GFLOP/s in bfloat16 against 129-146 in
    float32, and AVX2-only CPUs fall back to a kernel tens of times slower than float32."""
    fp32, bf16 = matmul_rates()
    return bf16 > fp32


def cpu_name() -> str:
    """The CPU's model name (and, on Linux, family and model numbers), as lscpu shows it."""
    cpuinfo = Path("/proc/cpuinfo")
    fields: dict[str, str] = {}
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if not line.strip():
                break
            fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name

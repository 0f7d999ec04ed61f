"""What this CPU computes fast: bfloat16 matmuls, and its name for printed figures."""

from __future__ import annotations

import platform
from functools import cache
from pathlib import Path

import torch


@cache
def fast_bf16() -> bool:
    """Whether torch runs bfloat16 matmuls on this CPU with oneDNN's kernels: x86 with
    AVX512 (native with AVX512-BF16 or AMX, emulated but about as fast as float32
    without), Arm with BF16. Elsewhere (AVX2-only x86 such as many AMD Zen 2/3 and older
    Intel parts, Arm without BF16, builds without oneDNN) torch falls back to a generic
    kernel tens of times slower than float32 (2.7 against 111 GFLOP/s on one thread of the
    README's CPU limited to AVX2 by ``ONEDNN_MAX_CPU_ISA=AVX2``).

    This is the check torch's own CPU matmuls make to use oneDNN for bfloat16, so it
    honours ``ONEDNN_MAX_CPU_ISA``.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # built without oneDNN
        return False


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

"""What makes an evaluation reproducible: probe seeds, the probe thread count, the record.

* **Seeds.** Every probe (heareval's predictor or the localization probe) is trained from
  a seed derived from the base seed and the names of what it is: the task, the model
  (:func:`model_key`), the test fold and the grid point (:func:`probe_seed`). A probe's
  result therefore does not depend on what ran before it in the same process (how many
  random numbers earlier grid points drew), on the task order or on the other models.
* **Threads.** PyTorch's CPU kernels split reductions (BatchNorm statistics, the weight
  gradients of a Linear layer) into one chunk per intra-op thread, so the same probe trained
  with 1 and with 2 threads ends in weights that differ in the last bits, and early stopping
  and model selection can then part ways. Probes are small, so they are trained with
  :data:`PROBE_THREADS` intra-op threads whatever ``OMP_NUM_THREADS`` or
  ``torch.set_num_threads`` say (:func:`probe_threads`). Embeddings are not pinned: the
  encoders' kernels (matrix products, layer norms, FFTs) give the same bits with 1 and 2
  threads on the CPUs tested (see the README), and embedding is where the time goes.
* **The record.** :func:`environment` names the CPU, its vector extensions, the library
  versions and the thread counts, written into ``summary.json``: across CPUs with other
  vector units (AVX2 against AVX-512) kernels round differently and bit-identity is not
  expected, only agreement within the confidence intervals.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from natheear_tasks.seeding import derive_seed

DEFAULT_SEED = 42  # heareval's own seed
PROBE_THREADS = 1


def conf_id(conf: dict) -> str:
    """A grid point as stable JSON: classes and functions by name (not by address)."""
    return json.dumps({k: json_value(v) for k, v in sorted(conf.items())}, sort_keys=True)


def json_value(value: object) -> object:
    """A hyper-parameter value as JSON: literals as they are, classes and functions by name."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return getattr(value, "__name__", str(value))


def probe_seed(seed: int, task: str, model: str, fold: str, conf: dict) -> int:
    """The seed of one probe, in ``[0, 2**32)`` (what Lightning and numpy accept).

    Args:
        seed: the evaluation's base seed.
        task: the task directory's name.
        model: the model's :func:`model_key`.
        fold: the test split(s), e.g. ``"test"`` or ``"fold01"``.
        conf: the grid point (hyper-parameters).
    """
    return derive_seed(seed, "probe", task, model, fold, conf_id(conf)) % (1 << 32)


def model_key(module: str, weights_sha256: str | None, model: str | None, options: dict) -> str:
    """A short name of a model for seeds: its module, weights (by content) and load options.

    The label and the path of the weights do not enter, so renaming either leaves the
    scores as they are.
    """
    identity = {"module": module, "weights": weights_sha256 or model, "options": options}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


@contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` intra-op threads, then restore the count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def probe_threads() -> AbstractContextManager[None]:
    """Run the block with :data:`PROBE_THREADS` intra-op threads, then restore the count."""
    return intra_op_threads(PROBE_THREADS)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def environment() -> dict:
    """The machine and software a summary's numbers were computed with."""
    import numpy as np
    import torch

    return {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "threads": {
            "embedding": torch.get_num_threads(),
            "probe_training": PROBE_THREADS,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        },
    }

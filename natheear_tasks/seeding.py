"""Random generators derived from a seed and an identity, independent of processing order."""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from ``seed`` and the parts naming one item (a scene index, a file)."""
    text = "\x1f".join([str(int(seed)), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(seed: int, *parts: object) -> np.random.Generator:
    """``np.random.default_rng(derive_seed(seed, *parts))``."""
    return np.random.default_rng(derive_seed(seed, *parts))

"""Training checkpoints: written atomically, read back to continue a run exactly.

A run folder holds ``checkpoints/step-NNNNNNNNN/`` folders and ``checkpoints/latest`` (the
name of the newest). Each checkpoint folder has

* ``model.safetensors``: the whole pretraining model (``encoder.*``, ``decoder.*``);
* ``state.pt``: optimiser, scheduler, step, config, and per rank the RNG states (Python,
  NumPy, torch CPU and CUDA) and the data position; plain tensors and containers, read
  with ``torch.load(weights_only=True)``.

A checkpoint is written to a hidden temporary folder and renamed into place, then
``latest`` is replaced (also by rename), so a crash at any moment leaves the previous
checkpoint intact and ``latest`` naming a complete one.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from hear_gram.atomic import save_safetensors, temp_dir
from hear_gram.checkpoint import load_state_strict

CHECKPOINTS = "checkpoints"
LATEST = "latest"
WEIGHTS = "model.safetensors"
STATE = "state.pt"


def rng_state() -> dict:
    """This process's random generator states, as tensors and plain containers."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    return {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "gauss": gauss,
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(run: Path) -> Path:
    return Path(run) / CHECKPOINTS


def step_name(step: int) -> str:
    return f"step-{step:09d}"


def latest(run: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    pointer = checkpoint_dir(run) / LATEST
    if not pointer.is_file():
        return None
    path = checkpoint_dir(run) / pointer.read_text().strip()
    return path if (path / STATE).is_file() else None


def save(
    run: Path,
    step: int,
    model: nn.Module,
    train_state: dict,
    rank_states: list[dict],
    keep: int = 0,
) -> Path:
    """Write a checkpoint atomically and point ``latest`` to it; call on rank 0 only.

    Args:
        model: the bare model (not a DDP or compiled wrapper).
        train_state: optimiser, scheduler, config and anything else shared by the ranks.
        rank_states: one entry per rank (RNG states, data position).
        keep: keep the newest ``keep`` step checkpoints and delete older ones (0 keeps all).
    """
    root = checkpoint_dir(run)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_name(step)
    tmp = temp_dir(root, f".{final.name}.")
    try:
        weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_safetensors(weights, tmp / WEIGHTS, metadata={"format": "pt", "step": str(step)})
        torch.save({**train_state, "step": step, "ranks": rank_states}, tmp / STATE)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    pointer = root / f".{LATEST}.tmp"
    pointer.write_text(final.name + "\n")
    os.replace(pointer, root / LATEST)
    if keep:
        for old in sorted(root.glob("step-*"))[:-keep]:
            shutil.rmtree(old)
    return final


def read_state(path: Path) -> dict:
    """A checkpoint's ``state.pt``: ``step``, ``ranks``, optimiser, scheduler, config."""
    return torch.load(Path(path) / STATE, map_location="cpu", weights_only=True)


def load(path: Path, model: nn.Module) -> dict:
    """Load a checkpoint's weights into ``model`` (strictly) and return :func:`read_state`."""
    load_state_strict(model, load_file(Path(path) / WEIGHTS), str(path))
    return read_state(path)

"""Training checkpoints: written atomically, read back to continue a run exactly.

A run folder holds ``checkpoints/step-NNNNNNNNN/`` folders and ``checkpoints/latest`` (the
name of the newest). Each checkpoint folder has

* ``model.safetensors``: the whole pretraining model (``encoder.*``, ``decoder.*``);
* ``state.pt``: optimiser, scheduler, step, config, and per rank the RNG states (Python,
  NumPy, torch CPU and CUDA) and the data position; plain tensors and containers, read
  with ``torch.load(weights_only=True)``.

A checkpoint is written to a hidden temporary folder (its files flushed to disk) and renamed
into place, then ``latest`` is replaced (also by rename), so a crash at any moment leaves
the previous checkpoint intact and ``latest`` naming a complete one. Resuming takes the
newest checkpoint that reads back whole (:func:`newest_intact`): one damaged later (a
truncated copy, a full disk) is named and skipped. A training process holds the run
folder's lock (:class:`RunLock`) while it runs, and removes the temporary folders that
killed runs left behind.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from hear_gram.atomic import save_safetensors, temp_dir
from hear_gram.checkpoint import read_weights
from hear_gram.errors import CheckpointError
from natheear_tasks import locks

CHECKPOINTS = "checkpoints"
LATEST = "latest"
WEIGHTS = "model.safetensors"
STATE = "state.pt"
LOCK = ".lock"
STATE_KEYS = ("step", "ranks", "optimizer", "scheduler", "config", "world_size", "readers")
_STEP = re.compile(r"^step-(\d{9})$")
# save()'s temporary folders (.step-NNNNNNNNN. and 8 characters, also tempfile's) and the
# temporary pointer.
_TEMPORARY = re.compile(r"^\.step-\d{9}\.[a-z0-9_]{8}$")
_POINTER_TMP = f".{LATEST}.tmp"

log = logging.getLogger(__name__)


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
    """The folder of a run's checkpoints."""
    return Path(run) / CHECKPOINTS


def step_name(step: int) -> str:
    """A checkpoint's folder name, ``step-NNNNNNNNN``."""
    return f"step-{step:09d}"


def latest(run: Path) -> Path | None:
    """The checkpoint ``latest`` names, when it has a state file; else None."""
    pointer = checkpoint_dir(run) / LATEST
    if not pointer.is_file():
        return None
    path = checkpoint_dir(run) / pointer.read_text().strip()
    return path if (path / STATE).is_file() else None


def step_folders(run: Path) -> list[Path]:
    """The run's ``step-NNNNNNNNN`` folders, newest first."""
    root = checkpoint_dir(run)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP.match(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: p.name, reverse=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        keep: keep the newest ``keep`` checkpoints up to ``step`` and delete older ones (0
            keeps all); later ones (left by a damaged checkpoint resumed before) stay until
            this run writes their step again.
    """
    root = checkpoint_dir(run)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_name(step)
    tmp = temp_dir(root, f".{final.name}.")
    try:
        weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_safetensors(weights, tmp / WEIGHTS, metadata={"format": "pt", "step": str(step)})
        torch.save({**train_state, "step": step, "ranks": rank_states}, tmp / STATE)
        for path in (tmp / WEIGHTS, tmp / STATE, tmp):
            _fsync(path)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    pointer = root / _POINTER_TMP
    pointer.write_text(final.name + "\n")
    os.replace(pointer, root / LATEST)
    _fsync(root)
    if keep:
        done = [p for p in step_folders(run) if p.name <= final.name]
        for old in done[keep:]:
            shutil.rmtree(old)
    return final


def read_state(path: Path) -> dict:
    """A checkpoint's ``state.pt``: ``step``, ``ranks``, optimiser, scheduler, config.

    Raises:
        CheckpointError: missing, unreadable (truncated) or without those entries.
    """
    file = Path(path) / STATE
    if not file.is_file():
        raise CheckpointError(f"{file} does not exist")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # torch reports a damaged zip or pickle through many types
        raise CheckpointError(
            f"{file} is unreadable ({type(error).__name__}: {error}); it is truncated or damaged"
        ) from None
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{file} lacks {missing}; it was not written by this training")
    return state


def read(path: Path) -> tuple[dict[str, Tensor], dict]:
    """A checkpoint's weights and :func:`read_state`.

    Raises:
        CheckpointError: either file missing or damaged; the message names it.
    """
    return read_weights(Path(path) / WEIGHTS), read_state(path)


@dataclass
class Intact:
    """The checkpoint to resume from, and why each newer one cannot be."""

    path: Path
    weights: dict[str, Tensor]
    state: dict
    skipped: list[str]


def newest_intact(run: Path) -> Intact | None:
    """The newest checkpoint of ``run`` that reads back whole; None when the run has none.

    Raises:
        CheckpointError: the run has checkpoints but none is intact (each one's problem is
            named).
    """
    skipped = []
    for folder in step_folders(run):
        try:
            weights, state = read(folder)
        except CheckpointError as error:
            skipped.append(f"{folder.name}: {error}")
            continue
        return Intact(folder, weights, state, skipped)
    if skipped:
        raise CheckpointError(
            f"{run} has no intact checkpoint to resume from: " + "; ".join(skipped) + ". "
            "Restore one (from a backup), or start a new run in another --out"
        )
    return None


class RunInUse(Exception):
    """Another process holds the run folder's lock."""


class RunLock:
    """An exclusive lock on a run folder (``flock`` of ``RUN/.lock``), held by the training
    process that writes its checkpoints, so that another one cannot write into it too and
    the temporary folders of killed runs can be removed safely."""

    def __init__(self, run: Path) -> None:
        self.run = Path(run)
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            self.fd = locks.acquire(self.run / LOCK, f"the run folder {self.run}")
        except locks.OutputInUse as error:
            raise RunInUse(f"{error} (or choose another --out)") from None
        except OSError as error:  # a file system without flock
            log.warning(
                "cannot lock %s (%s): temporary folders of killed runs are left in place",
                self.run / LOCK,
                error,
            )
        return self

    @property
    def held(self) -> bool:
        return self.fd is not None

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            locks.release(self.fd)
            self.fd = None


def remove_temporaries(run: Path, lock: RunLock) -> list[Path]:
    """Remove what killed runs left in ``run``'s checkpoints folder: :func:`save`'s hidden
    temporary ``.step-*`` folders and pointer file. Needs ``lock`` held (no process is
    writing them); anything else, links included, is left alone. Returns what was removed.
    """
    root = checkpoint_dir(run)
    if not lock.held or not root.is_dir():
        return []
    removed = []
    for path in sorted(root.iterdir()):
        if path.is_symlink():
            continue
        if _TEMPORARY.match(path.name) and path.is_dir():
            shutil.rmtree(path)
            removed.append(path)
        elif path.name == _POINTER_TMP and path.is_file():
            path.unlink()
            removed.append(path)
    return removed

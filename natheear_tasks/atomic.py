"""Atomic file writes: a temporary file (or folder) beside the target, then one rename.

Temporaries are created with mode 0666 (folders 0777) less the umask, as any tool's files
are, so that other users can read results on a shared machine (``tempfile.mkstemp`` and
``mkdtemp`` would give 0600 and 0700, and the rename would keep them).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def temporary_file(folder: Path, prefix: str, suffix: str = ".tmp") -> tuple[int, Path]:
    """A new file ``folder/<prefix><random><suffix>``, open for writing: ``(fd, path)``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        path = folder / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue


def temporary_folder(parent: Path, prefix: str) -> Path:
    """A new empty folder ``parent/<prefix><random>``."""
    while True:
        path = parent / f"{prefix}{secrets.token_hex(6)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Create or replace ``path`` with what ``write(file)`` writes, through a temporary file
    in the same folder (removed if anything fails)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_file(path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Create or replace ``path`` with ``data`` atomically."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: Path, data, indent: int | None = None) -> None:
    """``data`` as JSON (sorted keys, a final newline), written atomically."""
    atomic_write_bytes(path, (json.dumps(data, indent=indent, sort_keys=True) + "\n").encode())

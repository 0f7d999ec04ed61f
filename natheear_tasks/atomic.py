"""Atomic file writes: a temporary file (or folder) beside the target, then one rename.

Temporaries come from :mod:`hear_gram.atomic`: mode 0666 (folders 0777) less the umask, as
any tool's files are, so that other users can read results on a shared machine.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from hear_gram.atomic import temp_dir, temp_file


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Create or replace ``path`` with what ``write(file)`` writes, through a temporary file
    in the same folder (removed if anything fails)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file(path.parent, f".{path.name}.", ".tmp")
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


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Create the folder ``path`` complete or not at all: the block fills the temporary
    folder it is given (hidden, beside ``path``), which is renamed to ``path`` when the
    block ends and removed if it raises."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = temp_dir(path.parent, f".{path.name}.")
    try:
        yield staging
        staging.rename(path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

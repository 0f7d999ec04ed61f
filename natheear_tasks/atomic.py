"""Atomic file writes: a temporary file (or folder) beside the target, then one rename.

Temporaries come from :mod:`hear_gram.atomic`: mode 0666 (folders 0777) less the umask, as
any tool's files are, so that other users can read results on a shared machine.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from hear_gram.atomic import temp_dir, temp_file
from natheear_tasks import locks


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Create or replace ``path`` with what ``write(file)`` writes, through a temporary file
    in the same folder (removed if anything fails)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file(path.parent, f".{path.name}.", ".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise named(error, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    """``path.write_bytes(data)`` (not atomic: for files a journal vouches for), an error
    naming the file."""
    try:
        path.write_bytes(data)
    except OSError as error:
        raise named(error, path) from None


def named(error: OSError, path: Path) -> OSError:
    """``error`` with the file it was writing named (a failed ``write`` names none)."""
    return error if error.filename else OSError(error.errno, error.strerror, str(path))


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
    block ends and removed if it raises.

    The whole time, this process holds ``path``'s lock (:func:`natheear_tasks.locks.beside`:
    a second run on the same ``path`` stops with :class:`~natheear_tasks.locks.OutputInUse`),
    under which the temporary folders that killed runs left beside ``path`` are removed.

    Raises:
        FileExistsError: ``path`` exists (checked under the lock).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with locks.hold(locks.beside(path), str(path), remove=True):
        if path.exists():
            raise FileExistsError(f"{path} exists; give a new folder, or remove it")
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*"):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
        staging = temp_dir(path.parent, f".{path.name}.")
        try:
            yield staging
            staging.rename(path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

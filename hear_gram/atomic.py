"""Files written with the permissions of the umask, like any other tool's: temporary files
and folders for atomic writes (write, then rename into place) instead of tempfile's private
0600/0700 ones, since renamed into place they become the checkpoints and results other
users read; and safetensors files (``save_file`` writes them 0600)."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from safetensors.torch import save_file
from torch import Tensor

ATTEMPTS = 100


def temp_dir(parent: Path, prefix: str) -> Path:
    """A new empty folder ``parent / (prefix + 8 random hex digits)``, mode 0777 less the
    umask.

    Raises:
        FileExistsError: no free name after many attempts.
    """
    for _ in range(ATTEMPTS):
        path = Path(parent) / f"{prefix}{secrets.token_hex(4)}"
        try:
            path.mkdir(mode=0o777)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free temporary name {prefix}* in {parent}")


def temp_file(parent: Path, prefix: str, suffix: str = "") -> tuple[int, Path]:
    """A new empty file ``parent / (prefix + 8 random hex digits + suffix)``, mode 0666 less
    the umask, open for writing: ``(file descriptor, path)``.

    Raises:
        FileExistsError: no free name after many attempts.
    """
    for _ in range(ATTEMPTS):
        path = Path(parent) / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        return fd, path
    raise FileExistsError(f"no free temporary name {prefix}*{suffix} in {parent}")


def save_safetensors(tensors: dict[str, Tensor], path: Path, metadata: dict | None = None) -> None:
    """``safetensors.torch.save_file`` to a new file ``path``, with the mode ``open`` gives
    a new file there (0666 less the umask).

    ``save_file`` writes a private temporary file and renames it to ``path``; the mode is
    read from ``path`` created empty first, and set after.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    os.close(fd)
    save_file(tensors, path, metadata=metadata)
    os.chmod(path, mode)

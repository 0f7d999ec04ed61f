"""Output locks: two runs on one output cannot collide.

A command that writes an output takes an exclusive ``flock`` on a lock file beside or inside
it for as long as it runs; a second run on the same output stops at once, naming the
process that holds it. The kernel releases the lock when its holder exits, however it
ends, so a killed run never leaves a stale lock (the file stays, unlocked).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class OutputInUse(Exception):
    """Another process holds the output's lock."""


def _holder(lock_file: Path) -> str:
    """Who wrote the lock file last: ``pid N (command), since T``."""
    try:
        record = json.loads(lock_file.read_text())
        return f"pid {record['pid']} (`{record['command']}`), since {record['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path`` (not removed or replaced since)."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino)


def acquire(lock_file: Path, what: str) -> int:
    """Lock ``lock_file`` (created with the umask's permissions) without waiting and record
    this process in it; returns the open descriptor, to :func:`release` later.

    Raises:
        OutputInUse: another process holds it (named, with ``what`` it is using).
    """
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise OutputInUse(
                    f"{what} is in use by {_holder(lock_file)} (it holds {lock_file}); wait "
                    "for it to end, or stop it, then run again"
                ) from None
            raise
        if _same_file(fd, lock_file):
            break
        os.close(fd)  # its holder removed the file after we opened it: take the new one
    record = {
        "pid": os.getpid(),
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    return fd


def release(fd: int) -> None:
    """Release a lock taken by :func:`acquire` (closing its descriptor)."""
    os.close(fd)


@contextmanager
def hold(lock_file: Path, what: str, remove: bool = False) -> Iterator[None]:
    """:func:`acquire` ``lock_file`` for the ``with`` block; with ``remove``, the file is
    deleted before the lock is released (safe: :func:`acquire` does not trust a lock on a
    file that is no longer at its path)."""
    fd = acquire(lock_file, what)
    try:
        yield
    finally:
        if remove:
            lock_file.unlink(missing_ok=True)
        release(fd)


def beside(out: Path) -> Path:
    """The lock file of an output folder that is written all at once (a hidden sibling)."""
    return out.parent / f".{out.name}.lock"

"""Exit codes and one-line messages of the ``natheear-tasks`` subcommands: 0 done, 2 bad
input (``error: ...``), 1 a failure the user can act on (a worker process died, the disk
is full), 130 interrupted (SIGINT), 143 stopped by SIGTERM (children stopped first:
:mod:`natheear_tasks.children`). What the user can do next depends on whether the command
resumes or writes all or nothing."""

from __future__ import annotations

import errno
import shutil
import sys
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from natheear_tasks.children import Terminated
from natheear_tasks.locks import OutputInUse

INTERRUPTED = 130
TERMINATED = 143


@dataclass(frozen=True)
class Stopped:
    """What a command prints when it is interrupted or loses a worker process, and what a
    rerun does."""

    interrupted: str
    worker_died: str
    rerun: str


_DIED = "error: a worker process died (killed, or out of memory?); "
# a command that keeps finished work and resumes when rerun
RESUMABLE = Stopped(
    "interrupted; rerun the same command to resume",
    _DIED + "rerun the same command to resume, with fewer --workers if memory is short",
    "rerun the same command once there is room: it resumes where it stopped",
)
# a command that builds its output aside and moves it into place at the end
ALL_OR_NOTHING = Stopped(
    "interrupted; nothing was written",
    _DIED + "nothing was written",
    "nothing was written; rerun the same command once there is room",
)


def _existing(path: Path) -> Path:
    """``path``, or its nearest parent that exists."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def disk_full_message(error: OSError, stopped: Stopped) -> str:
    """What a full disk stopped: the file, the room left on its device, what to do."""
    path = Path(error.filename) if error.filename else None
    where = f"writing {path}" if path else "writing its output"
    free = ""
    probe = _existing(path) if path is not None else None
    if probe is not None and probe.exists():
        usage = shutil.disk_usage(probe)
        free = f" ({usage.free / 2**20:.0f} MiB left of {usage.total / 2**30:.1f} GiB there)"
    return f"error: the disk is full{free}, {where}; free some space, then {stopped.rerun}"


def run_command(
    work: Callable[[], int],
    input_errors: tuple[type[Exception], ...],
    stopped: Stopped = RESUMABLE,
) -> int:
    """``work()``'s exit code, or that of what it raised, with one line on stderr:
    ``input_errors`` and an output in use by another run 2 (``error: <the error>``);
    ``KeyboardInterrupt`` 130 and
    :class:`~natheear_tasks.children.Terminated` (SIGTERM) 143 (``stopped.interrupted``),
    ``BrokenProcessPool`` and a full disk 1. Anything else propagates."""
    try:
        return work()
    except (*input_errors, OutputInUse, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(stopped.interrupted, file=sys.stderr)
        return INTERRUPTED
    except Terminated:
        print(stopped.interrupted.replace("interrupted", "terminated", 1), file=sys.stderr)
        return TERMINATED
    except BrokenProcessPool:
        print(stopped.worker_died, file=sys.stderr)
        return 1
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(disk_full_message(error, stopped), file=sys.stderr)
        return 1


def space_problem(folder: Path, needed: int, already: int = 0) -> str | None:
    """A problem when the device of ``folder`` (or its nearest existing parent) has less room
    than ``needed`` bytes minus the ``already`` written, else None."""
    free = shutil.disk_usage(_existing(folder)).free
    if free >= needed - already:
        return None
    return (
        f"{folder} needs about {(needed - already) / 2**20:.0f} MiB more (of "
        f"{needed / 2**20:.0f} MiB in all) but its device has {free / 2**20:.0f} MiB free; "
        "free some space or choose another output folder"
    )


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (0 when it does not exist)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0

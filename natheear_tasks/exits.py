"""Exit codes and one-line messages of the ``natheear-tasks`` subcommands: 0 done, 2 bad
input (``error: ...``), 1 interrupted or a worker process died (what the user can do next
depends on whether the command resumes or writes all or nothing)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass


@dataclass(frozen=True)
class Stopped:
    """What a command prints when it is interrupted or loses a worker process."""

    interrupted: str
    worker_died: str


_DIED = "error: a worker process died (killed, or out of memory?); "
# a command that keeps finished work and resumes when rerun
RESUMABLE = Stopped(
    "interrupted; rerun the same command to resume",
    _DIED + "rerun the same command to resume, with fewer --workers if memory is short",
)
# a command that builds its output aside and moves it into place at the end
ALL_OR_NOTHING = Stopped("interrupted; nothing was written", _DIED + "nothing was written")


def run_command(
    work: Callable[[], int],
    input_errors: tuple[type[Exception], ...],
    stopped: Stopped | None = RESUMABLE,
) -> int:
    """``work()``'s exit code, or that of what it raised, with one line on stderr:
    ``input_errors`` 2 (``error: <the error>``); with ``stopped``, ``KeyboardInterrupt``
    and ``BrokenProcessPool`` 1 (its messages). Anything else propagates."""
    try:
        return work()
    except input_errors as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, BrokenProcessPool) as error:
        if stopped is None:
            raise
        died = isinstance(error, BrokenProcessPool)
        print(stopped.worker_died if died else stopped.interrupted, file=sys.stderr)
        return 1

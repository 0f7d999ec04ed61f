"""Child processes that end with the command that started them.

Every subprocess a ``natheear-tasks`` command starts (heareval's runners, a pretraining run,
an export) goes through :func:`run`:

* on Linux it starts behind a launcher that asks the kernel to SIGKILL it when its parent
  dies (``prctl(PR_SET_PDEATHSIG)``, which survives ``exec``; the conversion workers of
  :mod:`natheear_tasks.pool` use the same), so even a command killed with SIGKILL leaves
  no child behind;
* when the command is interrupted (SIGINT, or SIGTERM, which :func:`handle_termination`
  turns into :class:`Terminated`), the child is asked to stop (SIGTERM: a pretraining run
  checkpoints), given ``grace`` seconds, then killed; only then does the command exit
  (130 or 143, :func:`natheear_tasks.exits.run_command`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence

GRACE_SECONDS = 60.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Run as ``python -c LAUNCHER PARENT_PID COMMAND...``: die with the parent, then become
# the command (exec keeps the death signal).
LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


class Terminated(Exception):
    """The command received SIGTERM."""


def _terminated(signum: int, frame: object) -> None:
    raise Terminated(f"stopped by signal {signal.Signals(signum).name}")


def handle_termination() -> None:
    """Turn SIGTERM into :class:`Terminated` in this (main) thread, so that children are
    stopped and work is left resumable, as for Ctrl-C."""
    signal.signal(signal.SIGTERM, _terminated)


def launch(command: Sequence[str], **popen: object) -> subprocess.Popen:
    """Start ``command`` so that it dies with this process (module docstring)."""
    command = [str(part) for part in command]
    if sys.platform.startswith("linux"):
        command = [sys.executable, "-c", LAUNCHER, str(os.getpid()), *command]
    return subprocess.Popen(command, **popen)


def stop(process: subprocess.Popen, grace: float = GRACE_SECONDS) -> None:
    """Ask ``process`` to stop (SIGTERM), wait up to ``grace`` seconds, then kill it."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run(command: Sequence[str], grace: float = GRACE_SECONDS, **popen: object) -> int:
    """Run ``command`` to its end and return its exit code; if this command is interrupted
    meanwhile, the child is stopped first (:func:`stop`) and the interruption goes on."""
    process = launch(command, **popen)
    try:
        return process.wait()
    except BaseException:
        stop(process, grace)
        raise

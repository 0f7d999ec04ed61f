"""``natheear-tasks`` run in two processes, with 1 and 2 intra-op threads (the
determinism tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


def summaries_with_1_and_2_threads(
    arguments: Callable[[Path], list[str]], root: Path, second_run: tuple[str, ...] = ()
) -> tuple[dict, dict]:
    """The ``summary.json`` of ``natheear-tasks`` run with ``arguments(out)`` in a process
    with 1 and in one with 2 intra-op threads (``out``: ``root/results-1`` and
    ``results-2``; the second run also gets ``second_run``); checks that each embedded with
    that many threads."""
    summaries = []
    for count, extra in (("1", ()), ("2", second_run)):
        out = root / f"results-{count}"
        command = [sys.executable, "-m", "natheear_tasks", *arguments(out), *extra]
        env = {**os.environ, "OMP_NUM_THREADS": count, "MKL_NUM_THREADS": count}
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        summaries.append(json.loads((out / "summary.json").read_text()))
    one, two = summaries
    assert one["environment"]["threads"]["embedding"] == 1
    assert two["environment"]["threads"]["embedding"] == 2
    return one, two

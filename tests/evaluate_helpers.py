"""Shared by the evaluate and probe tests: SELD label entries, and evaluate run in two
processes with 1 and 2 threads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


def seld_label(frame: int, cls: int = 0, azimuth: float = 0.0) -> dict:
    """One SELD event of one 100-ms frame, in the published format: class ``cls`` of
    ``"ab"``, source 0, at ``azimuth`` degrees and elevation 0."""
    return {
        "label": "ab"[cls],
        "start": 100 * frame,
        "end": 100 * (frame + 1),
        "direction": [azimuth, 0.0],
        "source_idx": 0,
    }


def write_seld_task(task: Path, labels: dict, **changes) -> None:
    """A published-format SELD task folder (``accdoa``, classes ``a`` and ``b``) with the
    split files ``labels``; ``changes`` edit the metadata."""
    task.mkdir(parents=True, exist_ok=True)
    metadata = {
        "task_name": task.name,
        "embedding_type": "event",
        "prediction_type": "accdoa",
        "sample_duration": 2.0,
        "split_mode": "trainvaltest",
        "splits": list(labels),
        "evaluation": ["SELD"],
        "scoring_params": {"doa_threshold": 20, "average": "macro"},
        "source_dynamics": "dynamic",
        "_nb_label_frames_1s": 10,
        **changes,
    }
    (task / "task_metadata.json").write_text(json.dumps(metadata))
    (task / "labelvocabulary.csv").write_text("idx,label\n0,a\n1,b\n")
    for split, files in labels.items():
        (task / f"{split}.json").write_text(json.dumps(files))


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

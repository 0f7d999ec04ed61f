"""Building an output task where a killed run can resume it, and publishing it at once.

A task is built in ``OUT/<name>.partial/`` (a job file there records the options), its
wavs first, each unit of work recorded in the completion journal
(:mod:`natheear_tasks.tasks.journal`) once its wavs are written; the task files follow (the
metadata last, with the options in its ``natheear`` field), then the work files are removed
and the folder is renamed to ``OUT/<name>``. A rerun with the same options resumes at any
point of this; one with other options is refused.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from natheear_tasks.tasks.journal import JOURNAL_DIR
from natheear_tasks.tasks.taskdir import METADATA, atomic_write_json

JOB_FILE = ".natheear-job.json"


class OutputError(ValueError):
    """An output folder that holds something else than this job's task."""


def partial_of(final: Path) -> Path:
    """The folder ``final`` is built in."""
    return final.with_name(final.name + ".partial")


def read_json(path: Path) -> object:
    """The JSON in ``path``; None where it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def published_description(folder: Path) -> object:
    """The ``natheear`` field of ``folder``'s task metadata (written once the task files
    are); None where there is none."""
    metadata = read_json(folder / METADATA)
    return metadata.get("natheear") if isinstance(metadata, dict) else None


def check_output(final: Path, description: dict) -> None:
    """Refuse an OUT that is not a folder, and a ``final`` (or its ``.partial``) that is not
    this job's task.

    Raises:
        OutputError: naming the folder and what to do.
    """
    out, partial = final.parent, partial_of(final)
    if out.exists() and not out.is_dir():
        raise OutputError(f"OUT {out} is a file; give a folder for the output tasks")
    if final.exists():
        recorded = published_description(final)
        if recorded is None:
            raise OutputError(
                f"{final} exists and is not a task converted by natheear-tasks (no readable "
                f"{METADATA} with a 'natheear' field); remove it, or choose another OUT or --name"
            )
        if recorded != description:
            raise OutputError(
                f"{final} exists from a conversion with other options or data; choose another "
                "OUT or --name, or remove it"
            )
    elif partial.exists():
        if not partial.is_dir():
            raise OutputError(f"{partial} is a file, not a conversion's folder; remove it")
        recorded = read_json(partial / JOB_FILE) or published_description(partial)
        if recorded != description and (recorded is not None or any(partial.iterdir())):
            raise OutputError(
                f"{partial} holds an unfinished conversion with other options or data; rerun "
                "it with the same options to finish it, or remove it"
            )


def begin(final: Path, description: dict) -> Path:
    """Create ``final``'s ``.partial`` folder with its job file; returns the folder."""
    partial = partial_of(final)
    partial.mkdir(parents=True, exist_ok=True)
    atomic_write_json(partial / JOB_FILE, description, indent=2)
    return partial


def remove_work_files(folder: Path) -> bool:
    """Remove the journal, the job file and temporaries of cut-short atomic writes from
    ``folder``; True if there were any (tolerant: another shard may be removing them too)."""
    leftovers = [folder / JOURNAL_DIR, folder / JOB_FILE, *folder.glob(".*.tmp")]
    leftovers = [path for path in leftovers if path.exists()]
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return bool(leftovers)


def publish(final: Path) -> None:
    """Remove the work files of ``final``'s ``.partial`` folder and rename it to ``final``
    (its task files must be written)."""
    partial = partial_of(final)
    remove_work_files(partial)
    os.rename(partial, final)

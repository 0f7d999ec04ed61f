"""Completion journal of an unfinished conversion: which files are done, with their records.

``<task>.partial/.journal/`` holds append-only JSON-lines files, one per writer (a worker
process of one run, named by a random token, so writers on several machines sharing one
folder never write to the same file). A writer appends a file's line, in one write, only
after every wav of that file is written and closed: a file is done exactly when its line is
complete. A run killed mid-line leaves a torn last line without its newline; it is ignored
when the journal is read, and that file is converted again (its wavs rewritten); each run
appends to new files, never after a torn line. Like the rest of the folder, this survives a
killed process, not a power cut: nothing is synced to the disk (a line that does not parse,
as after a crash, also counts as not done).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from natheear_tasks.atomic import named

JOURNAL_DIR = ".journal"


class Journal:
    """One writer's journal file in ``folder/.journal/`` (created on open)."""

    def __init__(self, folder: Path) -> None:
        directory = folder / JOURNAL_DIR
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{uuid.uuid4().hex}.jsonl"
        self._file = open(self.path, "ab", buffering=0)  # unbuffered: one write per line

    def append(self, record: dict) -> None:
        """Record one finished file (its wavs must be written already)."""
        try:
            self._file.write((json.dumps(record, sort_keys=True) + "\n").encode())
        except OSError as error:
            raise named(error, self.path) from None

    def close(self) -> None:
        self._file.close()


def read_journal(folder: Path) -> list[dict]:
    """Every complete record in ``folder/.journal/`` (torn lines left out), in no set order."""
    records = []
    for path in sorted((folder / JOURNAL_DIR).glob("*.jsonl")):
        lines = path.read_bytes().split(b"\n")
        for line in lines[:-1]:  # the last piece has no newline: empty, or a torn line
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records

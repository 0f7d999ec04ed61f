"""DCASE SELD metadata in the event-list layout:
``sound_event_recording,start_time,end_time,ele,azi,dist``.

The format of the metadata CSVs of TUT Sound Events 2018 and TAU Spatial Sound Events 2019:
a header, then one row per sound event: the class name, onset and offset in seconds,
elevation and azimuth in degrees (as the frame lists: azimuth counter-clockwise from the
front in [-180, 180], elevation up in [-90, 90]) and the distance (the ``dist`` column may
be absent). Sources are static: one direction per event.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from natheear_tasks.formats.dcase_frames import DcaseFormatError, direction_xyz, position_problems

HEADER = ("sound_event_recording", "start_time", "end_time", "ele", "azi", "dist")
KIND = "event-list"


@dataclass(frozen=True)
class EventRow:
    """One sound event of a recording."""

    label: str
    start: float  # seconds
    end: float  # seconds
    elevation: float  # degrees
    azimuth: float  # degrees
    distance: float | None = None  # as the dataset gives it; None without a dist column

    @property
    def direction(self) -> np.ndarray:
        """Unit vector ``[x, y, z]`` in our frame (x forward, y left, z up)."""
        return direction_xyz(self.azimuth, self.elevation)


def parse_event_csv(text: str, path: Path) -> list[EventRow]:
    """Rows of an event-list CSV, sorted by (start, end, label).

    The header must be ``sound_event_recording,start_time,end_time,ele,azi[,dist]``; every
    row is checked (as many columns as the header, a class name, finite times with
    ``0 <= start < end``, angles in range, a non-negative distance, no row twice); all
    problems are raised together as :class:`DcaseFormatError`.
    """
    lines = list(csv.reader(io.StringIO(text)))
    lines = [(n, [f.strip() for f in row]) for n, row in enumerate(lines, start=1)]
    lines = [(n, row) for n, row in lines if any(row)]
    if not lines:
        raise DcaseFormatError(path, [f"no header; expected {','.join(HEADER)}"], KIND)
    _, header = lines[0]
    if tuple(header) not in (HEADER, HEADER[:5]):
        message = f"line 1: header {','.join(header)!r}, expected {','.join(HEADER)!r}"
        raise DcaseFormatError(path, [message + " (dist may be left out)"], KIND)
    rows: list[EventRow] = []
    problems: list[str] = []
    seen: set[EventRow] = set()
    for number, fields in lines[1:]:
        where = f"line {number}"
        if len(fields) != len(header):
            problems.append(f"{where}: {len(fields)} columns, expected {len(header)}")
            continue
        label = fields[0]
        try:
            start, end, elevation, azimuth, *rest = (float(f) for f in fields[1:])
        except ValueError:
            problems.append(f"{where}: times, angles and distance must be numbers: {fields[1:]}")
            continue
        distance = rest[0] if rest else None
        if not label:
            problems.append(f"{where}: no class name")
        if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
            problems.append(f"{where}: times must satisfy 0 <= start < end, got {start}, {end}")
        problems += position_problems(where, azimuth, elevation, distance)
        row = EventRow(label, start, end, elevation, azimuth, distance)
        if row in seen:
            problems.append(f"{where}: the same event is given twice")
        seen.add(row)
        rows.append(row)
    if problems:
        raise DcaseFormatError(path, problems, KIND)
    return sorted(rows, key=lambda r: (r.start, r.end, r.label, r.azimuth, r.elevation))


def read_event_csv(path: str | Path) -> list[EventRow]:
    """:func:`parse_event_csv` of a file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is accepted
    except (OSError, UnicodeDecodeError) as exc:
        raise DcaseFormatError(path, [f"cannot read it: {exc}"], KIND) from None
    return parse_event_csv(text, path)


def format_event_csv(rows: list[EventRow]) -> str:
    """The CSV text of ``rows`` with its header (times with 3 decimals, angles and distance
    with 2; the dist column when every row has a distance, or there are no rows)."""
    with_distance = all(r.distance is not None for r in rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER if with_distance else HEADER[:5])
    for r in sorted(rows, key=lambda r: (r.start, r.end, r.label, r.azimuth, r.elevation)):
        fields = [r.label, f"{r.start:.3f}", f"{r.end:.3f}", f"{r.elevation:.2f}"]
        fields.append(f"{r.azimuth:.2f}")
        if with_distance:
            fields.append(f"{r.distance:.2f}")
        writer.writerow(fields)
    return out.getvalue()

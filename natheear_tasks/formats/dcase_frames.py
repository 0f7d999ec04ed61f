"""DCASE SELD metadata in the frame-list layout: ``frame,class,source,azimuth,elevation``.

The format of the metadata CSVs of TAU-NIGENS Spatial Sound Events 2020/2021 and
STARSS22/23 (STARSS23 adds a sixth column, the distance in cm) and of DCASE SELD system
outputs: no header, one row per active source per 100-ms frame (frame ``k`` covers
``[0.1 k, 0.1 (k + 1))`` s), ``class`` an index into the dataset's classes, ``source`` an
index telling apart overlapping instances of one class, azimuth in degrees counter-clockwise
from the front in [-180, 180], elevation in degrees up in [-90, 90].
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FRAME_SECONDS = 0.1


class DcaseFormatError(ValueError):
    """A metadata or output CSV that does not follow its DCASE format (``kind``: the frame
    list here, the event list in :mod:`natheear_tasks.formats.dcase_events`); ``problems``
    lists every bad row (``line N: what``)."""

    def __init__(self, path: Path, problems: list[str], kind: str = "frame-list") -> None:
        self.problems = problems
        shown = problems[:20]
        lines = [f"{path}: {len(problems)} problem(s) in a DCASE {kind} CSV:"]
        lines += [f"  - {p}" for p in shown]
        if len(problems) > len(shown):
            lines.append(f"  ... and {len(problems) - len(shown)} more")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class FrameRow:
    """One active source in one 100-ms frame."""

    frame: int
    cls: int
    source: int
    azimuth: float
    elevation: float
    distance: float | None = None  # cm (STARSS23), None where the file has no such column

    @property
    def direction(self) -> np.ndarray:
        """Unit vector ``[x, y, z]`` in our frame (x forward, y left, z up)."""
        return direction_xyz(self.azimuth, self.elevation)


def direction_xyz(azimuth: float, elevation: float) -> np.ndarray:
    """``[cos(el) cos(az), cos(el) sin(az), sin(el)]`` for angles in degrees (float64)."""
    az, el = math.radians(azimuth), math.radians(elevation)
    return np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])


def azimuth_elevation(xyz: np.ndarray) -> tuple[float, float]:
    """Azimuth and elevation in degrees of a non-zero vector ``[x, y, z]``."""
    x, y, z = (float(v) for v in xyz)
    return math.degrees(math.atan2(y, x)), math.degrees(math.atan2(z, math.hypot(x, y)))


def position_problems(
    where: str, azimuth: float, elevation: float, distance: float | None
) -> list[str]:
    """What is wrong with a row's direction (degrees) and distance, each prefixed ``where``."""
    problems = []
    if not (math.isfinite(azimuth) and -180 <= azimuth <= 180):
        problems.append(f"{where}: azimuth {azimuth} outside [-180, 180]")
    if not (math.isfinite(elevation) and -90 <= elevation <= 90):
        problems.append(f"{where}: elevation {elevation} outside [-90, 90]")
    if distance is not None and not (math.isfinite(distance) and distance >= 0):
        problems.append(f"{where}: distance {distance} is not a non-negative number")
    return problems


def parse_frame_csv(text: str, path: Path, num_classes: int | None = None) -> list[FrameRow]:
    """Rows of a frame-list CSV, sorted by (frame, class, source).

    Every row is checked (5 or 6 columns, integer frame >= 0, class in
    ``[0, num_classes)`` when given, integer source >= 0, finite angles in range, a
    non-negative distance, no (frame, class, source) twice); all problems are raised
    together as :class:`DcaseFormatError`.
    """
    rows: list[FrameRow] = []
    problems: list[str] = []
    seen: set[tuple[int, int, int]] = set()
    for number, fields in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not fields or all(not f.strip() for f in fields):
            continue
        where = f"line {number}"
        if len(fields) not in (5, 6):
            problems.append(f"{where}: {len(fields)} columns, expected 5 or 6")
            continue
        try:
            frame, cls, source = (int(float(f)) for f in fields[:3])
            if any(float(f) != int(float(f)) for f in fields[:3]):
                raise ValueError
        except ValueError:
            problems.append(f"{where}: frame, class and source must be integers: {fields[:3]}")
            continue
        try:
            numbers = [float(f) for f in fields[3:]]
        except ValueError:
            problems.append(f"{where}: azimuth, elevation (and distance) must be numbers")
            continue
        azimuth, elevation = numbers[:2]
        distance = numbers[2] if len(numbers) == 3 else None
        if frame < 0:
            problems.append(f"{where}: negative frame {frame}")
        if cls < 0 or (num_classes is not None and cls >= num_classes):
            problems.append(f"{where}: class {cls} outside [0, {num_classes})")
        if source < 0:
            problems.append(f"{where}: negative source index {source}")
        problems += position_problems(where, azimuth, elevation, distance)
        key = (frame, cls, source)
        if key in seen:
            problems.append(f"{where}: frame {frame}, class {cls}, source {source} given twice")
        seen.add(key)
        rows.append(FrameRow(frame, cls, source, azimuth, elevation, distance))
    if problems:
        raise DcaseFormatError(path, problems)
    return sorted(rows, key=lambda r: (r.frame, r.cls, r.source))


def read_frame_csv(path: str | Path, num_classes: int | None = None) -> list[FrameRow]:
    """:func:`parse_frame_csv` of a file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DcaseFormatError(path, [f"cannot read it: {exc}"]) from None
    return parse_frame_csv(text, path, num_classes)


def format_frame_csv(rows: list[FrameRow]) -> str:
    """The CSV text of ``rows`` (sorted; angles with 2 decimals, the distance when set on
    every row), as DCASE system outputs are written."""
    with_distance = bool(rows) and all(r.distance is not None for r in rows)
    lines = []
    for r in sorted(rows, key=lambda r: (r.frame, r.cls, r.source)):
        fields = [str(r.frame), str(r.cls), str(r.source), f"{r.azimuth:.2f}", f"{r.elevation:.2f}"]
        if with_distance:
            fields.append(f"{r.distance:.2f}")
        lines.append(",".join(fields) + "\n")
    return "".join(lines)

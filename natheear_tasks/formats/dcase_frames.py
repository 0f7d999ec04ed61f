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


MAX_FRAME = 10 * 3600 * 10  # 10 hours of 100-ms frames: larger frame indices are refused
MAX_CLASSES = 1000
MAX_SOURCE = 1_000_000


def parse_int(field: str, low: int, high: int) -> int | None:
    """An integer field (``3`` or ``3.0``) in ``[low, high]``, else None (``inf``, ``nan``,
    ``1e400`` and integers beyond the bounds included)."""
    try:
        value = float(field)
    except ValueError:
        return None
    if not math.isfinite(value) or value != int(value) or not low <= value <= high:
        return None
    return int(value)


def _row(
    fields: list[str], where: str, num_classes: int | None, problems: list[str]
) -> FrameRow | None:
    """One frame-list row of 5 or 6 columns (polar; the sixth is the distance) or 7
    (``frame,class,source,x,y,z,distance``, the DCASE 2023 baseline's output, turned into
    azimuth and elevation as the official evaluation turns it); None with its problems."""
    if len(fields) not in (5, 6, 7):
        problems.append(f"{where}: {len(fields)} columns, expected 5, 6 or 7")
        return None
    classes = (num_classes or MAX_CLASSES) - 1
    frame = parse_int(fields[0], 0, MAX_FRAME)
    cls = parse_int(fields[1], 0, classes)
    source = parse_int(fields[2], 0, MAX_SOURCE)
    bad = [
        f"{name} {fields[i]!r} is not an integer in [0, {high}]"
        for i, (name, value, high) in enumerate(
            [("frame", frame, MAX_FRAME), ("class", cls, classes), ("source", source, MAX_SOURCE)]
        )
        if value is None
    ]
    if bad:
        problems.append(f"{where}: " + "; ".join(bad))
        return None
    try:
        numbers = [float(f) for f in fields[3:]]
    except ValueError:
        problems.append(f"{where}: the direction (and distance) must be numbers: {fields[3:]}")
        return None
    if len(numbers) == 4:
        x, y, z, distance = numbers
        if not all(math.isfinite(v) for v in (x, y, z)):
            problems.append(f"{where}: x, y, z must be finite numbers")
            return None
        azimuth = float(np.arctan2(y, x) * 180 / np.pi)
        elevation = float(np.arctan2(z, np.sqrt(x**2 + y**2)) * 180 / np.pi)
    else:
        azimuth, elevation = numbers[:2]
        distance = numbers[2] if len(numbers) == 3 else None
    found = position_problems(where, azimuth, elevation, distance)
    if found:
        problems += found
        return None
    return FrameRow(frame, cls, source, azimuth, elevation, distance)


def parse_frame_csv(text: str, path: Path, num_classes: int | None = None) -> list[FrameRow]:
    """Rows of a dataset's frame-list CSV, sorted by (frame, class, source).

    Every row is checked (5 or 6 columns, integer frame in ``[0, MAX_FRAME]``, class in
    ``[0, num_classes)`` when given (else at most :data:`MAX_CLASSES`), integer source,
    finite angles in range, a non-negative distance, no (frame, class, source) twice); all
    problems are raised together as :class:`DcaseFormatError`.
    """
    rows, problems = _rows(text, num_classes, allow_cartesian=False)
    seen: set[tuple[int, int, int]] = set()
    for number, row in rows:
        key = (row.frame, row.cls, row.source)
        if key in seen:
            problems.append(
                f"line {number}: frame {row.frame}, class {row.cls}, source {row.source} "
                "given twice"
            )
        seen.add(key)
    if problems:
        raise DcaseFormatError(path, sorted(problems, key=lambda p: int(p.split()[1].strip(":"))))
    return sorted((row for _, row in rows), key=lambda r: (r.frame, r.cls, r.source))


def parse_output_csv(text: str, path: Path, num_classes: int | None = None) -> list[FrameRow]:
    """Rows of a DCASE output (or reference) CSV as the official evaluation reads them: in
    file order, repeated (frame, class, source) rows kept, the 2023 baseline's 7-column
    Cartesian rows turned into angles; every bad row listed (:class:`DcaseFormatError`)."""
    rows, problems = _rows(text, num_classes, allow_cartesian=True)
    if problems:
        raise DcaseFormatError(path, problems)
    return [row for _, row in rows]


def _rows(
    text: str, num_classes: int | None, allow_cartesian: bool
) -> tuple[list[tuple[int, FrameRow]], list[str]]:
    rows, problems = [], []
    for number, fields in enumerate(csv.reader(io.StringIO(text.removeprefix("\ufeff"))), 1):
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) == 7 and not allow_cartesian:
            problems.append(
                f"line {number}: 7 columns (x, y, z, distance): a system output, "
                "not a dataset's frame list"
            )
            continue
        row = _row(fields, f"line {number}", num_classes, problems)
        if row is not None:
            rows.append((number, row))
    return rows, problems


def read_frame_csv(path: str | Path, num_classes: int | None = None) -> list[FrameRow]:
    """:func:`parse_frame_csv` of a file (UTF-8, a byte-order mark accepted)."""
    path = Path(path)
    return parse_frame_csv(_read_text(path), path, num_classes)


def read_output_csv(path: str | Path, num_classes: int | None = None) -> list[FrameRow]:
    """:func:`parse_output_csv` of a file (UTF-8, a byte-order mark accepted)."""
    path = Path(path)
    return parse_output_csv(_read_text(path), path, num_classes)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DcaseFormatError(path, [f"cannot read it: {exc}"]) from None


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

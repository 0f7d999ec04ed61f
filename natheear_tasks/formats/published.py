"""HEAR task folders as the GRAM authors publish them (NatHEAR, RealSELD) and their
evaluation kit (listen-eval-kit) reads them: the prediction types, metric names and label
shapes of localization and SELD tasks, checked and converted.

One format for reading and writing: ``natheear-tasks seld`` and ``localize`` write it, and
``evaluate`` and ``seld-oracle --layout task`` read it, whoever wrote the folder.

* **SELD tasks**: ``"prediction_type": "accdoa"``, ``"embedding_type": "event"``; labels per
  file are events ``{"label", "start", "end", "direction": [azimuth, elevation]}`` (ms;
  degrees, azimuth counter-clockwise from the front, elevation up), dynamic sources adding
  ``"source_idx"``; ``"_nb_label_frames_1s"`` label frames per second (default 10),
  ``"scoring_params": {"doa_threshold", "average"}``, ``"source_dynamics"`` ``static`` or
  ``dynamic``; the class names are ``labelvocabulary.csv``'s. An event covers every label
  frame it overlaps (frame ``k``: ``[k, k + 1)`` frame lengths).
* **Localization tasks**: scene tasks whose label is a direction: ``[x, y, z]`` (the kit's
  ``cartesian-regression``), or ``[azimuth, elevation]`` in degrees (``polar-regression``).
  The prediction type does not tell them apart reliably (the kit overrides it with
  ``--localization``), so a scene task whose labels are all 2 or 3 numbers is one.
* **Metric names**: the kit's ``SELD`` is our ``seld_score``, its ``MAE`` (mean angle between
  the normalised vectors) and ``DOA`` our ``mean_doa_error_deg``, its ``DOE`` (median
  great-circle error) our ``median_doa_error_deg``.

Anything else in a field this module reads is a listed problem (file, key, value).
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from natheear_tasks.formats.dcase_frames import FrameRow, direction_xyz

ACCDOA = "accdoa"
HEAREVAL_TYPES = ("multiclass", "multilabel")
LOCALIZATION_TYPES = ("cartesian-regression", "polar-regression")
OUR_LOCALIZATION = "localization"  # the prediction type natheear-tasks wrote before
OUR_SELD = "seld"  # likewise; such folders are refused with the command that rewrites them
EMBEDDING_TYPES = ("scene", "event")
SPLIT_MODES = ("trainvaltest", "new_split_kfold", "presplit_kfold")
SOURCE_DYNAMICS = ("static", "dynamic")
AVERAGES = ("macro", "micro")
DEFAULT_LABEL_FRAMES_1S = 10
DEFAULT_DOA_THRESHOLD = 20.0
EVENT_KEYS = {"label", "start", "end", "direction", "source_idx", "distance"}
MAX_EVENTS_PER_FILE = 1_000_000
MAX_SOURCE_INDEX = 1000
MAX_LABEL_FRAMES_1S = 1000

KIT_METRICS = {
    "SELD": "seld_score",
    "MAE": "mean_doa_error_deg",
    "DOA": "mean_doa_error_deg",
    "DOE": "median_doa_error_deg",
}
LOCALIZATION_METRICS = ("mean_doa_error_deg", "median_doa_error_deg")
SELD_METRICS = ("seld_score", "ER20", "F20", "LE_CD", "LR_CD")
# What our writers put in ``evaluation`` (names the kit's available_scores knows).
LOCALIZATION_EVALUATION = ["MAE", "DOE"]
SELD_EVALUATION = ["SELD"]


VOCABULARY = "labelvocabulary.csv"


def read_vocabulary_text(path: Path) -> tuple[str, list[str], list[str]]:
    """A ``labelvocabulary.csv``'s text (``""`` when it cannot be read; a byte-order mark
    dropped), its labels in index order (header ``idx,label``, rows ``0..n-1``), and every
    problem with the file."""
    if not path.is_file():
        return "", [], [f"{VOCABULARY} is missing"]
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        return "", [], [f"{VOCABULARY} cannot be read ({error})"]
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or [c.strip() for c in rows[0]] != ["idx", "label"]:
        return text, [], [f"{VOCABULARY} must start with the header 'idx,label'"]
    labels, problems = [], []
    for n, row in enumerate(rows[1:]):
        if len(row) != 2 or row[0].strip() != str(n):
            problems.append(f"{VOCABULARY} row {n + 2} must be '{n},<label>', got {row}")
            continue
        labels.append(row[1])
    if len(rows) == 1:
        problems.append(f"{VOCABULARY} lists no labels (only its header)")
    return text, labels, problems


def read_vocabulary(path: Path) -> tuple[list[str], list[str]]:
    """The labels of a ``labelvocabulary.csv`` in index order, and every problem with the
    file (:func:`read_vocabulary_text`)."""
    _, labels, problems = read_vocabulary_text(path)
    return labels, problems


def our_metric(name: str) -> str:
    """Our name of a metric named in a task's ``evaluation`` (the kit's names mapped)."""
    return KIT_METRICS.get(name, name)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_direction_label(label: object) -> bool:
    """Whether a scene label is a direction: 2 or 3 finite numbers (or such a list wrapped
    in a one-element list, as HEAR label lists are)."""
    if isinstance(label, list) and len(label) == 1 and isinstance(label[0], list):
        label = label[0]
    return isinstance(label, list) and len(label) in (2, 3) and all(_number(v) for v in label)


def direction_of(label: object) -> list[float]:
    """The unit vector ``[x, y, z]`` of a localization label: ``[x, y, z]`` (normalised) or
    ``[azimuth, elevation]`` in degrees.

    Raises:
        ValueError: not a direction (says what was found).
    """
    if not is_direction_label(label):
        raise ValueError(
            f"a localization label is [x, y, z] or [azimuth, elevation] in degrees, got {label!r}"
        )
    value = label[0] if isinstance(label[0], list) else label
    if len(value) == 2:
        azimuth, elevation = value
        if not -90 <= elevation <= 90:
            raise ValueError(f"localization label {label!r}: elevation outside [-90, 90]")
        return [float(v) for v in direction_xyz(azimuth, elevation)]
    norm = math.sqrt(sum(v * v for v in value))
    if norm < 1e-6:
        raise ValueError(f"localization label {label!r} has zero length")
    return [v / norm for v in value]


@dataclass(frozen=True)
class SeldFormat:
    """What a SELD task's metadata says about its labels and scoring."""

    classes: list[str]
    frame_ms: float  # one label frame
    frames_per_second: int  # label frames in a 1-s scoring block
    doa_threshold: float
    average: str
    dynamic: bool


def seld_format(metadata: dict, classes: list[str]) -> tuple[SeldFormat | None, list[str]]:
    """Read a SELD task's scoring fields; ``(format, [])`` or ``(None, problems)``."""
    problems = []
    per_second = metadata.get("_nb_label_frames_1s", DEFAULT_LABEL_FRAMES_1S)
    if (
        not (isinstance(per_second, int) and not isinstance(per_second, bool))
        or not 1 <= per_second <= MAX_LABEL_FRAMES_1S
    ):
        problems.append(
            f"_nb_label_frames_1s {per_second!r}: not a whole number of label frames per "
            f"second in [1, {MAX_LABEL_FRAMES_1S}]"
        )
    params = metadata.get("scoring_params", {})
    if not isinstance(params, dict):
        problems.append(f"scoring_params {params!r}: not an object")
        params = {}
    unknown = sorted(set(params) - {"doa_threshold", "average"})
    if unknown:
        problems.append(
            f"scoring_params keys {unknown} are not understood (SELD tasks are scored with "
            "the DCASE SELD metrics: doa_threshold and average only)"
        )
    threshold = params.get("doa_threshold", DEFAULT_DOA_THRESHOLD)
    if not _number(threshold) or not 0 < threshold <= 180:
        problems.append(f"scoring_params.doa_threshold {threshold!r}: not in (0, 180] degrees")
    average = params.get("average", "macro")
    if average not in AVERAGES:
        problems.append(f"scoring_params.average {average!r}: not one of {list(AVERAGES)}")
    dynamics = metadata.get("source_dynamics", "static")
    if dynamics not in SOURCE_DYNAMICS:
        problems.append(f"source_dynamics {dynamics!r}: not one of {list(SOURCE_DYNAMICS)}")
    if not classes:
        problems.append("labelvocabulary.csv lists no class")
    if problems:
        return None, problems
    return SeldFormat(
        list(classes), 1000.0 / per_second, per_second, float(threshold), average,
        dynamics == "dynamic",
    ), []  # fmt: skip


@dataclass(frozen=True)
class SeldEvent:
    """One event of a SELD task's labels, checked."""

    cls: int
    start: float  # ms
    end: float  # ms
    azimuth: float  # degrees, in [-180, 180]
    elevation: float  # degrees
    source: int  # source_idx, else the event's rank among its class's events in the file
    distance: float | None = None
    number: int = 0  # its index in the file's list of events

    @property
    def direction(self) -> list[float]:
        return [float(v) for v in direction_xyz(self.azimuth, self.elevation)]


def parse_events(events: object, where: str, fmt: SeldFormat) -> tuple[list[SeldEvent], list[str]]:
    """One file's SELD events, checked, in file order, and every problem with them."""
    if not isinstance(events, list):
        return [], [f"{where}: SELD labels must be a list of events, got {type(events).__name__}"]
    if len(events) > MAX_EVENTS_PER_FILE:
        return [], [f"{where}: {len(events)} events, more than {MAX_EVENTS_PER_FILE}"]
    index = {name: i for i, name in enumerate(fmt.classes)}
    parsed, problems, rank = [], [], {}
    for i, event in enumerate(events):
        at = f"{where}[{i}]"
        if not isinstance(event, dict):
            problems.append(f"{at}: an event must be an object, got {event!r}")
            continue
        unknown = sorted(set(event) - EVENT_KEYS)
        missing = sorted({"label", "start", "end", "direction"} - set(event))
        if unknown or missing:
            problems.append(
                f"{at}: "
                + "; ".join(
                    ([f"keys {unknown} are not understood"] if unknown else [])
                    + ([f"lacks {missing}"] if missing else [])
                )  # fmt: skip
            )
            continue
        label, start, end = event["label"], event["start"], event["end"]
        if label not in index:
            problems.append(f"{at}: label {label!r} is not in labelvocabulary.csv")
            continue
        if not (_number(start) and _number(end) and 0 <= start < end):
            problems.append(f"{at}: start {start!r} and end {end!r} must be ms, 0 <= start < end")
            continue
        direction = event["direction"]
        if not (isinstance(direction, list) and len(direction) in (2, 3)):
            problems.append(f"{at}: direction {direction!r} is not [azimuth, elevation]")
            continue
        try:
            xyz = direction_of(direction)
        except ValueError as error:
            problems.append(f"{at}: {error}")
            continue
        if len(direction) == 2:
            azimuth, elevation = float(direction[0]), float(direction[1])
            if not -180 <= azimuth <= 180:
                azimuth = (azimuth + 180.0) % 360.0 - 180.0
        else:
            azimuth = math.degrees(math.atan2(xyz[1], xyz[0]))
            elevation = math.degrees(math.asin(max(-1.0, min(1.0, xyz[2]))))
        source = event.get("source_idx")
        if source is None:
            source = rank.get(label, 0)
            rank[label] = source + 1
        elif (
            not (isinstance(source, int) and not isinstance(source, bool))
            or not 0 <= source <= MAX_SOURCE_INDEX
        ):
            problems.append(
                f"{at}: source_idx {source!r} not an integer in [0, {MAX_SOURCE_INDEX}]"
            )
            continue
        distance = event.get("distance")
        if distance is not None and not (_number(distance) and distance >= 0):
            problems.append(f"{at}: distance {distance!r} is not a non-negative number")
            continue
        parsed.append(
            SeldEvent(
                index[label], float(start), float(end), azimuth, elevation, source, distance, i
            )
        )
    return parsed, problems


def event_rows(
    events: object, where: str, fmt: SeldFormat, frames: int | None
) -> tuple[list[FrameRow], list[str]]:
    """The label-frame rows of one file's SELD events, and every problem with them
    (:func:`parse_events`, then :func:`frame_rows`)."""
    parsed, problems = parse_events(events, where, fmt)
    rows, found = frame_rows(parsed, where, fmt, frames)
    return rows, problems + found


def frame_rows(
    events: list[SeldEvent], where: str, fmt: SeldFormat, frames: int | None
) -> tuple[list[FrameRow], list[str]]:
    """The label-frame rows of one file's parsed events, and the events past its end.

    Each event gives a row in every frame it overlaps (``frames`` bounds them when known);
    its source is ``source_idx``, else its rank among the file's events of its class.
    """
    rows, problems = [], []
    for event in events:
        first = math.floor(event.start / fmt.frame_ms + 1e-9)
        last = math.ceil(event.end / fmt.frame_ms - 1e-9)
        if frames is not None and first >= frames:
            problems.append(f"{where}[{event.number}]: starts at {event.start:g} ms, after the "
                            f"file's {frames} frames")  # fmt: skip
            continue
        stop = last if frames is None else min(last, frames)
        rows += [
            FrameRow(k, event.cls, event.source, event.azimuth, event.elevation, event.distance)
            for k in range(first, stop)
        ]
    return rows, problems


def frame_events(rows: list[FrameRow], fmt: SeldFormat) -> list[dict]:
    """Events of the published format from label-frame rows: the consecutive frames of one
    source (class and source index) with one direction and distance make one event."""
    events = []
    ordered = sorted(rows, key=lambda r: (r.cls, r.source, r.frame))
    for _, group in itertools.groupby(ordered, key=lambda r: (r.cls, r.source)):
        run: list[FrameRow] = []
        for row in group:
            if run and (row.frame != run[-1].frame + 1 or _place(row) != _place(run[-1])):
                events.append(_event(run, fmt))
                run = []
            run.append(row)
        events.append(_event(run, fmt))
    return sorted(events, key=lambda e: (e["start"], e["label"], e["source_idx"]))


def _place(row: FrameRow) -> tuple:
    return row.azimuth, row.elevation, row.distance


def _event(run: list[FrameRow], fmt: SeldFormat) -> dict:
    first = run[0]
    event = {
        "label": fmt.classes[first.cls],
        "start": round(first.frame * fmt.frame_ms, 3),
        "end": round((run[-1].frame + 1) * fmt.frame_ms, 3),
        "direction": [first.azimuth, first.elevation],
        "source_idx": first.source,
    }
    if first.distance is not None:
        event["distance"] = first.distance
    return event


def metadata_problems(metadata: dict, known_metric: Callable[[str], bool]) -> list[str]:
    """Values of the fields every task has that this package does not understand
    (``key value: why``); ``known_metric`` tells the metric names it scores."""
    problems = []
    checks = {
        "embedding_type": EMBEDDING_TYPES,
        "split_mode": SPLIT_MODES,
        "prediction_type": (*HEAREVAL_TYPES, ACCDOA, *LOCALIZATION_TYPES, OUR_LOCALIZATION),
    }
    for key, allowed in checks.items():
        value = metadata.get(key)
        if value == OUR_SELD and key == "prediction_type":
            continue  # refused with the command that rewrites it
        if value not in allowed:
            problems.append(f"{key} {value!r}: not one of {list(allowed)}")
    evaluation = metadata.get("evaluation", [])
    if not isinstance(evaluation, list) or not all(isinstance(m, str) for m in evaluation):
        problems.append(f"evaluation {evaluation!r}: not a list of metric names")
    else:
        unknown = [m for m in evaluation if not known_metric(our_metric(m))]
        if unknown:
            problems.append(f"evaluation {unknown}: metric names this package does not score")
    duration = metadata.get("sample_duration")
    if duration is not None and not (_number(duration) and duration > 0):
        problems.append(f"sample_duration {duration!r}: not a positive number of seconds or null")
    return problems

"""Reading a SELD task folder in the published format (:mod:`natheear_tasks.formats.
published`): its scoring fields and classes, every split's events as label-frame rows, and
each file's length in label frames (``sample_duration``, or each wav's length when it is
``null``; ``chunks.jsonl``, where ``natheear-tasks seld`` wrote one, gives each chunk's true
length, the rest of the last chunk of a recording being padding)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from natheear_tasks.formats import published
from natheear_tasks.formats.dcase_frames import FrameRow
from natheear_tasks.formats.published import SeldEvent, SeldFormat
from natheear_tasks.paths import check_name

CHUNKS_FILE = "chunks.jsonl"
RATE_FOLDER = re.compile(r"^[0-9]+$")


@dataclass
class SeldTask:
    """A SELD task folder as the probe reads it."""

    fmt: SeldFormat
    events: dict[str, dict[str, list[SeldEvent]]]  # split -> file -> events, checked
    labels: dict[str, dict[str, list[FrameRow]]]  # split -> file -> label-frame rows
    frames: dict[tuple[str, str], int]  # (split, file) -> label frames of the file
    scored: dict[tuple[str, str], int]  # (split, file) -> frames scored (<= frames)
    frames_from: str  # chunks.jsonl, sample_duration or wav lengths


def _old_format(metadata: dict) -> str:
    """The refusal of a SELD task that an earlier natheear-tasks wrote in its own format."""
    options = metadata.get("natheear", {}).get("dataset", {})
    folder = options.get("folder", "DATASET") if isinstance(options, dict) else "DATASET"
    return (
        "prediction_type 'seld' is the format natheear-tasks wrote before it wrote the "
        f"published one (accdoa, direction [azimuth, elevation]); rewrite it with "
        f"`natheear-tasks seld {folder} OUT` and the options that made it"
    )


def chunk_seconds(task_dir: Path) -> dict[tuple[str, str], float] | None:
    """True audio length per ``(split, file)`` from the task's ``chunks.jsonl``, or None
    without that file."""
    path = task_dir / CHUNKS_FILE
    if not path.is_file():
        return None
    seconds = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            value = float(record["audio_seconds"])
            key = (str(record["split"]), str(record["file"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path} line {number}: not a chunk record ({error})") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{path} line {number}: audio_seconds {value} is not a length")
        seconds[key] = value
    return seconds


def _wav_seconds(task_dir: Path, split: str, name: str) -> float | None:
    """The length of a file of the task, read from its header in any rate folder."""
    for rate in sorted(p for p in task_dir.iterdir() if RATE_FOLDER.match(p.name)):
        path = rate / split / name
        if path.is_file():
            try:
                return sf.info(str(path)).duration
            except (RuntimeError, sf.LibsndfileError):
                return None
    return None


def _frames(seconds: float, fmt: SeldFormat) -> int:
    """Label frames that start inside ``seconds`` of audio."""
    return math.ceil(round(seconds * 1000.0 / fmt.frame_ms, 6))


def read_task(task_dir: Path, metadata: dict) -> SeldTask:
    """Read a SELD task folder in the published format: its scoring fields, classes, every
    split's events as label-frame rows, and each file's length.

    Raises:
        ValueError: every problem found (bad names, fields, events, unknown lengths; a
            split without events; the format natheear-tasks wrote before), one per line.
    """
    if metadata.get("prediction_type") == published.OUR_SELD:
        raise ValueError(_old_format(metadata))
    classes, problems = published.read_vocabulary(task_dir / published.VOCABULARY)
    fmt, found = published.seld_format(metadata, classes)
    problems += found
    if fmt is None:
        raise ValueError("\n".join(problems))
    duration = metadata.get("sample_duration")
    seconds = chunk_seconds(task_dir)
    parsed, labels, frames, scored = {}, {}, {}, {}
    for split in metadata["splits"]:
        split = check_name(split, "split name", single=True)
        try:
            events = json.loads((task_dir / f"{split}.json").read_text())
        except (OSError, json.JSONDecodeError) as error:
            problems.append(f"{split}.json cannot be read ({error})")
            continue
        if not isinstance(events, dict) or not events:
            problems.append(f"{split}.json holds no files")
            continue
        parsed[split], labels[split] = {}, {}
        for name in sorted(events):
            check_name(name, f"{split}.json: file name")
            length = duration if duration is not None else _wav_seconds(task_dir, split, name)
            if length is None:
                problems.append(f"{split}/{name}: no wav to read its length from (sample_duration "
                                "is null)")  # fmt: skip
                continue
            count = _frames(length, fmt)
            where = f"{split}.json[{name!r}]"
            file_events, found = published.parse_events(events[name], where, fmt)
            rows, past_end = published.frame_rows(file_events, where, fmt, count)
            problems += found + past_end
            parsed[split][name], labels[split][name] = file_events, rows
            frames[split, name] = count
            if seconds is None:
                scored[split, name] = count
            elif (split, name) in seconds:
                scored[split, name] = min(count, _frames(seconds[split, name], fmt))
            else:
                problems.append(f"{CHUNKS_FILE} has no record of {split}/{name}")
        if split in labels and not any(labels[split].values()):
            problems.append(
                f"{split}.json holds no SELD event; a SELD task needs events in every split "
                "(each split validates or tests in some fold)"
            )
    if problems:
        raise ValueError("\n".join(problems))
    frames_from = (
        CHUNKS_FILE if seconds is not None
        else "sample_duration" if duration is not None
        else "wav lengths"
    )  # fmt: skip
    return SeldTask(fmt, parsed, labels, frames, scored, frames_from)


def task_problems(task_dir: Path, metadata: dict) -> list[str]:
    """What would stop the probe on a SELD task folder, found before any embedding."""
    try:
        read_task(task_dir, metadata)
    except (OSError, ValueError) as error:
        return str(error).splitlines()
    return []

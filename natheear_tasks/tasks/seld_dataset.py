"""Read and validate a DCASE SELD dataset (first-order Ambisonics) in full.

Two layouts (``/work/shared/reference/seld.md``; README: natheear_tasks, SELD datasets):

* ``frames`` (TAU-NIGENS Spatial Sound Events 2020/2021, STARSS22/23): frame-list CSVs
  (:mod:`natheear_tasks.formats.dcase_frames`); the fold is the ``foldN_`` prefix of the file name;
* ``events`` (TUT Sound Events 2018, TAU Spatial Sound Events 2019): event-list CSVs
  (:mod:`natheear_tasks.formats.dcase_events`); the fold is the ``splitN_`` prefix.

Wavs sit in ``SRC/<audio_dir>/[<subset>/...]<stem>.wav`` (default ``foa_dev``), their labels in
``SRC/<metadata_dir>/[<subset>/...]<stem>.csv`` (default ``metadata_dev``); the subset is the
folder between them (``dev-train``, ``dev-test-sony``...). Everything is checked before
anything is written: each wav has its CSV and each CSV its wav; names are plain (letters,
digits, ``._-``) and stems unique; every wav readable, 4 channels, one sample rate for all,
float wavs free of NaN and infinity (every sample read); every CSV row valid, frames
starting within their wav, event onsets within it and offsets at most 0.1 s past its end
(then cut at the end); classes consistent across files. Every problem is listed
(:class:`~natheear_tasks.tasks.taskdir.TaskError`).

Both layouts are read into one form: each recording has frame-wise rows (100-ms frames)
and events. Frame lists give the rows; events are the runs of consecutive frames of one
(class, source) track. Event lists give the events; an event labels every frame it
overlaps, and overlapping events of one class get different source indices (the lowest
free one, in order of onset).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from natheear_tasks.formats.dcase_events import read_event_csv
from natheear_tasks.formats.dcase_frames import (
    FRAME_SECONDS,
    DcaseFormatError,
    FrameRow,
    read_frame_csv,
)
from natheear_tasks.formats.wav import FLOAT_SUBTYPES, truncation_problem
from natheear_tasks.tasks.taskdir import TaskError, check_finite

LAYOUTS = ("frames", "events")
FOLD_PREFIX = {"frames": re.compile(r"^fold(\d+)_"), "events": re.compile(r"^split(\d+)_")}
FOLD_NAME = {"frames": "fold", "events": "split"}
PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
OTHER_AUDIO = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff", ".m4a")
END_TOLERANCE = 0.1  # seconds an event-list offset may pass the end of its wav
CHANNELS = 4
DEFAULT_AUDIO_DIR, DEFAULT_METADATA_DIR = "foa_dev", "metadata_dev"


@dataclass(frozen=True)
class Event:
    """One labelled event of a recording; a direction only where the dataset gives one per
    event (event lists: static sources)."""

    cls: int
    source: int
    start: float  # seconds
    end: float
    azimuth: float | None = None
    elevation: float | None = None
    distance: float | None = None


@dataclass
class Recording:
    """One validated recording and its labels."""

    identity: str  # path below the audio folder without ".wav", e.g. "dev-train/fold1_x"
    stem: str
    subset: str  # "" for wavs directly in the audio folder
    fold: int | None
    wav: Path
    sample_rate: int
    samples: int
    subtype: str
    rows: tuple[FrameRow, ...]  # sorted by (frame, class, source)
    events: tuple[Event, ...]  # sorted by (start, end, class, source)

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate

    @property
    def frame_count(self) -> int:
        """Frames that start within the recording."""
        return -(-self.samples * 10 // self.sample_rate)


@dataclass
class Dataset:
    """A validated SELD dataset."""

    path: Path
    layout: str
    audio_dir: str
    metadata_dir: str
    classes: tuple[str, ...]
    classes_given: bool
    sample_rate: int
    has_distance: bool
    recordings: list[Recording]  # sorted by identity

    def fold_name(self, fold: int) -> str:
        return f"{FOLD_NAME[self.layout]}{fold}"

    def digest(self) -> str:
        """sha256 (16 hex digits) of every recording's name, length, format and labels."""
        content = [
            [
                r.identity,
                r.sample_rate,
                r.samples,
                r.subtype,
                [[x.frame, x.cls, x.source, x.azimuth, x.elevation, x.distance] for x in r.rows],
                [[e.cls, e.source, e.start, e.end, e.azimuth, e.elevation] for e in r.events],
            ]
            for r in self.recordings
        ]
        text = json.dumps([self.layout, list(self.classes), content], separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _files(root: Path, suffix: str, problems: list[str], base: Path) -> dict[str, Path]:
    """Files ending in ``suffix`` under ``root`` by their path without the suffix; other
    audio files and names that are not plain are problems; hidden files are skipped.
    Folder links are followed once each."""
    found: dict[str, Path] = {}
    seen: set[str] = set()
    for folder, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs.clear()
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = Path(folder) / name
            relative = path.relative_to(root)
            shown = path.relative_to(base).as_posix()
            lower = name.lower()
            if not name.endswith(suffix):
                if suffix == ".wav" and lower.endswith(OTHER_AUDIO):
                    problems.append(f"{shown}: only .wav audio is read (convert it to .wav)")
                elif lower.endswith(suffix):
                    problems.append(f"{shown}: the extension must be lower-case {suffix} "
                                    "(rename it)")  # fmt: skip
                continue
            if not stat.S_ISREG(os.stat(path).st_mode):
                problems.append(f"{shown} is not a regular file (a FIFO, device or socket?): "
                                "refused without opening it")  # fmt: skip
                continue
            bad = [p for p in relative.parts if not PLAIN_NAME.match(p)]
            if bad:
                problems.append(
                    f"{shown}: names must be letters, digits and . _ - (starting with a letter "
                    f"or digit); {bad[0]!r} is not"
                )
                continue
            found[relative.with_suffix("").as_posix()] = path
    return found


def _track_events(rows: list[FrameRow], seconds: float) -> list[Event]:
    """Runs of consecutive frames of each (class, source) track, as events (cut at the end
    of the recording)."""
    frames: dict[tuple[int, int], list[int]] = {}
    for row in rows:
        frames.setdefault((row.cls, row.source), []).append(row.frame)
    events = []
    for (cls, source), ks in frames.items():
        ks.sort()
        first = previous = ks[0]
        for k in [*ks[1:], None]:
            if k is not None and k == previous + 1:
                previous = k
                continue
            start = round(first * FRAME_SECONDS, 6)
            end = round(min((previous + 1) * FRAME_SECONDS, seconds), 6)
            events.append(Event(cls, source, start, end))
            if k is not None:
                first = previous = k
    return sorted(events, key=lambda e: (e.start, e.end, e.cls, e.source))


def _frame_span(start: float, end: float) -> range:
    """The frames an event ``[start, end)`` (seconds) overlaps."""
    first = math.floor(round(start / FRAME_SECONDS, 6))
    last = math.ceil(round(end / FRAME_SECONDS, 6))
    return range(first, max(last, first + 1))


def _event_rows(events: list[Event]) -> tuple[list[Event], list[FrameRow]]:
    """Source indices for event-list events (per class, the lowest index free over the
    frames the event overlaps, in order of onset) and their frame rows."""
    ordered = sorted(events, key=lambda e: (e.start, e.end, e.cls, e.azimuth, e.elevation))
    placed: list[Event] = []
    rows: list[FrameRow] = []
    for event in ordered:
        span = _frame_span(event.start, event.end)
        busy = {
            other.source
            for other in placed
            if other.cls == event.cls and set(span) & set(_frame_span(other.start, other.end))
        }
        source = min(set(range(len(busy) + 1)) - busy)
        event = Event(
            event.cls,
            source,
            event.start,
            event.end,
            event.azimuth,
            event.elevation,
            event.distance,
        )
        placed.append(event)
        for k in span:
            rows.append(
                FrameRow(k, event.cls, source, event.azimuth, event.elevation, event.distance)
            )
    rows.sort(key=lambda r: (r.frame, r.cls, r.source))
    placed.sort(key=lambda e: (e.start, e.end, e.cls, e.source))
    return placed, rows


def _class_names(given: list[str] | None, problems: list[str]) -> tuple[str, ...] | None:
    if given is None:
        return None
    names = tuple(name.strip() for name in given)
    if not names or any(not n or "\n" in n or "," in n for n in names):
        problems.append("--classes: names must be non-empty and hold no comma or newline")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        problems.append(f"--classes: names given twice: {duplicates}")
    return names


def read_dataset(
    path: str | Path,
    layout: str,
    audio_dir: str = DEFAULT_AUDIO_DIR,
    metadata_dir: str = DEFAULT_METADATA_DIR,
    classes: list[str] | None = None,
) -> Dataset:
    """Read and check every wav header and CSV of a SELD dataset (module docstring).

    Args:
        path: the dataset folder.
        layout: ``"frames"`` or ``"events"``.
        audio_dir, metadata_dir: folders of the wavs and CSVs, relative to ``path``.
        classes: class names in index order (frame lists: their indices; event lists: the
            names the CSVs must use). Default: ``class0``, ``class1``... up to the highest
            index found (frame lists), the sorted names found (event lists).
    Raises:
        TaskError: listing every problem; ValueError for an unknown layout.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    path = Path(path)
    problems: list[str] = []
    names = _class_names(classes, problems)
    roots = {"audio": path / audio_dir, "metadata": path / metadata_dir}
    for kind, root in roots.items():
        if not root.is_dir():
            problems.append(f"{root} is not a folder (the {kind} folder; set it with --{kind}-dir)")
    if problems:
        raise TaskError(path, problems)
    wavs = _files(roots["audio"], ".wav", problems, path)
    csvs = _files(roots["metadata"], ".csv", problems, path)
    for key in sorted(set(wavs) - set(csvs)):
        problems.append(f"{wavs[key].relative_to(path).as_posix()} has no {metadata_dir}/{key}.csv")
    for key in sorted(set(csvs) - set(wavs)):
        problems.append(f"{csvs[key].relative_to(path).as_posix()} has no {audio_dir}/{key}.wav")
    stems: dict[str, list[str]] = {}
    for key in wavs:
        stems.setdefault(key.rsplit("/", 1)[-1], []).append(key)
    for stem, keys in sorted(stems.items()):
        if len(keys) > 1:
            problems.append(
                f"recordings {keys} share the name {stem!r}; output file names need unique "
                "stems (convert the subsets separately, with --audio-dir/--metadata-dir)"
            )
    if not wavs and not problems:
        problems.append(f"{roots['audio']} holds no .wav files")

    rates: dict[int, list[str]] = {}
    raw: list[tuple[str, object, list]] = []
    for key in sorted(set(wavs) & set(csvs)):
        shown = wavs[key].relative_to(path).as_posix()
        try:
            info = sf.info(str(wavs[key]))
        except Exception as error:  # soundfile raises several types for bad files
            problems.append(f"{shown} is unreadable ({error})")
            continue
        if info.channels != CHANNELS:
            problems.append(f"{shown} has {info.channels} channels; first-order Ambisonics has 4")
        if info.frames == 0:
            problems.append(f"{shown} is empty")
        cut = truncation_problem(wavs[key], shown)
        if cut:
            problems.append(cut)
        if info.subtype in FLOAT_SUBTYPES:
            check_finite(wavs[key], shown, info.subtype, problems)
        rates.setdefault(info.samplerate, []).append(shown)
        try:
            labels = (
                read_frame_csv(csvs[key], len(names) if names else None)
                if layout == "frames"
                else read_event_csv(csvs[key])
            )
        except DcaseFormatError as error:
            where = csvs[key].relative_to(path).as_posix()
            problems += [f"{where}: {p}" for p in error.problems]
            continue
        raw.append((key, info, labels))
    if len(rates) > 1:
        listing = "; ".join(
            f"{rate} Hz: {files[0]} and {len(files) - 1} more"
            for rate, files in sorted(rates.items())
        )
        problems.append(f"the wavs have several sample rates ({listing}); one is needed")

    layout_rows = [labels for _, _, labels in raw]
    if layout == "frames":
        distances = {r.distance is not None for labels in layout_rows for r in labels}
        if len(distances) > 1:
            problems.append("some frame-list rows have a distance column and some do not")
        if names is None:
            top = max((r.cls for labels in layout_rows for r in labels), default=-1)
            names = tuple(f"class{i}" for i in range(top + 1))
        has_distance = distances == {True}
    else:
        found = sorted({r.label for labels in layout_rows for r in labels})
        odd = [n for n in found if "," in n or "\n" in n]
        if odd:
            problems.append(f"class names hold a comma or a line break: {odd}")
        folded: dict[str, list[str]] = {}
        for name in found:
            folded.setdefault(name.casefold(), []).append(name)
        for variants in folded.values():
            if len(variants) > 1:
                problems.append(f"class names differ only in case across files: {variants}")
        if names is None:
            names = tuple(found)
        else:
            unknown = [n for n in found if n not in names]
            if unknown:
                problems.append(f"class names not in --classes: {unknown}")
        has_distance = bool(layout_rows) and all(
            r.distance is not None for labels in layout_rows for r in labels
        )
    if not names:
        problems.append("no file holds any label; a SELD dataset needs labelled events")

    recordings = []
    index = {name: i for i, name in enumerate(names or ())}
    for key, info, labels in raw:
        shown = csvs[key].relative_to(path).as_posix()
        seconds = info.frames / info.samplerate
        stem = key.rsplit("/", 1)[-1]
        subset = key.rsplit("/", 1)[0] if "/" in key else ""
        match = FOLD_PREFIX[layout].match(stem)
        fold = int(match.group(1)) if match else None
        if layout == "frames":
            rows = labels
            late = [r.frame for r in rows if r.frame * info.samplerate >= 10 * info.frames]
            if late:
                problems.append(
                    f"{shown}: frames {late[:5]} start after the end of the wav ({seconds:.3f} s)"
                )
            events = _track_events(rows, seconds)
        else:
            events = []
            for r in labels:
                if r.start >= seconds or r.end > seconds + END_TOLERANCE:
                    problems.append(
                        f"{shown}: event {r.label!r} {r.start}-{r.end} s does not fit in the wav "
                        f"({seconds:.3f} s; offsets may pass the end by {END_TOLERANCE} s at most)"
                    )
                    continue
                if r.label in index:
                    end = min(r.end, seconds)
                    events.append(
                        Event(index[r.label], 0, r.start, end, r.azimuth, r.elevation, r.distance)
                    )
            events, rows = _event_rows(events)
        recordings.append(
            Recording(
                key,
                stem,
                subset,
                fold,
                wavs[key],
                info.samplerate,
                info.frames,
                info.subtype,
                tuple(rows),
                tuple(events),
            )
        )
    if problems:
        raise TaskError(path, problems)
    return Dataset(
        path,
        layout,
        audio_dir,
        metadata_dir,
        tuple(names),
        classes is not None,
        recordings[0].sample_rate,
        has_distance,
        recordings,
    )

"""What ``natheear-tasks seld`` writes, decided from a validated dataset (no audio read):
the HEAR split of each recording and, for each of the three tasks, its wavs (a span of a
recording each) with their labels and side-file records.

* Event task: each recording cut into ``event_seconds`` pieces (the last one padded with
  silence), its events cut at the piece edges; labels in ms from the piece's start.
* Localization task: ``localization_seconds`` windows in which exactly one source (one
  (class, source) track) is active throughout, back to back from the start of each such
  span; the label is the unit vector of the source's direction (frame lists: the mean of
  the window's frame directions, windows whose directions spread further than
  ``max_spread_deg`` from that mean are left out).
* SELD task: each recording cut into ``segment_seconds`` chunks (the last one padded), with
  one label per active source per 100-ms frame (the frame-list rows, counted from the chunk).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from natheear_tasks.formats import published
from natheear_tasks.formats.dcase_frames import (
    FRAME_SECONDS,
    FrameRow,
    azimuth_elevation,
    direction_xyz,
)
from natheear_tasks.seeding import derive_seed
from natheear_tasks.tasks.seld_dataset import Dataset, Recording
from natheear_tasks.tasks.taskdir import TaskError

HEAR_SPLITS = ("train", "valid", "test")
DEFAULT_VALID_PERCENT = 20
ROLE_TOKENS = {"train": {"train"}, "valid": {"val", "valid", "validation"}, "test": {"test"}}
MIN_KFOLD = 3  # heareval's folds: test, validation and at least one to train on


@dataclass
class Splits:
    """The HEAR split of every recording kept."""

    mode: str  # "trainvaltest" or "presplit_kfold"
    names: list[str]  # HEAR split names, in metadata order
    of: dict[str, str]  # recording identity -> HEAR split
    rule: str  # the --fold-splits given, or the default rule applied
    members: dict[str, list[str]]  # HEAR split -> the dataset folds / subsets in it
    left_out: list[str] = field(default_factory=list)  # recordings no split selects

    def describe(self) -> dict:
        return {
            "mode": self.mode,
            "rule": self.rule,
            "members": self.members,
            "left_out": len(self.left_out),
        }


def _tokens(subset: str) -> set[str]:
    return set(re.split(r"[-_/.]", subset.lower()))


def _role(subset: str) -> str | None:
    roles = [role for role, words in ROLE_TOKENS.items() if _tokens(subset) & words]
    return roles[0] if len(roles) == 1 else None


def _valid_from_train(train: list[str], percent: float) -> list[str]:
    """``percent`` % of the training recordings (at least one), chosen by a hash of their
    names: the same recordings whatever the others."""
    count = max(1, round(len(train) * percent / 100))
    return sorted(sorted(train, key=lambda r: derive_seed(0, "valid", r))[:count])


def _kfold(dataset: Dataset, rule: str, problems: list[str]) -> Splits | None:
    unfolded = [r.identity for r in dataset.recordings if r.fold is None]
    if unfolded:
        prefix = dataset.fold_name(0)[:-1]
        problems.append(
            f"{len(unfolded)} recordings have no {prefix}N_ prefix (first: {unfolded[0]}), so "
            "no fold; name the splits with --fold-splits train=... valid=... test=..."
        )
        return None
    folds = sorted({r.fold for r in dataset.recordings})
    if len(folds) < MIN_KFOLD:
        problems.append(
            f"folds {[dataset.fold_name(f) for f in folds]}: cross-validation needs at least "
            f"{MIN_KFOLD}; name the splits with --fold-splits train=... valid=... test=..."
        )
        return None
    names = {fold: f"fold{i:02d}" for i, fold in enumerate(folds)}
    return Splits(
        "presplit_kfold",
        [names[f] for f in folds],
        {r.identity: names[r.fold] for r in dataset.recordings},
        rule,
        {names[f]: [dataset.fold_name(f)] for f in folds},
    )


def _select(dataset: Dataset, selector: str, problems: list[str]) -> list[Recording]:
    chosen = [
        r
        for r in dataset.recordings
        if selector == r.subset or (r.fold is not None and selector == dataset.fold_name(r.fold))
    ]
    if not chosen:
        subsets = sorted({r.subset for r in dataset.recordings if r.subset})
        folds = sorted({dataset.fold_name(r.fold) for r in dataset.recordings if r.fold})
        problems.append(
            f"--fold-splits: {selector!r} selects no recording (folds: {folds or 'none'}; "
            f"subsets: {subsets or 'none'})"
        )
    return chosen


def _explicit(dataset: Dataset, spec: list[str], problems: list[str]) -> Splits | None:
    parts: dict[str, str] = {}
    for token in spec:
        split, _, value = token.partition("=")
        if split not in HEAR_SPLITS or not value:
            problems.append(
                f"--fold-splits: {token!r} is not SPLIT=SELECTORS with SPLIT one of "
                f"{list(HEAR_SPLITS)} (or give 'kfold' alone)"
            )
        elif split in parts:
            problems.append(f"--fold-splits: {split} is given twice")
        else:
            parts[split] = value
    missing = [s for s in HEAR_SPLITS if s not in parts]
    if missing and not problems:
        problems.append(f"--fold-splits: {missing} missing; give train=, valid= and test=")
    if problems:
        return None
    of: dict[str, str] = {}
    members: dict[str, list[str]] = {}
    percent = None
    for split in HEAR_SPLITS:
        value = parts[split]
        if split == "valid" and value.endswith("%"):
            try:
                percent = float(value[:-1])
            except ValueError:
                percent = -1.0
            if not 0 < percent < 100:
                problems.append(f"--fold-splits: valid={value} must be a percentage in (0, 100)")
            members[split] = [f"{value} of train"]
            continue
        members[split] = value.split(",")
        for selector in members[split]:
            for recording in _select(dataset, selector, problems):
                if of.get(recording.identity, split) != split:
                    problems.append(
                        f"--fold-splits: {recording.identity} is in both "
                        f"{of[recording.identity]} and {split}"
                    )
                of[recording.identity] = split
    if percent is not None and not problems:
        train = [r for r, s in of.items() if s == "train"]
        valid = _valid_from_train(train, percent)
        if len(valid) >= len(train):
            problems.append(f"--fold-splits: valid={percent}% leaves no training recording")
        of.update({r: "valid" for r in valid})
    if problems:
        return None
    left_out = sorted(r.identity for r in dataset.recordings if r.identity not in of)
    return Splits("trainvaltest", list(HEAR_SPLITS), of, " ".join(spec), members, left_out)


def _default(dataset: Dataset, problems: list[str]) -> Splits | None:
    subsets = sorted({r.subset for r in dataset.recordings})
    if subsets == [""]:
        return _kfold(dataset, f"default: each {dataset.fold_name(0)[:-1]} a fold", problems)
    roles = {s: _role(s) for s in subsets}
    unclear = [s or "(top level)" for s, role in roles.items() if role is None]
    if unclear:
        problems.append(
            f"subsets {unclear} are not named train, val(id) or test, so their split is not "
            "known; give --fold-splits train=... valid=... test=... (or kfold)"
        )
        return None
    members = {split: [s for s in subsets if roles[s] == split] for split in HEAR_SPLITS}
    of = {r.identity: roles[r.subset] for r in dataset.recordings}
    rule = "default: subsets by name (train, val, test)"
    if not members["valid"]:
        train = [r for r, split in of.items() if split == "train"]
        of.update({r: "valid" for r in _valid_from_train(train, DEFAULT_VALID_PERCENT)})
        members["valid"] = [f"{DEFAULT_VALID_PERCENT}% of train"]
        rule += f", valid {DEFAULT_VALID_PERCENT}% of train"
    empty = [s for s in HEAR_SPLITS if s not in of.values()]
    if empty:
        problems.append(f"no recording falls in {empty}; give --fold-splits")
        return None
    return Splits("trainvaltest", list(HEAR_SPLITS), of, rule, members)


def assign_splits(dataset: Dataset, spec: list[str] | None) -> Splits:
    """The HEAR splits (README: natheear_tasks, SELD datasets).

    ``spec`` is ``["kfold"]`` (each dataset fold a HEAR fold), or ``["train=SEL[,SEL]",
    "valid=SEL[,SEL]|N%", "test=SEL[,SEL]"]`` with fold names (``fold3``, ``split1``) or
    subset folders (``dev-train-sony``); ``valid=N%`` takes N % of the training
    recordings. Default (None): subsets named ``*train*``, ``*val*``, ``*test*`` give the
    splits (without a validation subset, 20 % of the training recordings); without
    subsets, each fold is a HEAR fold (``presplit_kfold``, at least 3 folds).

    Raises:
        TaskError: listing every problem.
    """
    problems: list[str] = []
    if spec is None:
        splits = _default(dataset, problems)
    elif spec == ["kfold"]:
        splits = _kfold(dataset, "kfold", problems)
    else:
        splits = _explicit(dataset, spec, problems)
    if problems or splits is None:
        raise TaskError(dataset.path, problems)
    return splits


# --- the three tasks ------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One output wav: ``seconds`` of a recording from ``start`` (padded past its end)."""

    split: str
    file: str
    recording: str  # identity
    start: float
    seconds: float


@dataclass
class TaskPlan:
    """One task's wavs, labels (``{split: {file: labels}}``) and side-file records."""

    items: list[Item] = field(default_factory=list)
    labels: dict[str, dict] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, item: Item, labels, record: dict) -> None:
        self.items.append(item)
        self.labels.setdefault(item.split, {})[item.file] = labels
        self.records.append({"split": item.split, "file": item.file, **record})

    def sort(self) -> None:
        order = sorted(
            range(len(self.items)), key=lambda i: (self.items[i].split, self.items[i].file)
        )
        self.items = [self.items[i] for i in order]
        self.records = [self.records[i] for i in order]


def _name(recording: Recording, index: int) -> str:
    return f"{recording.stem}-{index:03d}.wav"


def _cuts(recording: Recording, seconds: float) -> list[float]:
    """Starts of back-to-back pieces of ``seconds`` covering the recording."""
    count = max(1, math.ceil(recording.seconds / seconds - 1e-9))
    return [round(j * seconds, 6) for j in range(count)]


def _pieces(
    dataset: Dataset, splits: Splits, seconds: float
) -> Iterator[tuple[Recording, int, Item]]:
    """Every recording of the splits cut into back-to-back pieces of ``seconds``: the
    recording, the piece's index in it and its item."""
    for recording in dataset.recordings:
        if recording.identity not in splits.of:
            continue
        for j, start in enumerate(_cuts(recording, seconds)):
            split = splits.of[recording.identity]
            yield recording, j, Item(split, _name(recording, j), recording.identity, start, seconds)


def _span_record(recording: Recording, start: float, seconds: float) -> dict:
    return {
        "recording": recording.identity,
        "start_seconds": start,
        "end_seconds": round(start + seconds, 6),
        "audio_seconds": round(min(seconds, recording.seconds - start), 6),
    }


def _vector(xyz: np.ndarray) -> list[float]:
    return [round(float(v), 6) for v in xyz]


def event_task(dataset: Dataset, splits: Splits, seconds: float) -> TaskPlan:
    """The event task's pieces and labels (``{"label", "start", "end"}`` in ms)."""
    plan = TaskPlan()
    for recording, _, item in _pieces(dataset, splits, seconds):
        start, end = item.start, item.start + seconds
        labels = [
            {
                "label": dataset.classes[e.cls],
                "start": round(1000 * (max(e.start, start) - start), 3),
                "end": round(1000 * (min(e.end, end) - start), 3),
            }
            for e in recording.events
            if e.start < end and start < e.end
        ]
        labels.sort(key=lambda x: (x["start"], x["end"], x["label"]))
        plan.add(item, labels, _span_record(recording, start, seconds))
    plan.sort()
    return plan


def seld_format(dataset: Dataset) -> published.SeldFormat:
    """The SELD task's published fields: the dataset's classes, 100-ms label frames, the
    DCASE scoring (20 degrees, macro), dynamic sources for frame lists."""
    return published.SeldFormat(
        list(dataset.classes), 1000 * FRAME_SECONDS, round(1 / FRAME_SECONDS),
        published.DEFAULT_DOA_THRESHOLD, "macro", dataset.layout == "frames",
    )  # fmt: skip


def seld_task(dataset: Dataset, splits: Splits, seconds: float) -> TaskPlan:
    """The SELD task's chunks and their events in the published format (the consecutive
    100-ms frames of a source with one direction make one event)."""
    plan = TaskPlan()
    fmt = seld_format(dataset)
    frames = round(seconds / FRAME_SECONDS)
    for recording, j, item in _pieces(dataset, splits, seconds):
        first = j * frames
        rows = [
            dataclasses.replace(row, frame=row.frame - first)
            for row in recording.rows
            if first <= row.frame < first + frames
        ]
        labels = published.frame_events(rows, fmt)
        record = {**_span_record(recording, item.start, seconds), "first_frame": first}
        plan.add(item, labels, record)
    plan.sort()
    return plan


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    return math.degrees(math.acos(max(-1.0, min(1.0, float(a @ b)))))


def _frame_windows(recording: Recording, frames: int) -> list[tuple[int, list[FrameRow]]]:
    """Windows of ``frames`` frames with one and the same track active in each frame."""
    by_frame: dict[int, list[FrameRow]] = {}
    for row in recording.rows:
        by_frame.setdefault(row.frame, []).append(row)
    single = {k: rows[0] for k, rows in by_frame.items() if len(rows) == 1}
    windows, run = [], []
    for k in [*sorted(single), None]:
        track = None if k is None else (single[k].cls, single[k].source)
        if run and (k != run[-1].frame + 1 or track != (run[-1].cls, run[-1].source)):
            for i in range(len(run) // frames):
                window = run[i * frames : (i + 1) * frames]
                if (window[-1].frame + 1) * FRAME_SECONDS <= recording.seconds + 1e-9:
                    windows.append((window[0].frame, window))
            run = []
        if k is not None:
            run.append(single[k])
    return windows


def _single_spans(recording: Recording) -> list[tuple[float, float, int]]:
    """``(start, end, event index)`` of the spans where exactly one event is active."""
    events = recording.events
    edges = sorted({0.0, recording.seconds, *(e.start for e in events), *(e.end for e in events)})
    spans: list[tuple[float, float, int]] = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        active = [i for i, e in enumerate(events) if e.start <= a and b <= e.end]
        if len(active) != 1:
            continue
        if spans and spans[-1][2] == active[0] and spans[-1][1] == a:
            spans[-1] = (spans[-1][0], b, active[0])
        else:
            spans.append((a, b, active[0]))
    return spans


def localization_task(
    dataset: Dataset, splits: Splits, seconds: float, max_spread_deg: float
) -> TaskPlan:
    """The localization task's single-source windows and ``[x, y, z]`` labels."""
    plan = TaskPlan()
    spread_out = 0
    for recording in dataset.recordings:
        if recording.identity not in splits.of:
            continue
        found = []  # (start, cls, source, direction, spread, distance)
        if dataset.layout == "frames":
            for first, rows in _frame_windows(recording, round(seconds / FRAME_SECONDS)):
                directions = np.stack([r.direction for r in rows])
                mean = directions.sum(axis=0)
                mean /= np.linalg.norm(mean)
                spread = max(_angle(mean, d) for d in directions)
                if spread > max_spread_deg:
                    spread_out += 1
                    continue
                distances = [r.distance for r in rows if r.distance is not None]
                distance = round(float(np.mean(distances)), 4) if distances else None
                found.append(
                    (first * FRAME_SECONDS, rows[0].cls, rows[0].source, mean, spread, distance)
                )
        else:
            for a, b, index in _single_spans(recording):
                event = recording.events[index]
                direction = direction_xyz(event.azimuth, event.elevation)
                for i in range(math.floor((b - a) / seconds + 1e-9)):
                    start = a + i * seconds
                    found.append((start, event.cls, event.source, direction, 0.0, event.distance))
        for j, (start, cls, source, direction, spread, distance) in enumerate(found):
            azimuth, elevation = azimuth_elevation(direction)
            record = {
                "recording": recording.identity,
                "start_seconds": round(start, 6),
                "end_seconds": round(start + seconds, 6),
                "class": dataset.classes[cls],
                "source": source,
                "azimuth": round(azimuth, 4),
                "elevation": round(elevation, 4),
                "spread_deg": round(spread, 4),
            }
            if distance is not None:
                record["distance"] = distance
            item = Item(
                splits.of[recording.identity],
                _name(recording, j),
                recording.identity,
                round(start, 6),
                seconds,
            )
            plan.add(item, _vector(direction), record)
    if spread_out:
        plan.notes.append(
            f"{spread_out} single-source windows left out: their directions spread more than "
            f"{max_spread_deg} degrees (--max-spread)"
        )
    plan.sort()
    return plan

"""HEAR task directories: read and validate a source task in full, write output tasks
atomically.

Layout (hear-preprocess): ``task_metadata.json``, ``labelvocabulary.csv`` (``idx,label``),
one ``<split>.json`` per entry of ``metadata["splits"]`` and ``<rate>/<split>/<file>.wav``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

# the atomic writers, also imported from here
from natheear_tasks.atomic import atomic_write_bytes as atomic_write_bytes
from natheear_tasks.atomic import atomic_write_json as atomic_write_json
from natheear_tasks.formats.published import read_vocabulary_text
from natheear_tasks.formats.wav import FLOAT_SUBTYPES, truncation_problem
from natheear_tasks.paths import escapes, name_problem

METADATA = "task_metadata.json"
VOCABULARY = "labelvocabulary.csv"
REQUIRED_METADATA = ("task_name", "embedding_type", "prediction_type", "splits", "sample_duration")
MAX_LISTED_PROBLEMS = 40
FINITE_CHECK_FRAMES = 1 << 20  # frames read at a time by the NaN/infinity check


class TaskError(ValueError):
    """A source task that cannot be converted; ``problems`` lists every problem found."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.problems = problems
        shown = problems[:MAX_LISTED_PROBLEMS]
        more = len(problems) - len(shown)
        lines = [f"{path}: {len(problems)} problem(s); nothing was written:"]
        lines += [f"  - {p}" for p in shown]
        if more:
            lines.append(f"  ... and {more} more")
        super().__init__("\n".join(lines))


@dataclass
class AudioFile:
    """One wav of the source task at one rate."""

    path: Path
    frames: int
    subtype: str


@dataclass
class FileEntry:
    """One clip of the source task: its split, name, labels and its wav at every rate."""

    split: str
    name: str
    audio: dict[int, AudioFile]

    @property
    def identity(self) -> str:
        return f"{self.split}/{self.name}"


@dataclass
class Task:
    """A validated source task."""

    path: Path
    metadata: dict
    vocabulary_text: str
    split_texts: dict[str, str]
    splits: dict[str, dict]
    rates: list[int]
    files: list[FileEntry]  # sorted by (split, name)

    @property
    def seconds(self) -> float:
        """Total audio duration at one rate."""
        rate = self.rates[0]
        return sum(f.audio[rate].frames for f in self.files) / rate


def _load_json(path: Path, problems: list[str]):
    if not path.is_file():
        problems.append(f"{path.name} is missing")
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        problems.append(f"{path.name} is not valid JSON ({error})")
        return None


def _read_vocabulary(path: Path, problems: list[str]) -> tuple[str, set[str]]:
    text, labels, found = read_vocabulary_text(path)
    problems += found
    return text, set(labels)


def _check_labels(split: str, name: str, labels, kind: str, vocab: set[str], problems: list[str]):
    where = f"{split}.json[{name!r}]"
    if not isinstance(labels, list):
        problems.append(f"{where}: labels must be a list, got {type(labels).__name__}")
        return
    for label in labels:
        if kind == "event":
            if not isinstance(label, dict) or not {"label", "start", "end"} <= set(label):
                problems.append(f"{where}: event labels need label, start and end; got {label!r}")
                continue
            start, end = label["start"], label["end"]
            if not all(isinstance(v, int | float) for v in (start, end)) or not 0 <= start <= end:
                problems.append(f"{where}: event times must satisfy 0 <= start <= end (ms)")
            label = label["label"]
        if not isinstance(label, str):
            problems.append(f"{where}: a label must be a string, got {type(label).__name__}")
        elif vocab and label not in vocab:
            problems.append(f"{where}: label {label!r} is not in {VOCABULARY}")


def read_task(path: str | Path, rates: list[int] | None = None) -> Task:
    """Read and validate a HEAR task completely (every wav's header is read).

    Args:
        path: the task directory.
        rates: sample rates to keep (default: every rate folder present).
    Raises:
        TaskError: listing every problem found (missing or malformed metadata, vocabulary
            or split files, unknown labels, missing or unreadable wavs, wrong sample rates,
            channels or lengths, rate folders that are not sample rates).
    """
    path = Path(path)
    if not path.is_dir():
        raise TaskError(path, [f"{path} is not a folder (expected a HEAR task directory)"])
    problems: list[str] = []
    metadata = _load_json(path / METADATA, problems)
    vocabulary_text, vocab = _read_vocabulary(path / VOCABULARY, problems)
    if not isinstance(metadata, dict):
        if metadata is not None:
            problems.append(f"{METADATA} must hold a JSON object")
        raise TaskError(path, problems)
    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing:
        problems.append(f"{METADATA} lacks {missing}")
        raise TaskError(path, problems)
    kind = metadata["embedding_type"]
    if kind not in ("scene", "event"):
        problems.append(f"{METADATA}: embedding_type must be 'scene' or 'event', got {kind!r}")
    duration = metadata["sample_duration"]
    if duration is not None and (not isinstance(duration, int | float) or duration <= 0):
        problems.append(f"{METADATA}: sample_duration must be a positive number or null")
        duration = None

    folders = sorted(p.name for p in path.iterdir() if p.is_dir())
    present = []
    for name in folders:
        if name.isdigit() and int(name) > 0:
            present.append(int(name))
        else:
            problems.append(f"folder {name!r} is not a sample rate (expected folders like 16000)")
    present.sort()
    if rates:
        absent = [r for r in rates if r not in present]
        if absent:
            problems.append(f"sample rates {absent} asked for, but the task has only {present}")
        keep = [r for r in rates if r in present]
    else:
        keep = present
    if not present:
        problems.append("no sample-rate folders (e.g. 16000/, 48000/)")

    split_texts, splits, files = {}, {}, []
    bar = tqdm(desc=f"checking {path.name}", unit="file", leave=False)
    for split in _split_names(metadata["splits"], problems):
        split_path = path / f"{split}.json"
        data = _load_json(split_path, problems)
        if data is None:
            continue
        if not isinstance(data, dict):
            problems.append(f"{split}.json must map file names to labels")
            continue
        split_texts[split] = split_path.read_text()
        splits[split] = data
        for name in sorted(data):
            problem = name_problem(name)
            if problem:
                problems.append(f"{split}.json: file name {name!r} {problem}")
                continue
            _check_labels(split, name, data[name], kind, vocab, problems)
            audio = {}
            for rate in keep:
                wav = path / str(rate) / split / name
                audio_file = _check_wav(wav, path, rate, duration, problems)
                if audio_file is not None:
                    audio[rate] = audio_file
            files.append(FileEntry(split, name, audio))
            bar.update()
    bar.close()
    if not files and not problems:
        problems.append("the splits list no files")
    if problems:
        raise TaskError(path, problems)
    return Task(path, metadata, vocabulary_text, split_texts, splits, keep, files)


def _split_names(splits: object, problems: list[str]) -> list[str]:
    """The split names of ``metadata["splits"]`` that are valid; the others are problems."""
    if not isinstance(splits, list) or not splits:
        problems.append(
            f"{METADATA}: splits must be a non-empty list of split names, got "
            f"{type(splits).__name__} {json.dumps(splits)[:60]}"
        )
        return []
    names = []
    for split in splits:
        problem = name_problem(split, single=True)
        if problem:
            problems.append(f"{METADATA}: split name {split!r} {problem}")
        elif split in names:
            problems.append(f"{METADATA}: split {split!r} is listed twice")
        else:
            names.append(split)
    return names


def _check_wav(
    wav: Path, root: Path, rate: int, duration: float | None, problems: list[str]
) -> AudioFile | None:
    rel = wav.relative_to(root)
    if not wav.is_file():
        what = "is not a regular file (a FIFO, device or socket?)" if wav.exists() else "is missing"
        problems.append(f"{rel} {what}")
        return None
    split_folder = root / rel.parts[0] / rel.parts[1]
    if escapes(wav, split_folder):
        problems.append(
            f"{rel} leads out of {rel.parts[0]}/{rel.parts[1]}/ through a symbolic link; "
            "copy the file into the task"
        )
        return None
    try:
        info = sf.info(str(wav))
    except Exception as error:  # soundfile raises several types for bad files
        problems.append(f"{rel} is unreadable ({error})")
        return None
    if info.samplerate != rate:
        problems.append(f"{rel} is at {info.samplerate} Hz, inside the {rate} folder")
    if info.channels != 1:
        problems.append(f"{rel} has {info.channels} channels; HEAR source tasks are mono")
    if duration is not None and info.frames != round(duration * rate):
        problems.append(
            f"{rel} has {info.frames} samples; sample_duration {duration} s at {rate} Hz "
            f"needs {round(duration * rate)}"
        )
    if info.frames == 0:
        problems.append(f"{rel} is empty")
    cut = truncation_problem(wav, str(rel))
    if cut:
        problems.append(cut)
    if info.subtype in FLOAT_SUBTYPES:
        check_finite(wav, rel, info.subtype, problems)
    return AudioFile(wav, info.frames, info.subtype)


def check_finite(wav: Path, rel: Path | str, subtype: str, problems: list[str]) -> None:
    """List a float wav holding NaN or infinite samples (every sample is read, in blocks of
    ``FINITE_CHECK_FRAMES`` frames)."""
    dtype = "float64" if subtype == "DOUBLE" else "float32"
    count, first = 0, None
    try:
        blocks = sf.blocks(str(wav), FINITE_CHECK_FRAMES, dtype=dtype, always_2d=True)
        for n, block in enumerate(blocks):
            bad = np.flatnonzero(~np.isfinite(block).all(axis=1))
            if len(bad) and first is None:
                first = n * FINITE_CHECK_FRAMES + int(bad[0])
            count += len(bad)
    except Exception as error:  # soundfile raises several types for bad files
        problems.append(f"{rel} is unreadable ({error})")
        return
    if count:
        problems.append(
            f"{rel} has {count} samples that are NaN or infinite (the first at sample "
            f"{first}); fix or remove the file"
        )

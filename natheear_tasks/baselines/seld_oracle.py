"""``natheear-tasks seld-oracle``: the oracle intensity-vector SELD baseline, no learning.

A sanity anchor for the SELD metrics: what one direction per frame, read from the first-
order Ambisonics audio, scores when the classes are handed over. Per 100-ms label frame:

* **direction** (from the audio): the active intensity ``Re(conj(W) [X, Y, Z])`` of the
  AmbiX audio (:func:`natheear_tasks.ambisonics.active_intensity`, 200 Hz to 8 kHz, capped
  at 0.45 of the sample rate) summed over the STFT frames (a hop of the nearest whole
  number of samples to 10 ms, Hann window of 40 ms or more:
  :func:`~natheear_tasks.ambisonics.stft_size`) whose centres fall in the label frame. One
  direction per frame: of overlapping sources it finds at most one (roughly the louder's,
  pulled towards the other);
* **activity** (from the audio): the frame's W energy in the same band is above the file's
  noise floor (the 10th percentile of its frames' energies, ``--floor-percentile``) by more
  than 10 dB (``--margin-db``). A file of digital silence has no active frame;
* **classes** (the oracle, from the reference labels): an active frame gets one row per
  class the reference has in that frame, all with the frame's one direction and source 0;
  an active frame without a reference class gets the classes of the nearest frame that has
  one (in time, the earlier on ties), so activity in a reverberation tail or in noise
  costs what a real system would pay. A file without a single reference row gets no rows.

The oracle is *not* given the number of sources, their source indices, their directions or
their activity. Output: ``OUT/prediction/<stem>.csv`` (DCASE output CSVs,
``frame,class,source,azimuth,elevation``) and ``OUT/reference/<stem>.csv`` (the dataset's
labels as frame lists: event lists label every frame an event overlaps, as ``natheear-tasks
seld`` does), scored by ``natheear-tasks seld-score --ref OUT/reference --pred
OUT/prediction``; ``OUT/oracle.json`` records the settings.

``--layout task`` reads a SELD task folder in the published format instead (an ``accdoa``
task: the GRAM authors' RealSELD tasks, or ``natheear-tasks seld`` output): every file of
every split, at the task's highest rate, its label frames (``_nb_label_frames_1s``) and its
events' directions (``[azimuth, elevation]``, the DCASE convention); the CSVs are named
``<split>__<file>.csv``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import Tensor
from tqdm import tqdm

from natheear_tasks.ambisonics import (
    CHANNEL_ORDERS,
    INTENSITY_BAND,
    active_intensity,
    stft_size,
    to_ambix,
)
from natheear_tasks.atomic import atomic_folder
from natheear_tasks.exits import ALL_OR_NOTHING, run_command
from natheear_tasks.formats.dcase_frames import (
    FrameRow,
    azimuth_elevation,
    format_frame_csv,
)
from natheear_tasks.tasks import seld_folder
from natheear_tasks.tasks.seld_dataset import (
    DEFAULT_AUDIO_DIR,
    DEFAULT_METADATA_DIR,
    LAYOUTS,
    Recording,
    read_dataset,
)
from natheear_tasks.tasks.taskdir import TaskError, atomic_write_bytes

TASK_LAYOUT = "task"
MARGIN_DB = 10.0
FLOOR_PERCENTILE = 10.0
HOP_SECONDS = 0.01
GIVEN = (
    "per 100-ms frame, the set of classes the reference has there (for an active frame "
    "without one, the classes of the nearest frame that has one)"
)
INFERRED = "activity (W energy above the file's noise floor) and one direction per frame"


def frame_intensity(
    audio: Tensor, sample_rate: int, num_frames: int, frames_per_second: int = 10
) -> tuple[Tensor, Tensor]:
    """Active intensity and W energy of AmbiX audio summed per label frame.

    Args:
        audio: ``(..., 4, T)`` AmbiX (W, Y, Z, X).
        sample_rate: Hz.
        num_frames: label frames ``F``; STFT frames centred at or after ``F`` frames are
            left out.
        frames_per_second: label frames a second (10: 100-ms frames).
    Returns:
        ``intensity (..., F, 3)`` as ``[x, y, z]`` (x forward, y left, z up) and
        ``energy (..., F)``.
    """
    hop = round(sample_rate * HOP_SECONDS)
    band = (INTENSITY_BAND[0], min(INTENSITY_BAND[1], 0.45 * sample_rate))
    intensity, energy = active_intensity(audio, sample_rate, stft_size(sample_rate), hop, band)
    centres = torch.arange(energy.shape[-1], device=audio.device) * hop
    frame = torch.div(centres * frames_per_second, sample_rate, rounding_mode="floor")
    keep = frame < num_frames
    summed = intensity.new_zeros(*intensity.shape[:-1], num_frames)
    summed.index_add_(-1, frame[keep], intensity[..., keep])
    total = energy.new_zeros(*energy.shape[:-1], num_frames)
    total.index_add_(-1, frame[keep], energy[..., keep])
    return summed.movedim(-2, -1), total


def active_frames(
    energy: Tensor, margin_db: float = MARGIN_DB, percentile: float = FLOOR_PERCENTILE
) -> Tensor:
    """``(..., F)`` bool: frames whose energy passes the floor (the ``percentile`` of each
    file's frames) by more than ``margin_db`` (strictly: a zero energy is never active)."""
    floor = torch.quantile(energy.double(), percentile / 100, dim=-1, keepdim=True)
    return energy.double() > floor * 10 ** (margin_db / 10)


def oracle_rows(intensity: Tensor, active: Tensor, reference: Sequence[FrameRow]) -> list[FrameRow]:
    """The oracle's rows of one file (module docstring).

    Args:
        intensity: ``(F, 3)`` per frame.
        active: ``(F,)`` bool.
        reference: the file's reference rows (only their frames and classes are used).
    """
    classes: dict[int, set[int]] = {}
    for row in reference:
        classes.setdefault(row.frame, set()).add(row.cls)
    labelled = np.array(sorted(classes), dtype=np.int64)
    if not len(labelled):
        return []
    rows = []
    vectors = intensity.double().cpu().numpy()
    for frame in torch.nonzero(active).flatten().tolist():
        if frame not in classes:
            after = int(np.searchsorted(labelled, frame))
            near = [labelled[i] for i in (after - 1, after) if 0 <= i < len(labelled)]
            frame_from = min(near, key=lambda k: (abs(k - frame), k))
        else:
            frame_from = frame
        azimuth, elevation = azimuth_elevation(vectors[frame])
        rows += [FrameRow(frame, cls, 0, azimuth, elevation) for cls in sorted(classes[frame_from])]
    return rows


def reference_rows(recording: Recording | TaskFile) -> list[FrameRow]:
    """The recording's labels as frame-list rows without the distance column."""
    return [FrameRow(r.frame, r.cls, r.source, r.azimuth, r.elevation) for r in recording.rows]


@dataclass(frozen=True)
class TaskFile:
    """One file of a published-format SELD task, as the oracle reads it."""

    identity: str  # "<split>/<file>"
    stem: str  # "<split>__<file without .wav, / as __>"
    wav: Path
    sample_rate: int
    frame_count: int
    rows: tuple[FrameRow, ...]


def task_files(task_dir: Path) -> tuple[list[str], int, list[TaskFile]]:
    """The classes, label frames a second and files of a published SELD task folder
    (checked as ``evaluate`` checks it; each file read at the task's highest rate).

    Raises:
        TaskError: every problem of the task folder.
    """
    where = Path("seld-oracle")
    try:
        metadata = json.loads((task_dir / "task_metadata.json").read_text())
        task = seld_folder.read_task(task_dir, metadata)
    except (OSError, ValueError) as error:
        raise TaskError(where, [f"{task_dir}: {p}" for p in str(error).splitlines()]) from None
    rates = sorted(int(p.name) for p in task_dir.iterdir() if seld_folder.RATE_FOLDER.match(p.name))
    if not rates:
        raise TaskError(where, [f"{task_dir} has no <sample rate>/ folder of wavs"])
    files, problems, stems = [], [], set()
    for split, labels in task.labels.items():
        for name, rows in labels.items():
            wav = task_dir / str(rates[-1]) / split / name
            stem = f"{split}__{name.removesuffix('.wav').replace('/', '__')}"
            try:
                channels = sf.info(str(wav)).channels if wav.is_file() else 0
            except (RuntimeError, sf.LibsndfileError) as error:
                problems.append(f"{wav} cannot be read ({error})")
                continue
            if not wav.is_file():
                problems.append(f"{wav} is missing")
            elif channels != 4:
                problems.append(f"{wav} has {channels} channels, not 4 (FOA)")
            elif stem in stems:
                problems.append(f"{split}/{name}: two files would write {stem}.csv")
            else:
                stems.add(stem)
                frames = task.frames[split, name]
                files.append(TaskFile(f"{split}/{name}", stem, wav, rates[-1], frames, tuple(rows)))
    if problems:
        raise TaskError(where, problems)
    return task.fmt.classes, task.fmt.frames_per_second, files


def predict(
    recording: Recording | TaskFile,
    channel_order: str = "acn",
    margin_db: float = MARGIN_DB,
    percentile: float = FLOOR_PERCENTILE,
    frames_per_second: int = 10,
) -> tuple[list[FrameRow], int]:
    """The oracle's rows for one recording and its number of active frames."""
    audio, _ = sf.read(str(recording.wav), dtype="float64", always_2d=True)
    ambix = to_ambix(torch.from_numpy(np.ascontiguousarray(audio.T)), channel_order)
    intensity, energy = frame_intensity(
        ambix, recording.sample_rate, recording.frame_count, frames_per_second
    )
    active = active_frames(energy, margin_db, percentile)
    return oracle_rows(intensity, active, recording.rows), int(active.sum())


def run_oracle(
    dataset_dir: str | Path,
    out: str | Path,
    layout: str,
    channel_order: str = "acn",
    margin_db: float = MARGIN_DB,
    percentile: float = FLOOR_PERCENTILE,
    audio_dir: str = DEFAULT_AUDIO_DIR,
    metadata_dir: str = DEFAULT_METADATA_DIR,
) -> dict:
    """Write the oracle's predictions and the references of every recording into the new
    folder ``out`` (built beside it and renamed at the end); returns the ``oracle.json``
    record.

    Raises:
        TaskError: a bad dataset (every problem listed), bad settings or an existing ``out``.
    """
    out = Path(out)
    problems = []
    if channel_order not in CHANNEL_ORDERS:
        problems.append(f"--channel-order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
    if not 0 <= percentile < 100:
        problems.append(f"--floor-percentile must be in [0, 100), got {percentile}")
    if not np.isfinite(margin_db) or margin_db < 0:
        problems.append(f"--margin-db must be a non-negative number, got {margin_db}")
    if out.exists():
        problems.append(f"{out} exists; give a new folder for the oracle's output, or remove it")
    if problems:
        raise TaskError(Path("seld-oracle"), problems)
    if layout == TASK_LAYOUT:
        classes, per_second, recordings = task_files(Path(dataset_dir))
        source, digest = str(Path(dataset_dir)), None
    else:
        dataset = read_dataset(dataset_dir, layout, audio_dir, metadata_dir)
        classes, per_second, recordings = list(dataset.classes), 10, dataset.recordings
        source, digest = str(dataset.path), dataset.digest()
    with atomic_folder(out) as staging:
        files = {}
        for recording in tqdm(recordings, desc="seld-oracle", unit="recording"):
            rows, active = predict(recording, channel_order, margin_db, percentile, per_second)
            name = f"{recording.stem}.csv"
            atomic_write_bytes(staging / "prediction" / name, format_frame_csv(rows).encode())
            reference = format_frame_csv(reference_rows(recording)).encode()
            atomic_write_bytes(staging / "reference" / name, reference)
            files[recording.identity] = {
                "frames": recording.frame_count,
                "active_frames": active,
                "reference_rows": len(recording.rows),
                "predicted_rows": len(rows),
            }
        record = {
            "kind": "natheear-seld-oracle",
            "dataset": source,
            "layout": layout,
            "classes": classes,
            "label_frames_1s": per_second,
            "dataset_digest": digest,
            "channel_order": channel_order,
            "margin_db": margin_db,
            "floor_percentile": percentile,
            "given": GIVEN,
            "inferred": INFERRED,
            "files": files,
        }
        text = json.dumps(record, indent=1) + "\n"
        atomic_write_bytes(staging / "oracle.json", text.encode())
    return record


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``seld-oracle`` subcommand."""
    parser = subparsers.add_parser(
        "seld-oracle",
        help="oracle SELD baseline: intensity direction per frame, classes from the reference",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "dataset",
        help="a DCASE SELD dataset folder (as `natheear-tasks seld`), or with --layout task a "
        "published-format SELD task folder",
    )
    parser.add_argument("out", help="new folder for prediction/, reference/ and oracle.json")
    parser.add_argument("--layout", required=True, choices=(*LAYOUTS, TASK_LAYOUT))
    parser.add_argument(
        "--channel-order",
        choices=CHANNEL_ORDERS,
        default="acn",
        help="FOA convention of the wavs (default acn: AmbiX; `natheear-tasks seld` prints "
        "what an event-list dataset's audio shows)",
    )
    parser.add_argument(
        "--margin-db",
        type=float,
        default=MARGIN_DB,
        help=f"activity: dB above the noise floor (default {MARGIN_DB:g})",
    )
    parser.add_argument(
        "--floor-percentile",
        type=float,
        default=FLOOR_PERCENTILE,
        help=f"the noise floor: this percentile of a file's frame energies "
        f"(default {FLOOR_PERCENTILE:g})",
    )
    parser.add_argument("--audio-dir", default=DEFAULT_AUDIO_DIR, help="wav folder in DATASET")
    parser.add_argument("--metadata-dir", default=DEFAULT_METADATA_DIR, help="CSV folder")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``seld-oracle``: exit 0 done, 2 bad input (every problem listed), 1 interrupted."""
    return run_command(lambda: _oracle(args), (TaskError,), ALL_OR_NOTHING)


def _oracle(args: argparse.Namespace) -> int:
    record = run_oracle(
        args.dataset,
        args.out,
        args.layout,
        args.channel_order,
        args.margin_db,
        args.floor_percentile,
        args.audio_dir,
        args.metadata_dir,
    )
    out = Path(args.out)
    frames = record["label_frames_1s"]
    print(
        f"{out}: oracle rows of {len(record['files'])} recording(s); score them with\n"
        f"  natheear-tasks seld-score --ref {out / 'reference'} --pred {out / 'prediction'} "
        f"--num-classes {len(record['classes'])}"
        + (f" --label-frames-1s {frames}" if frames != 10 else "")
    )
    return 0

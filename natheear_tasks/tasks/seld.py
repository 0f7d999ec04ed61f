"""``natheear-tasks seld``: a DCASE SELD dataset as three HEAR tasks.

``OUT/<name>-events`` (event task), ``OUT/<name>-localization`` (single-source windows
labelled ``[x, y, z]``) and ``OUT/<name>-seld`` (chunks with frame-wise SELD labels); the
formats are in the README (natheear_tasks, SELD datasets) and in
:mod:`natheear_tasks.tasks.seld_plan`.

Data flow: read and check the whole dataset (:mod:`~natheear_tasks.tasks.seld_dataset`;
nothing is written on bad input) -> HEAR splits and each task's wavs and labels
(:mod:`~natheear_tasks.tasks.seld_plan`) -> the channel order (by the layout's
specification, ``--channel-order``, or told from the data:
:mod:`~natheear_tasks.tasks.channel_order`) -> per recording, in worker processes: read it,
convert it to AmbiX, resample it to every rate (:func:`natheear_tasks.simulation.noise.resample`,
polyphase), cut it into the tasks' wavs, then journal it -> each task's files, published
at once (:mod:`~natheear_tasks.tasks.publish`). A killed run resumes where it stopped; a
rerun gives the same bytes.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from natheear_tasks import locks
from natheear_tasks.ambisonics import CHANNEL_ORDERS, to_ambix
from natheear_tasks.atomic import write_bytes
from natheear_tasks.exits import RESUMABLE, folder_bytes, run_command, space_problem
from natheear_tasks.formats import published
from natheear_tasks.formats.dcase_frames import FRAME_SECONDS
from natheear_tasks.formats.wav import wav_bytes
from natheear_tasks.pool import run_jobs
from natheear_tasks.simulation.noise import resample
from natheear_tasks.tasks import localize
from natheear_tasks.tasks.channel_order import OrderCheck, check_order
from natheear_tasks.tasks.journal import Journal, read_journal
from natheear_tasks.tasks.publish import (
    OutputError,
    begin,
    check_output,
    partial_of,
    publish,
    published_description,
    remove_work_files,
)
from natheear_tasks.tasks.seld_dataset import (
    DEFAULT_AUDIO_DIR,
    DEFAULT_METADATA_DIR,
    LAYOUTS,
    PLAIN_NAME,
    Dataset,
    read_dataset,
)
from natheear_tasks.tasks.seld_plan import (
    Item,
    Splits,
    TaskPlan,
    assign_splits,
    event_task,
    localization_task,
    seld_format,
    seld_task,
)
from natheear_tasks.tasks.taskdir import (
    METADATA,
    VOCABULARY,
    TaskError,
    atomic_write_bytes,
    atomic_write_json,
)

TASKS = ("events", "localization", "seld")
FORMAT_VERSION = 1
DEFAULT_RATES = (48000,)
DEFAULT_EVENT_SECONDS = 30.0
DEFAULT_SEGMENT_SECONDS = 5.0
DEFAULT_LOCALIZATION_SECONDS = 1.0
DEFAULT_MAX_SPREAD = 10.0
MAX_SECONDS = 3600.0  # the longest piece any task may cut
MIN_RATE = 8000
SIDE_FILES = {"events": "pieces.jsonl", "localization": "segments.jsonl", "seld": "chunks.jsonl"}
EVENT_EVALUATION = ["event_onset_200ms_fms", "segment_1s_er"]
AMBIX = "AmbiX first-order Ambisonics (ACN W, Y, Z, X; SN3D)"
CONVERSIONS = {
    "acn": "none: read as AmbiX (ACN W, Y, Z, X; SN3D)",
    "fuma": "FuMa (W, X, Y, Z; W scaled by 1/sqrt(2)) to AmbiX: sqrt(2) W, Y, Z, X",
}


class SeldError(ValueError):
    """Options that do not fit together or do not fit the dataset."""


@dataclass
class Options:
    """What a conversion does (see ``natheear-tasks seld --help``)."""

    layout: str
    audio_dir: str = DEFAULT_AUDIO_DIR
    metadata_dir: str = DEFAULT_METADATA_DIR
    classes: list[str] | None = None
    fold_splits: list[str] | None = None
    channel_order: str | None = None
    sample_rates: tuple[int, ...] = DEFAULT_RATES
    event_seconds: float = DEFAULT_EVENT_SECONDS
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS
    localization_seconds: float = DEFAULT_LOCALIZATION_SECONDS
    max_spread: float = DEFAULT_MAX_SPREAD
    tasks: tuple[str, ...] = TASKS
    name: str | None = None
    workers: int = 1


@dataclass
class OutputTask:
    """One task to write: where, its plan and its task files' contents."""

    kind: str
    final: Path
    plan: TaskPlan
    metadata: dict
    vocabulary: str

    @property
    def partial(self) -> Path:
        return partial_of(self.final)

    @property
    def description(self) -> dict:
        return self.metadata["natheear"]


@dataclass
class Job:
    """A validated conversion, ready to run."""

    name: str  # the tasks' NAME (NAME-events, NAME-localization, NAME-seld)
    dataset: Dataset
    options: Options
    splits: Splits
    order: str
    check: OrderCheck
    tasks: list[OutputTask]
    notes: list[str]


@dataclass
class Summary:
    """What a run did."""

    converted: int = 0  # recordings read in this run
    skipped: int = 0  # recordings every task already had
    audio_seconds: float = 0.0  # of the recordings read in this run
    wall_seconds: float = 0.0
    clipped: int = 0  # output samples past full scale (PCM), clipped, over the whole tasks
    notes: list[str] = field(default_factory=list)


def _frames_multiple(seconds: float) -> bool:
    return (
        math.isfinite(seconds)
        and 0 < seconds <= MAX_SECONDS
        and abs(seconds * 10 - round(seconds * 10)) < 1e-9
    )


def _bytes_per_sample(dataset: Dataset, order: str) -> int:
    """Bytes per output sample: the dataset's subtype (FuMa input is written as FLOAT)."""
    if order == "fuma":
        return 4
    subtypes = {r.subtype for r in dataset.recordings}
    return 2 if subtypes == {"PCM_16"} else 4


def _check_options(options: Options) -> None:
    problems = []
    if options.layout not in LAYOUTS:
        problems.append(f"--layout must be one of {list(LAYOUTS)}, got {options.layout!r}")
    if options.channel_order not in (None, *CHANNEL_ORDERS):
        problems.append(f"--channel-order must be one of {list(CHANNEL_ORDERS)}")
    rates = options.sample_rates
    if (
        not rates
        or any(int(r) != r or r < MIN_RATE for r in rates)
        or len(set(rates)) != len(rates)
    ):
        problems.append(f"--sample-rates must be distinct integer rates >= {MIN_RATE} Hz")
    for flag, value in (
        ("--event-seconds", options.event_seconds),
        ("--segment-seconds", options.segment_seconds),
        ("--localization-seconds", options.localization_seconds),
    ):
        if not _frames_multiple(value):
            problems.append(
                f"{flag} must be a multiple of 0.1 s (100-ms frames) in (0, {MAX_SECONDS:g}], "
                f"got {value}"
            )
    if not options.max_spread >= 0:
        problems.append(f"--max-spread must be >= 0 degrees, got {options.max_spread}")
    if not options.tasks or any(t not in TASKS for t in options.tasks):
        problems.append(f"--tasks must name some of {list(TASKS)}")
    if options.name is not None and not PLAIN_NAME.match(options.name):
        problems.append(f"--name {options.name!r} must be letters, digits and . _ -")
    if options.workers < 1:
        problems.append(f"--workers must be at least 1, got {options.workers}")
    if problems:
        raise SeldError("; ".join(problems))


def _decide_order(options: Options, dataset: Dataset, check: OrderCheck) -> tuple[str, str]:
    """The channel order to read and what decided it."""
    if options.channel_order:
        return options.channel_order, "--channel-order"
    if dataset.layout == "frames":
        if check.agreeing == ["fuma"]:
            raise SeldError(
                "frame-list datasets are AmbiX (ACN) by specification, but the audio reads as "
                f"FuMa ({check.describe()}); pass --channel-order fuma if the files are FuMa, "
                "or --channel-order acn to read them as AmbiX anyway"
            )
        return "acn", "the frame-list layout's specification (AmbiX)"
    if len(check.agreeing) != 1:
        which = "both orders agree" if check.agreeing else "neither order agrees"
        raise SeldError(
            f"cannot tell the FOA channel order from the data ({which}: {check.describe()}); "
            "pass --channel-order acn or --channel-order fuma (the dataset's README says which)"
        )
    return check.agreeing[0], "the data (intensity direction against the labels)"


def _description(job_parts: dict, kind: str) -> dict:
    return json.loads(json.dumps({**job_parts, "task": kind}))


def _metadata(kind: str, name: str, options: Options, dataset: Dataset, splits: Splits) -> dict:
    common = {
        "task_name": name,
        "version": f"natheear-seld-{FORMAT_VERSION}",
        "mode": "full",
        "split_mode": splits.mode,
        "splits": splits.names,
    }
    if kind == "events":
        return {
            **common,
            "embedding_type": "event",
            "prediction_type": "multilabel",
            "sample_duration": options.event_seconds,
            "evaluation": EVENT_EVALUATION,
            # sed_eval scoring is slow: validate every 10 epochs, as heareval's DCASE tasks
            "evaluation_params": {"task_specific_param_grid": {"check_val_every_n_epoch": [10]}},
        }
    if kind == "localization":
        return {
            **common,
            "embedding_type": "scene",
            "prediction_type": localize.PREDICTION_TYPE,
            "sample_duration": options.localization_seconds,
            "evaluation": localize.EVALUATION,
        }
    fmt = seld_format(dataset)
    return {
        **common,
        "embedding_type": "event",
        "prediction_type": published.ACCDOA,
        "sample_duration": options.segment_seconds,
        "evaluation": published.SELD_EVALUATION,
        "scoring_params": {"doa_threshold": fmt.doa_threshold, "average": fmt.average},
        "source_dynamics": "dynamic" if fmt.dynamic else "static",
        "_nb_label_frames_1s": fmt.frames_per_second,
    }


def prepare(source: str | Path, out: str | Path, options: Options) -> Job:
    """Validate everything a conversion needs; writes nothing.

    Raises:
        TaskError: the dataset's problems (every one), or splits that cannot be made.
        SeldError: options that do not fit; a channel order the data cannot tell.
        OutputError: output folders that hold something else.
    """
    _check_options(options)
    dataset = read_dataset(
        source, options.layout, options.audio_dir, options.metadata_dir, options.classes
    )
    name = options.name or dataset.path.resolve().name.lower()
    if not PLAIN_NAME.match(name):
        raise SeldError(f"the dataset folder's name {name!r} is no plain task name; pass --name")
    longest = math.ceil(max(r.seconds for r in dataset.recordings) * 10 - 1e-9) / 10
    padded = [
        f"{flag} {value:g} is longer than the longest recording ({longest:g} s) and than the "
        f"default ({default:g} s): every piece would be mostly silence; use at most "
        f"{max(longest, default):g}"
        for flag, value, default, kind in (
            ("--event-seconds", options.event_seconds, DEFAULT_EVENT_SECONDS, "events"),
            ("--segment-seconds", options.segment_seconds, DEFAULT_SEGMENT_SECONDS, "seld"),
        )
        if kind in options.tasks and value > max(longest, default)
    ]
    if padded:
        raise SeldError("; ".join(padded))
    splits = assign_splits(dataset, options.fold_splits)
    plans = {
        "events": event_task(dataset, splits, options.event_seconds),
        "localization": localization_task(
            dataset, splits, options.localization_seconds, options.max_spread
        ),
        "seld": seld_task(dataset, splits, options.segment_seconds),
    }
    empty = [
        f"{name}-{kind}: split {split!r} gets no files"
        for kind in options.tasks
        for split in splits.names
        if not plans[kind].labels.get(split)
    ]
    if empty:
        hint = "(localization: shorter --localization-seconds or a larger --max-spread find more)"
        raise TaskError(
            dataset.path, [*empty, hint] if any("localization" in e for e in empty) else empty
        )
    check = check_order(dataset, plans["localization"])
    order, decided = _decide_order(options, dataset, check)
    parts = {
        "version": FORMAT_VERSION,
        "kind": "seld",
        "dataset": {
            "name": name,
            "folder": dataset.path.resolve().name,
            "layout": dataset.layout,
            "audio_dir": dataset.audio_dir,
            "metadata_dir": dataset.metadata_dir,
            "recordings": len(dataset.recordings),
            "sample_rate": dataset.sample_rate,
            "classes": list(dataset.classes),
            "classes_given": dataset.classes_given,
            "distance_column": dataset.has_distance,
            "labels_sha256": dataset.digest(),
        },
        "channel_order": {"read": order, "decided_by": decided, "check": check.record()},
        "conversion": CONVERSIONS[order],
        "output": AMBIX,
        "sample_rates": sorted(options.sample_rates),
        "resampler": "scipy.signal.resample_poly (natheear_tasks.simulation.noise.resample)",
        "splits": splits.describe(),
        "frame_seconds": FRAME_SECONDS,
        "event_seconds": options.event_seconds,
        "segment_seconds": options.segment_seconds,
        "localization_seconds": options.localization_seconds,
        "max_spread_deg": options.max_spread,
        "event_frames": "an event labels every 100-ms frame it overlaps"
        if dataset.layout == "events"
        else "frame-list rows as given; events are runs of consecutive frames of a track",
    }
    vocabulary = "idx,label\n" + "".join(f"{i},{c}\n" for i, c in enumerate(dataset.classes))
    tasks = []
    for kind in TASKS:
        if kind not in options.tasks:
            continue
        final = Path(out) / f"{name}-{kind}"
        metadata = _metadata(kind, final.name, options, dataset, splits)
        metadata["natheear"] = _description(parts, kind)
        words = localize.VOCABULARY if kind == "localization" else vocabulary
        task = OutputTask(kind, final, plans[kind], metadata, words)
        check_output(task.final, task.description)
        tasks.append(task)
    seconds = sum(item.seconds for task in tasks for item in task.plan.items)
    needed = seconds * sum(options.sample_rates) * 4 * _bytes_per_sample(dataset, order)
    already = sum(folder_bytes(task.partial) for task in tasks)
    room = space_problem(Path(out), int(needed), already)
    if room:
        raise SeldError(room)
    notes = [f"channel order: {order}, decided by {decided}; {check.describe()}"]
    if splits.left_out:
        notes.append(f"{len(splits.left_out)} recordings are in no split (--fold-splits): left out")
    for kind in options.tasks:
        notes += plans[kind].notes
    return Job(name, dataset, options, splits, order, check, tasks, notes)


# --- per-recording work (runs in worker processes) ---------------------------------------

_WORKER: dict = {}


@dataclass(frozen=True)
class RecordingWork:
    """What a worker does with one recording: the wavs of each unfinished task."""

    identity: str
    wav: Path
    sample_rate: int
    order: str
    subtype: str  # of the output wavs
    rates: tuple[int, ...]
    outputs: tuple[tuple[Path, tuple[Item, ...]], ...]  # (.partial folder, its wavs)


def _start_worker() -> None:
    _stop_worker()
    _WORKER["journals"] = {}


def _stop_worker() -> None:
    for journal in _WORKER.get("journals", {}).values():
        journal.close()
    _WORKER.clear()


def _convert(work: RecordingWork) -> tuple[float, int]:
    """Write a recording's wavs in every task, then journal it there; returns its seconds
    and the samples clipped."""
    audio, _ = sf.read(str(work.wav), dtype="float32", always_2d=True)
    ambix = to_ambix(torch.from_numpy(np.ascontiguousarray(audio.T)), work.order).numpy()
    clipped = {folder: 0 for folder, _ in work.outputs}
    for rate in work.rates:
        # channel by channel: a long recording's float64 intermediate stays one channel
        signal = np.stack([resample(channel, work.sample_rate, rate) for channel in ambix])
        for folder, items in work.outputs:
            for item in items:
                start, length = round(item.start * rate), round(item.seconds * rate)
                piece = signal[:, start : start + length]
                piece = np.pad(piece, ((0, 0), (0, length - piece.shape[1])))
                if work.subtype.startswith("PCM"):
                    clipped[folder] += int(np.count_nonzero(np.abs(piece) > 1.0))
                path = folder / str(rate) / item.split / item.file
                write_bytes(path, wav_bytes(piece.T, rate, work.subtype))
    journals = _WORKER["journals"]
    for folder, _ in work.outputs:
        if folder not in journals:
            journals[folder] = Journal(folder)
        journals[folder].append({"recording": work.identity, "clipped": clipped[folder]})
    return ambix.shape[1] / work.sample_rate, sum(clipped.values())


# --- the run -----------------------------------------------------------------------------


def _kept(job: Job) -> list:
    return [r for r in job.dataset.recordings if r.identity in job.splits.of]


def run(job: Job) -> Summary:
    """Convert the recordings the unfinished tasks still need; publish every task."""
    started = time.time()
    summary = Summary(notes=list(job.notes))
    building = []
    for task in job.tasks:
        if task.final.exists():
            if remove_work_files(task.final):
                summary.notes.append(f"removed work files a killed run left in {task.final}")
            continue
        if published_description(task.partial) != task.description:
            begin(task.final, task.description)
            building.append(task)
    done = {task.kind: {r["recording"] for r in read_journal(task.partial)} for task in building}
    items: dict[str, dict[str, list[Item]]] = {}
    for task in building:
        for item in task.plan.items:
            items.setdefault(task.kind, {}).setdefault(item.recording, []).append(item)
        for rate in job.options.sample_rates:
            for split in job.splits.names:
                (task.partial / str(rate) / split).mkdir(parents=True, exist_ok=True)
    works = []
    for recording in _kept(job):
        outputs = tuple(
            (task.partial, tuple(items.get(task.kind, {}).get(recording.identity, [])))
            for task in building
            if recording.identity not in done[task.kind]
        )
        if not outputs:
            summary.skipped += 1
            continue
        subtype = recording.subtype if job.order == "acn" else "FLOAT"
        works.append(
            RecordingWork(
                recording.identity,
                recording.wav,
                recording.sample_rate,
                job.order,
                subtype,
                tuple(sorted(job.options.sample_rates)),
                outputs,
            )
        )
    name = job.tasks[0].final.name.rsplit("-", 1)[0] if job.tasks else "seld"
    try:
        for seconds, _ in run_jobs(
            _convert,
            works,
            job.options.workers,
            initializer=_start_worker,
            desc=name,
            unit="recording",
        ):
            summary.converted += 1
            summary.audio_seconds += seconds
    finally:
        _stop_worker()  # this process's journals, when it converted the recordings itself
    kept = {r.identity for r in _kept(job)}
    for task in job.tasks:
        if task.final.exists():
            continue
        if published_description(task.partial) != task.description:
            records = {r["recording"]: r for r in read_journal(task.partial)}
            missing = kept - set(records)
            if missing:
                raise RuntimeError(f"{task.partial}: {len(missing)} recordings not converted")
            clipped = sum(records[r]["clipped"] for r in kept)
            if clipped:
                summary.clipped += clipped
                summary.notes.append(
                    f"{task.final.name}: {clipped} samples past full scale were clipped "
                    "(resampling overshoot or a FuMa W scaled by sqrt(2) in PCM files)"
                )
            _write_task_files(task, job.splits)
        publish(task.final)
    summary.wall_seconds = time.time() - started
    return summary


def _write_task_files(task: OutputTask, splits: Splits) -> None:
    """Split files, vocabulary, side file, then the metadata (last: it marks them written)."""
    partial = task.partial
    for split in splits.names:
        atomic_write_json(partial / f"{split}.json", task.plan.labels.get(split, {}))
    atomic_write_bytes(partial / VOCABULARY, task.vocabulary.encode())
    lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in task.plan.records)
    atomic_write_bytes(partial / SIDE_FILES[task.kind], lines.encode())
    atomic_write_json(partial / METADATA, task.metadata, indent=2)


def _positive_rate(text: str) -> int:
    value = int(text)
    if value < MIN_RATE:
        raise argparse.ArgumentTypeError(f"must be an integer rate >= {MIN_RATE} Hz, got {text}")
    return value


def _classes(text: str) -> list[str]:
    """``a,b,c`` or ``@FILE`` (one name a line)."""
    if text.startswith("@"):
        try:
            lines = Path(text[1:]).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise argparse.ArgumentTypeError(f"cannot read {text[1:]}: {error}") from None
        return [line.strip() for line in lines if line.strip()]
    return text.split(",")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``seld`` subcommand."""
    parser = subparsers.add_parser(
        "seld",
        help="a DCASE SELD dataset (STARSS23, TAU-NIGENS, TAU 2019, TUT 2018) as HEAR tasks",
        description="Convert a first-order Ambisonics SELD dataset into three HEAR tasks in "
        "OUT: NAME-events (event task), NAME-localization (single-source windows labelled "
        "[x, y, z]) and NAME-seld (chunks with 100-ms SELD labels); AmbiX wavs at each "
        "--sample-rates rate. The whole dataset is checked first (nothing is written on bad "
        "input); a killed run resumes when rerun with the same options.",
    )
    parser.add_argument("source", help="dataset folder (holding foa_dev/ and metadata_dev/)")
    parser.add_argument("out", help="folder of output tasks")
    parser.add_argument(
        "--layout",
        required=True,
        choices=LAYOUTS,
        help="frames: frame-list CSVs (TAU-NIGENS 2020/2021, STARSS22/23); events: event-list "
        "CSVs with a header (TUT 2018, TAU 2019)",
    )
    parser.add_argument("--audio-dir", default=DEFAULT_AUDIO_DIR, help="wav folder in SOURCE")
    parser.add_argument("--metadata-dir", default=DEFAULT_METADATA_DIR, help="CSV folder in SOURCE")
    parser.add_argument(
        "--classes",
        type=_classes,
        metavar="A,B,...|@FILE",
        help="class names in index order (default: class0, class1... for frame lists; the "
        "sorted names found for event lists)",
    )
    parser.add_argument(
        "--fold-splits",
        nargs="+",
        metavar="SPEC",
        help="kfold, or train=SEL[,SEL] valid=SEL[,SEL]|N%% test=SEL[,SEL] with folds "
        "(fold3, split1) or subset folders (dev-test-sony); default: subsets named "
        "train/val/test (valid 20%% of train if there is no val subset), else each fold "
        "a fold",
    )
    parser.add_argument(
        "--channel-order",
        choices=CHANNEL_ORDERS,
        help="FOA convention of the wavs (default: acn for frame lists, by specification; "
        "told from the data for event lists)",
    )
    parser.add_argument(
        "--sample-rates",
        type=_positive_rate,
        nargs="+",
        default=list(DEFAULT_RATES),
        metavar="HZ",
        help="output rates (default 48000, hear_gram's default)",
    )
    parser.add_argument(
        "--event-seconds",
        type=float,
        default=DEFAULT_EVENT_SECONDS,
        help="event-task piece length (default 30)",
    )
    parser.add_argument(
        "--segment-seconds",
        type=float,
        default=DEFAULT_SEGMENT_SECONDS,
        help="SELD-task chunk length (default 5)",
    )
    parser.add_argument(
        "--localization-seconds",
        type=float,
        default=DEFAULT_LOCALIZATION_SECONDS,
        help="localization window length (default 1)",
    )
    parser.add_argument(
        "--max-spread",
        type=float,
        default=DEFAULT_MAX_SPREAD,
        metavar="DEG",
        help="leave out localization windows of a moving source whose directions spread "
        "further than this from their mean (default 10)",
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        choices=TASKS,
        default=list(TASKS),
        help="tasks to write (default all)",
    )
    parser.add_argument("--name", help="dataset name in the task names (default: SOURCE's name)")
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    parser.set_defaults(handler=main)
    return parser


def main(args: argparse.Namespace) -> int:
    """Run ``seld``: exit 0 done, 2 bad input or options, 1 interrupted or failed."""
    options = Options(
        layout=args.layout,
        audio_dir=args.audio_dir,
        metadata_dir=args.metadata_dir,
        classes=args.classes,
        fold_splits=args.fold_splits,
        channel_order=args.channel_order,
        sample_rates=tuple(args.sample_rates),
        event_seconds=args.event_seconds,
        segment_seconds=args.segment_seconds,
        localization_seconds=args.localization_seconds,
        max_spread=args.max_spread,
        tasks=tuple(t for t in TASKS if t in args.tasks),
        name=args.name,
        workers=args.workers,
    )
    errors = (TaskError, SeldError, OutputError)
    return run_command(lambda: _convert_dataset(args.source, args.out, options), errors, RESUMABLE)


def _convert_dataset(source: str, out: str, options: Options) -> int:
    job = prepare(source, out, options)
    lock = Path(out) / f".{job.name}-seld.lock"
    with locks.hold(lock, f"{out} ({job.name} tasks)", remove=True):
        summary = run(job)
    for note in summary.notes:
        print(note)
    rates = len(options.sample_rates)
    for task in job.tasks:
        files = len(task.plan.items)
        print(f"{task.final}: {files} files x {rates} rate(s)")
    print(
        f"{len(job.dataset.recordings)} recordings: {summary.converted} converted "
        f"({summary.audio_seconds / 60:.1f} min of audio), {summary.skipped} already done, in "
        f"{summary.wall_seconds:.1f} s"
    )
    return 0

"""natheear-tasks: HEAR tasks to naturalistic binaural / Ambisonics tasks and localization
tasks, RIR banks, previews.

    natheear-tasks convert  SRC OUT --format binaural|ambisonics [--workers N] [--rirs BANK]
                            [--noise DIR] [--hrtf FILE.sofa] [--seed S]
                            [--num-shards N --shard-index I]
    natheear-tasks localize SRC OUT --format ... (same options)
    natheear-tasks rirs     OUT --format ... --count N [--sample-rate HZ] [--workers N]
    natheear-tasks preview  WAV --out X.png
    natheear-tasks synth    OUT [--tasks ...] [--scale F]     (synthetic HEAR tasks)
    natheear-tasks seld     SRC OUT --layout frames|events [--fold-splits ...]
                            [--channel-order acn|fuma] [--sample-rates HZ ...]
                            [--segment-seconds S]              (DCASE SELD datasets)
    natheear-tasks seld-synth OUT --layout frames|events [--files N] [--seed S]
    natheear-tasks evaluate --module M --model CKPT --tasks-dir DIR --out RESULTS
    natheear-tasks seld-score --ref DIR --pred DIR [--json FILE] [--num-classes N]
    natheear-tasks seld-oracle DATASET OUT --layout frames|events   (oracle SELD baseline)
    natheear-tasks demo     --out work/demo                   (the README's main job)

Exit codes: 0 done, 1 failure, 2 bad input or usage, 130 interrupted (Ctrl-C),
143 stopped (SIGTERM).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

from natheear_tasks import children, locks
from natheear_tasks.baselines import seld_oracle
from natheear_tasks.demo import job as demo
from natheear_tasks.demo import synth
from natheear_tasks.evaluation import evaluate, seld_score
from natheear_tasks.exits import RESUMABLE, run_command
from natheear_tasks.simulation import recordings
from natheear_tasks.simulation.hrtf import KEMAR, SPHERICAL_HEAD, HrtfError, load_hrtf
from natheear_tasks.simulation.noise import NoiseError
from natheear_tasks.simulation.rirbank import FORMATS, RirBankError
from natheear_tasks.tasks import seld
from natheear_tasks.tasks.convert import OptionError, Options, prepare, run
from natheear_tasks.tasks.publish import OutputError
from natheear_tasks.tasks.taskdir import TaskError

INPUT_ERRORS = (
    TaskError,
    RirBankError,
    NoiseError,
    HrtfError,
    OptionError,
    OutputError,
    FileExistsError,
)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _add_scene_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="HEAR task directory (task_metadata.json, <rate>/<split>/)")
    parser.add_argument("out", help="folder of output tasks (the task goes to OUT/<name>)")
    parser.add_argument("--format", required=True, choices=sorted(FORMATS))
    parser.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="processes (default 1), each with a mixing and an I/O thread",
    )
    parser.add_argument(
        "--rirs",
        metavar="BANK",
        help="RIR bank: a natheear bank (natheear-tasks rirs) or a GRAM-release folder of .npy "
        "scenes; default: simulate one (cached under $NATHEEAR_CACHE or ~/.cache/natheear_tasks)",
    )
    parser.add_argument(
        "--noise", metavar="DIR", help="folder of noise recordings (default: synthesized noise)"
    )
    parser.add_argument(
        "--hrtf",
        default=KEMAR,
        metavar="FILE.sofa",
        help=f"HRTF for simulated binaural RIRs: a SOFA file, {KEMAR!r} (default: MIT KEMAR "
        f"from the slab package) or {SPHERICAL_HEAD!r} (closed-form head, no pinna)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--sample-rates",
        type=_positive,
        nargs="+",
        metavar="HZ",
        help="convert only these rates (default: every rate the task has)",
    )
    parser.add_argument(
        "--bank-size",
        type=_positive,
        help="scenes in a simulated RIR bank (default: min(1000, files in the task))",
    )
    parser.add_argument("--name", help="output task name (default: SRC's name + -FORMAT)")
    parser.add_argument("--num-shards", type=_positive, default=1, help="split the files N ways")
    parser.add_argument(
        "--shard-index", type=int, default=0, help="which shard this run converts (0-based)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``natheear-tasks`` parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="natheear-tasks", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser(
        "convert",
        help="a HEAR task as a naturalistic binaural or Ambisonics task",
        description="Render every clip of a HEAR task in a simulated room (source RIR, "
        "localized or diffuse noise at 5-40 dB SNR); labels, splits, rates and lengths kept.",
    )
    _add_scene_options(convert)
    localize = commands.add_parser(
        "localize",
        help="a scene task as a localization task (label: source direction [x, y, z])",
        description="Like convert, with each clip's label replaced by the unit vector of its "
        "source direction in the listener frame (x forward, y left, z up).",
    )
    _add_scene_options(localize)
    rirs = commands.add_parser(
        "rirs",
        help="simulate a reusable RIR bank",
        description="Simulate COUNT random scenes (room, listener, source, noise sources) "
        "into an RIR bank folder; resumes an unfinished one.",
    )
    rirs.add_argument("out", help="bank folder to create")
    rirs.add_argument("--format", required=True, choices=sorted(FORMATS))
    rirs.add_argument("--count", type=_positive, required=True, help="number of scenes")
    rirs.add_argument("--sample-rate", type=_positive, default=48000, help="Hz (default 48000)")
    rirs.add_argument("--workers", type=_positive, default=1)
    rirs.add_argument("--seed", type=int, default=0)
    rirs.add_argument("--hrtf", default=KEMAR, metavar="FILE.sofa", help="as for convert")
    preview = commands.add_parser(
        "preview",
        help="a PNG of one clip: log-mels, and the intensity direction for Ambisonics",
        description="Plot each channel's log-mel spectrogram; for 4-channel (AmbiX) clips also "
        "the azimuth and elevation of the active intensity over time, for 2-channel clips the "
        "interaural level difference. The true direction is drawn when the clip belongs to a "
        "converted task.",
    )
    preview.add_argument("wav")
    preview.add_argument("--out", required=True, help="PNG file to write")
    for module in (synth, seld, recordings, evaluate, seld_score, seld_oracle, demo):
        module.add_parser(commands)  # each sets its own handler
    return parser


def _convert(args: argparse.Namespace, localization: bool) -> int:
    options = Options(
        format=args.format,
        seed=args.seed,
        workers=args.workers,
        rirs=args.rirs,
        noise=args.noise,
        hrtf=args.hrtf,
        sample_rates=args.sample_rates,
        num_shards=args.num_shards,
        shard_index=args.shard_index,
        bank_size=args.bank_size,
        name=args.name,
        localization=localization,
    )
    job = prepare(args.source, args.out, options)
    shard = f".shard-{args.shard_index}-of-{args.num_shards}" if args.num_shards > 1 else ""
    with locks.hold(job.out / f".{job.final.name}{shard}.lock", str(job.final), remove=True):
        summary = run(job)
    for note in summary.notes:
        print(note)
    print(
        f"{summary.task}: converted {summary.files} files ({summary.audio_seconds / 60:.1f} "
        f"min of audio per rate, {len(job.task.rates)} rate(s)), {summary.skipped} already "
        f"done, in {summary.wall_seconds:.1f} s; RIR bank {summary.bank}"
        + ("" if summary.complete else " (task not complete yet)")
    )
    return 0


def _rirs(args: argparse.Namespace) -> int:
    from natheear_tasks.simulation.rirs import build_bank

    started = time.time()
    hrtf = load_hrtf(args.hrtf) if args.format == "binaural" else None
    bank = build_bank(
        args.out, args.format, args.sample_rate, args.count, args.seed, hrtf, workers=args.workers
    )
    print(
        f"{bank.path}: {len(bank)} {bank.format} scenes at {bank.sample_rate} Hz in "
        f"{time.time() - started:.1f} s"
    )
    return 0


def _preview(args: argparse.Namespace) -> int:
    from natheear_tasks.tasks.preview import PreviewError, write_preview

    try:
        write_preview(Path(args.wav), Path(args.out))
    except PreviewError as error:
        raise OptionError(str(error)) from error
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one ``natheear-tasks`` subcommand; returns its exit code."""
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        children.handle_termination()
    if hasattr(args, "handler"):
        return args.handler(args)
    commands = {
        "convert": lambda: _convert(args, localization=False),
        "localize": lambda: _convert(args, localization=True),
        "rirs": lambda: _rirs(args),
        "preview": lambda: _preview(args),
    }
    return run_command(commands[args.command], INPUT_ERRORS, RESUMABLE)


if __name__ == "__main__":
    sys.exit(main())

"""Cost of natheear-tasks' source-task validation (not a test; prints its figures).

``read_task`` (run by every conversion before any work) reads each wav's header; FLOAT and
DOUBLE wavs are also read in full, so that a NaN or infinite sample is a listed problem.
This times the validation of one task written as PCM_16 and as FLOAT (the best of
``--repeats`` runs, page cache warm: the files were just written), in seconds and in
seconds per hour of audio.

    python bench/natheear_validation.py [--clips 192] [--seconds 5] [--rate 48000]
                                        [--repeats 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from source_tasks import write_task  # noqa: E402

from natheear_tasks.tasks.taskdir import read_task  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=192, help="clips per task")
    parser.add_argument("--seconds", type=float, default=5.0, help="clip length")
    parser.add_argument("--rate", type=int, default=48000, help="sample rate (Hz)")
    parser.add_argument("--repeats", type=int, default=3, help="validations per task")
    parser.add_argument("--work", help="folder for the temporary tasks (default: system temp)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="natheear-bench-", dir=args.work))
    try:
        per_split = args.clips // 3
        hours = 3 * per_split * args.seconds / 3600
        print(f"{3 * per_split} clips of {args.seconds:g} s at {args.rate} Hz ({hours:.2f} h)")
        print(f"{'subtype':<8}{'MB':>8}{'validation s':>14}{'s per hour of audio':>21}")
        for subtype in ("PCM_16", "FLOAT"):
            src = write_task(
                work / subtype, files_per_split=per_split, rates=(args.rate,),
                seconds=args.seconds, subtype=subtype,
            )  # fmt: skip
            size = sum(p.stat().st_size for p in src.rglob("*.wav")) / 1e6
            best = float("inf")
            for _ in range(args.repeats):
                start = time.perf_counter()
                read_task(src)
                best = min(best, time.perf_counter() - start)
            print(f"{subtype:<8}{size:>8.1f}{best:>14.3f}{best / hours:>21.3f}")
            shutil.rmtree(src)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Conversion throughput of ``natheear-tasks seld`` (not a test; prints its figures).

A frame-list dataset of ``--recordings`` copies of one simulated recording (``--seconds``
long, 24 kHz like STARSS23 and TAU-NIGENS, in dev-train / dev-val / dev-test), converted
to the three tasks at each ``--rates`` output rate with 1 and 2 workers, in seconds of
dataset audio per wall second:
  * ``prepare``: reading and checking every wav header and CSV, the splits and plans, and
    the channel-order check (which reads up to 200 single-source windows);
  * ``run``: reading, resampling, cutting and writing every wav, then the task files;
  * ``cpu``: the run's CPU time over its wall time (all processes);
and the peak resident memory of this process, which makes the dataset in a child process
and converts in process with one worker (so the figure is the converter's, imports
included).

    python bench/seld_throughput.py [--recordings 12] [--seconds 60] [--rates 24000 48000]
                                    [--work DIR]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from natheear_tasks.simulation.recordings import Settings, write_dataset  # noqa: E402
from natheear_tasks.tasks import seld  # noqa: E402


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _dataset(work: Path, recordings: int, seconds: float) -> Path:
    """``recordings`` copies of one simulated recording, folds 1-3 in three subsets."""
    simulated = write_dataset(work / "one", Settings("frames", files=1, seconds=seconds))
    wav = next((simulated / "foa_dev").rglob("*.wav"))
    csv = next((simulated / "metadata_dev").rglob("*.csv"))
    root = work / "dataset"
    for i in range(recordings):
        fold = i % 3 + 1
        subset = {1: "dev-train", 2: "dev-val", 3: "dev-test"}[fold]
        stem = f"fold{fold}_room{i}_mix001"
        for folder, source, suffix in (("foa_dev", wav, ".wav"), ("metadata_dev", csv, ".csv")):
            target = root / folder / subset / f"{stem}{suffix}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recordings", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rates", type=int, nargs="+", default=[24000, 48000])
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    work = Path(tempfile.mkdtemp(prefix="seld-bench-", dir=args.work))
    try:
        started = time.time()
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            source = pool.submit(_dataset, work, max(3, args.recordings), args.seconds).result()
        audio = max(3, args.recordings) * args.seconds
        print(
            f"dataset: {max(3, args.recordings)} recordings x {args.seconds:.0f} s at 24 kHz "
            f"(simulated and copied in {time.time() - started:.1f} s)"
        )
        print("rate   workers  prepare   run      run x realtime  cpu")
        for rate in args.rates:
            for workers in (1, 2):
                out = work / f"out-{rate}-{workers}"
                options = seld.Options(layout="frames", sample_rates=(rate,), workers=workers)
                t0 = time.time()
                job = seld.prepare(source, out, options)
                t1, cpu = time.time(), _cpu()
                seld.run(job)
                t2 = time.time()
                print(
                    f"{rate:<6} {workers:<8} {t1 - t0:6.2f} s  {t2 - t1:6.2f} s  "
                    f"{audio / (t2 - t1):8.0f}x       {(_cpu() - cpu) / (t2 - t1):.2f}"
                )
                shutil.rmtree(out)
                if workers == 1:
                    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"peak RSS of this process converting with 1 worker: {peak:.0f} MiB "
            f"({imports:.0f} MiB after its imports)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Conversion throughput of natheear-tasks (not a test; prints its figures).

For binaural and Ambisonics at 16 kHz and 48 kHz, with a warm RIR bank (simulated before
timing), in seconds of audio converted per wall second:
  * the converter end to end (``prepare`` + ``run``: validation, reading, noise synthesis,
    mixing, level matching, writing the wavs and the task files), with 1 and 2 workers;
    each worker runs two threads (it mixes; an I/O thread reads, synthesizes the noise,
    level-matches and writes), so one worker can keep two cores busy: the ``cpu`` column is
    the converter's CPU time over its wall time (all its threads and processes);
  * the FFT-convolution ceiling measured in the same run: the same clips through the same
    convolutions (source clip with its source RIR, noise with the summed noise RIRs, via
    ``natheear_tasks.simulation.mix.fft_convolve``) on data already in memory, one thread per
    worker,
    with perfect scaling across workers assumed;
and their ratio.

    python bench/natheear_throughput.py [--clips 192] [--seconds 5] [--bank-scenes 12]
                                        [--work DIR]

Output wavs go to ``--work`` (default: the system's temporary folder): on a slow disk the
writes are a visible share of the converter's time. Two workers pay for starting two
Python processes (about 2-5 s here), which the default workload amortizes.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from source_tasks import write_task  # noqa: E402

from natheear_tasks.pool import run_jobs  # noqa: E402
from natheear_tasks.simulation.hrtf import load_kemar  # noqa: E402
from natheear_tasks.simulation.mix import fft_convolve  # noqa: E402
from natheear_tasks.simulation.noise import resample  # noqa: E402
from natheear_tasks.simulation.rirbank import RirBank  # noqa: E402
from natheear_tasks.simulation.rirs import build_bank  # noqa: E402
from natheear_tasks.tasks.convert import Options, plan, prepare, run  # noqa: E402
from natheear_tasks.tasks.taskdir import read_task  # noqa: E402


def convolution_ceiling(task_path: Path, bank: RirBank, rate: int, seed: int) -> float:
    """Seconds of one thread spent on the scene convolutions of every clip of the task."""
    task = read_task(task_path, [rate])
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    cache: dict[int, np.ndarray] = {}
    spent = 0.0
    for entry in task.files:
        index = plan(seed, entry.identity, len(bank))["bank_scene"]
        if index not in cache:
            cache[index] = resample(bank[index].rirs, bank.sample_rate, rate)
        rirs = torch.from_numpy(cache[index])
        frames = entry.audio[rate].frames
        signals = torch.from_numpy(rng.standard_normal((2, frames)).astype(np.float32))
        kernels = torch.stack([rirs[0], rirs[1:].sum(0)])
        start = time.perf_counter()
        fft_convolve(signals, kernels)
        spent += time.perf_counter() - start
    return spent


def cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes (pool workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _nothing(item: int) -> int:
    return item


def pool_startup(workers: int) -> float:
    """Seconds to start ``workers`` processes that import the converter (as a run does)."""
    start = time.perf_counter()
    for _ in run_jobs(_nothing, range(workers), workers, desc="starting workers"):
        pass
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=192, help="clips per task")
    parser.add_argument("--seconds", type=float, default=5.0, help="clip length")
    parser.add_argument("--bank-scenes", type=int, default=12)
    parser.add_argument("--work", help="folder for the temporary tasks (default: system temp)")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    work = Path(tempfile.mkdtemp(prefix="natheear-bench-", dir=args.work))
    try:
        per_split = args.clips // 3
        src = write_task(
            work / "src", "bench", files_per_split=per_split, rates=(16000, 48000),
            seconds=args.seconds,
        )  # fmt: skip
        audio = 3 * per_split * args.seconds
        print(
            f"{3 * per_split} clips of {args.seconds:g} s per rate; warm banks of "
            f"{args.bank_scenes} scenes at 48 kHz (simulated first, not timed)"
        )
        startup = pool_startup(2)
        print(
            f"starting 2 worker processes takes {startup:.1f} s, paid once per run with "
            "--workers 2 ('steady' leaves it out)"
        )
        print(
            f"{'format':<11}{'rate':>6}{'workers':>8}{'converter':>11}{'cpu':>6}{'steady':>9}"
            f"{'ceiling':>10}{'ratio':>7}   (seconds of audio per wall second)"
        )
        for fmt in ("binaural", "ambisonics"):
            hrtf = load_kemar() if fmt == "binaural" else None
            bank = build_bank(work / f"bank-{fmt}", fmt, 48000, args.bank_scenes, 0, hrtf)
            for rate in (16000, 48000):
                ceiling = audio / convolution_ceiling(src, bank, rate, 0)
                torch.set_num_threads(threads)
                for workers in (1, 2):
                    out = work / f"out-{fmt}-{rate}-{workers}"
                    options = Options(
                        format=fmt, rirs=str(bank.path), sample_rates=[rate], workers=workers
                    )
                    start, cpu = time.perf_counter(), cpu_seconds()
                    run(prepare(src, out, options))
                    wall = time.perf_counter() - start
                    cores = (cpu_seconds() - cpu) / wall
                    steady = audio / max(wall - (startup if workers > 1 else 0.0), 1e-3)
                    print(
                        f"{fmt:<11}{rate:>6}{workers:>8}{audio / wall:>10.0f}x{cores:>6.2f}"
                        f"{steady:>8.0f}x{ceiling * workers:>9.0f}x"
                        f"{steady / (ceiling * workers):>7.2f}"
                    )
                    shutil.rmtree(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

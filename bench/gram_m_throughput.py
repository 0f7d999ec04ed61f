"""GRAM-M against GRAM-T through the HEAR API, on this CPU, in one run (not a test).

Both at width 768 as in the paper, random weights: GRAM-T's 12 ViT-B blocks
(``hear_gram.gram_binaural``, ``gram_binaural_time``) against GRAM-M's 16 Mamba-2 blocks
(``hear_gram.gram_m_binaural``, ``gram_m_binaural_time``). For each pair it prints the
seconds of audio embedded per wall second (scene embeddings of 10-s stereo clips; the best
of ``--repeats`` runs, the two models measured in turn so that both see the same machine
state) and GRAM-M's time over GRAM-T's (target: at most 1.5). Then peak memory: one file of
each ``--minutes`` length embedded in a fresh process per model and length; the growth of
resident memory over the loaded model and the input audio must not grow with the length.

    python bench/gram_m_throughput.py [--clips 8] [--repeats 3] [--minutes 1 10]
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hear_gram.cpu import cpu_name  # noqa: E402

PAIRS = [
    ("hear_gram.gram_binaural", "hear_gram.gram_m_binaural"),
    ("hear_gram.gram_binaural_time", "hear_gram.gram_m_binaural_time"),
]


def resident_gib() -> tuple[float, float]:
    """Current and peak resident memory of this process (VmRSS, VmHWM), GiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 2**20
    return fields["VmRSS"], fields["VmHWM"]


def memory_child(module_name: str, minutes: float, sample_rate: int) -> None:
    """Embed one long stereo file; print the peak growth over model + input."""
    module = importlib.import_module(module_name)
    model = module.load_model("random", sample_rate=sample_rate)
    audio = torch.randn(1, int(minutes * 60 * sample_rate), 2) * 0.1
    base, _ = resident_gib()
    start = time.perf_counter()
    module.get_scene_embeddings(audio, model)
    took = time.perf_counter() - start
    _, peak = resident_gib()
    print(json.dumps({"base_gib": base, "growth_gib": peak - base, "seconds": took}))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=8, help="10-s stereo clips per batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--minutes", type=float, nargs="*", default=[1.0, 10.0])
    parser.add_argument("--sample-rate", type=int, default=48000)
    parser.add_argument("--_memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._memory_child:
        memory_child(args._memory_child[0], float(args._memory_child[1]), args.sample_rate)
        return

    sr = args.sample_rate
    audio = torch.randn(args.clips, 10 * sr, 2, generator=torch.Generator().manual_seed(0)) * 0.1
    seconds = args.clips * 10.0
    print(f"CPU {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{args.clips} x 10-s stereo clips at {sr} Hz, fp32, random weights, width 768")
    print(f"{'GRAM-T module':<30} {'s/s':>6} {'GRAM-M module':<32} {'s/s':>6} {'M/T time':>8}")
    for t_name, m_name in PAIRS:
        modules = [importlib.import_module(name) for name in (t_name, m_name)]
        models = [module.load_model("random", sample_rate=sr) for module in modules]
        best = [float("inf"), float("inf")]
        for i in range(args.repeats + 1):  # the first round warms up
            for k, (module, model) in enumerate(zip(modules, models, strict=True)):
                took = timed(lambda m=module, md=model: m.get_scene_embeddings(audio, md))
                best[k] = min(best[k], took) if i else best[k]
        print(
            f"{t_name:<30} {seconds / best[0]:6.2f} {m_name:<32} {seconds / best[1]:6.2f} "
            f"{best[1] / best[0]:8.2f}  (target <= 1.5)"
        )

    if args.minutes:
        print("peak memory, one stereo file, scene embedding, fresh process each:")
        for name in ("hear_gram.gram_binaural", "hear_gram.gram_m_binaural"):
            for minutes in args.minutes:
                child = subprocess.run(
                    [sys.executable, __file__, "--_memory-child", name, str(minutes),
                     "--sample-rate", str(sr)],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                mem = json.loads(child.stdout.strip().splitlines()[-1])
                print(
                    f"  {name:<26} {minutes:5g} min: +{mem['growth_gib']:.2f} GiB over model and "
                    f"input ({mem['base_gib']:.2f} GiB), {mem['seconds']:.1f} s"
                )


if __name__ == "__main__":
    main()

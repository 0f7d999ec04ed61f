"""Embedding throughput of hear_gram through the HEAR API (not a test; prints its figures).

For 10-s stereo clips with ViT-B GRAM-Binaural on this machine:
  * fp32 end to end (audio at the model's rate -> scene embeddings), in seconds of audio
    embedded per wall second, next to the encoder-only ceiling measured in the same run (the
    encoder alone on pre-computed, normalised 2-s chunks) and their ratio;
  * the opt-in bf16 mode (``precision="bf16"``): throughput, speed-up over fp32, and the
    cosine similarity of its scene and timestamp embeddings to fp32;
  * peak resident memory embedding one 10-minute stereo file (in a fresh subprocess);
  * the CPU, one thread's fp32 and bf16 matmul rates and whether bf16 is the faster
    (``hear_gram.cpu.matmul_rates``, ``fast_bf16``: what ``precision="bf16"`` warns on).
    ``ONEDNN_MAX_CPU_ISA=AVX2`` simulates an AVX2-only CPU on an AVX512 one.

    python bench/embed_throughput.py [--clips 8] [--repeats 3] [--minutes 10]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hear_gram  # noqa: E402
from hear_gram import features as feat  # noqa: E402
from hear_gram.audio import resample_span, resampled_length  # noqa: E402
from hear_gram.chunking import iter_chunks  # noqa: E402
from hear_gram.cpu import cpu_name, fast_bf16, matmul_rates  # noqa: E402


def best_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def encoder_ceiling(model, audio: torch.Tensor, repeats: int) -> float:
    """Seconds per batch for the encoder alone on the batch's pre-computed chunks."""
    length = resampled_length(audio.shape[1], model.sample_rate, feat.SAMPLE_RATE)
    chunks = []
    for clip in audio.transpose(1, 2):  # (C, T) each
        read = partial(resample_span, clip, model.sample_rate, feat.SAMPLE_RATE)
        for block, _ in iter_chunks(read, length, model.kind, model.window, model.mel_fb, 200):
            chunks.append(block)
    chunks = torch.cat(chunks).to(next(model.encoder.parameters()).dtype)

    def run() -> None:
        with torch.inference_mode():
            for start in range(0, len(chunks), model.batch_chunks):
                model.encoder(chunks[start : start + model.batch_chunks])

    return best_time(run, repeats)


def peak_rss_gib() -> float:
    """Peak resident memory of this process (VmHWM; ru_maxrss would count the parent's
    memory copied at fork)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def peak_memory(minutes: float, sample_rate: int) -> None:
    """Child process: embed one long stereo file, print peak RSS before and after."""
    model = hear_gram.load_model("random", sample_rate=sample_rate)
    loaded = peak_rss_gib()
    audio = torch.randn(1, int(minutes * 60 * sample_rate), 2) * 0.1
    start = time.perf_counter()
    emb, _ = hear_gram.get_timestamp_embeddings(audio, model)
    took = time.perf_counter() - start
    peak = peak_rss_gib()
    print(
        json.dumps({"loaded_gib": loaded, "peak_gib": peak, "seconds": took, "steps": emb.shape[1]})
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=8, help="10-s clips per HEAR batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=10.0, help="long file for peak memory")
    parser.add_argument("--sample-rate", type=int, default=48000)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--_memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._memory_child:
        peak_memory(args.minutes, args.sample_rate)
        return

    torch.manual_seed(0)
    sr = args.sample_rate
    audio = torch.randn(args.clips, 10 * sr, 2) * 0.1  # heareval's (batch, samples, channels)
    seconds = args.clips * 10.0
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.clips} x 10-s stereo clips at {sr} Hz"
    )
    fp32_rate, bf16_rate = matmul_rates()
    print(
        f"CPU {cpu_name()}, bfloat16 matmuls faster than float32: {'yes' if fast_bf16() else 'no'}"
    )
    print(
        f"256 x 256 matmul, one thread: fp32 {fp32_rate:.1f} GFLOP/s, bf16 {bf16_rate:.1f} GFLOP/s"
    )

    fp32 = hear_gram.load_model("random", sample_rate=sr)
    t_api = best_time(lambda: hear_gram.get_scene_embeddings(audio, fp32), args.repeats)
    t_enc = encoder_ceiling(fp32, audio, args.repeats)
    print(f"fp32 end to end      {seconds / t_api:7.2f} s of audio per s")
    print(f"fp32 encoder ceiling {seconds / t_enc:7.2f} s of audio per s")
    print(f"fp32 ratio           {t_enc / t_api:7.1%}  (target >= 90 %)")

    bf16 = hear_gram.load_model("random", sample_rate=sr, precision="bf16")
    t_bf16 = best_time(lambda: hear_gram.get_scene_embeddings(audio, bf16), args.repeats)
    cos = torch.nn.functional.cosine_similarity
    scene = cos(
        hear_gram.get_scene_embeddings(audio, fp32), hear_gram.get_scene_embeddings(audio, bf16)
    )
    steps32, _ = hear_gram.get_timestamp_embeddings(audio[:2], fp32)
    steps16, _ = hear_gram.get_timestamp_embeddings(audio[:2], bf16)
    step_cos = cos(steps32.flatten(0, 1), steps16.flatten(0, 1))
    print(
        f"bf16 end to end      {seconds / t_bf16:7.2f} s of audio per s, "
        f"{t_api / t_bf16:.2f}x fp32 (target >= 2.5x)"
    )
    print(
        f"bf16 cosine to fp32  scene min {scene.min():.5f}, timestamp min "
        f"{step_cos.min():.5f} mean {step_cos.mean():.5f} (target >= 0.999)"
    )

    if not args.skip_memory:
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--_memory-child",
                "--minutes",
                str(args.minutes),
                "--sample-rate",
                str(sr),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        mem = json.loads(child.stdout.strip().splitlines()[-1])
        print(
            f"{args.minutes:g}-min stereo file: peak RSS {mem['peak_gib']:.2f} GiB "
            f"({mem['loaded_gib']:.2f} GiB after loading the model), {mem['seconds']:.0f} s, "
            f"{mem['steps']} steps (target < 2 GiB)"
        )
    print(
        f"features: {feat.N_MELS} mels, hop {feat.HOP}, chunks of 200 frames, "
        f"batch_chunks {fp32.batch_chunks}"
    )


if __name__ == "__main__":
    main()

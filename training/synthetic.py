"""Synthetic pretraining data for the toy config, the tests and the benchmark.

    python -m training.synthetic work/toy            # then: --config training/configs/toy.yaml

writes, all from a seed, with no downloads:

* ``shards/train-NNNNNN.tar``: webdataset shards of clips (harmonic tones, chirps and noise
  bursts) as flac and wav, at 16, 32, 44.1 and 48 kHz, some stereo, so every decoding path
  (resampling, channel 0) is exercised;
* ``noise/NNNN.wav``: coloured noise recordings, some shorter than a clip;
* ``rirs/``: a natheear_tasks RIR bank (written with its ``RirBankWriter``) of synthetic
  RIRs: per channel a delayed, scaled direct path and an exponentially decaying tail; one
  noise RIR (localized) or three (diffuse) per scene.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from webdataset import TarWriter

from hear_gram.features import AUDIO_CHANNELS, SAMPLE_RATE
from natheear_tasks.atomic import atomic_folder
from natheear_tasks.simulation.rirbank import RirBankWriter

RATES = (16000, 32000, 44100, 48000)


def synth_clip(rng: np.random.Generator, seconds: float, sample_rate: int) -> np.ndarray:
    """A clip of a few events: harmonic tones, chirps and noise bursts. ``(T,)`` float32."""
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    out = np.zeros(n)
    for _ in range(rng.integers(2, 6)):
        start, length = rng.uniform(0, seconds * 0.8), rng.uniform(0.2, seconds * 0.5)
        env = np.clip((t - start) / 0.01, 0, 1) * np.exp(-np.maximum(t - start, 0) / length)
        env *= t >= start
        kind = rng.integers(3)
        if kind == 0:
            f0 = rng.uniform(80, 1000)
            partials = range(1, int(rng.integers(2, 8)))
            wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in partials)
        elif kind == 1:
            f_a, f_b = rng.uniform(100, 6000, size=2)
            phase = 2 * np.pi * (f_a * t + (f_b - f_a) * t**2 / (2 * seconds))
            wave = np.sin(phase)
        else:
            wave = rng.standard_normal(n)
        out += rng.uniform(0.1, 1.0) * env * wave
    return (0.5 * out / max(np.abs(out).max(), 1e-9)).astype(np.float32)


def coloured_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Noise with power spectrum ``1 / f^exponent`` (0 white, 1 pink, 2 brown). ``(n,)``."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.maximum(np.fft.rfftfreq(n), 1.0 / n)
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), n=n)
    return (0.3 * noise / np.abs(noise).max()).astype(np.float32)


def synth_rirs(rng: np.random.Generator, rows: int, channels: int, length: int) -> np.ndarray:
    """``(rows, channels, length)`` float32: per row a direction-dependent direct path per
    channel (delay and gain) and an exponentially decaying noise tail."""
    rirs = np.zeros((rows, channels, length), np.float32)
    decay = rng.uniform(0.05, 0.3) * SAMPLE_RATE
    for r in range(rows):
        delays = rng.integers(0, 32, size=channels)
        gains = rng.uniform(0.3, 1.0, size=channels)
        tail = rng.standard_normal((channels, length)) * np.exp(-np.arange(length) / decay)
        rirs[r] = 0.1 * tail
        rirs[r, np.arange(channels), delays] += gains
    return rirs


def _encode(wave: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, sample_rate, format=fmt.upper())
    return buffer.getvalue()


def write_shards(
    folder: Path, clips: int, shards: int, seconds: float, rng: np.random.Generator
) -> list[Path]:
    """``clips`` synthetic clips dealt into ``shards`` webdataset shards."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"train-{s:06d}.tar" for s in range(shards)]
    writers = [TarWriter(str(p)) for p in paths]
    for i in range(clips):
        rate = RATES[i % len(RATES)]
        wave = synth_clip(rng, seconds, rate)
        if i % 3 == 2:
            wave = np.stack([wave, synth_clip(rng, seconds, rate)], axis=1)
        fmt = "flac" if i % 2 == 0 else "wav"
        writers[i % shards].write({"__key__": f"clip{i:06d}", fmt: _encode(wave, rate, fmt)})
    for writer in writers:
        writer.close()
    return paths


def write_noise(folder: Path, count: int, seconds: float, rng: np.random.Generator) -> None:
    """``count`` coloured-noise wav files at 48 kHz, every third shorter than ``seconds``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        length = seconds * (rng.uniform(0.3, 0.8) if i % 3 == 0 else rng.uniform(1.0, 1.5))
        noise = coloured_noise(rng, int(length * 48000), exponent=float(i % 3))
        sf.write(folder / f"{i:04d}.wav", noise, 48000)


def write_rir_bank(
    folder: Path, scenes: int, kind: str, rng: np.random.Generator, seconds: float = 0.25
) -> None:
    """A natheear_tasks RIR bank of ``scenes`` synthetic scenes for feature ``kind``."""
    channels = AUDIO_CHANNELS[kind]
    writer = RirBankWriter(folder, kind, SAMPLE_RATE, scenes, {"name": "training.synthetic"})
    writer.start()
    for i in range(scenes):
        rows = 1 + (1 if i % 2 == 0 else 3)
        rirs = synth_rirs(rng, rows, channels, int(seconds * SAMPLE_RATE))
        noise = {"kind": "localized" if rows == 2 else "diffuse"}
        writer.write_scene(i, rirs, {"noise": noise})
    writer.finalize()


def write_dataset(
    out: Path,
    clips: int = 32,
    shards: int = 4,
    seconds: float = 4.0,
    noise: int = 6,
    scenes: int = 8,
    kind: str = "binaural",
    seed: int = 0,
) -> Path:
    """Write the whole toy data set into ``out`` (atomically: a temporary folder, renamed)."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it or choose another folder")
    with atomic_folder(out) as tmp:
        rng = np.random.default_rng(seed)
        write_shards(tmp / "shards", clips, shards, seconds, rng)
        write_noise(tmp / "noise", noise, seconds, rng)
        write_rir_bank(tmp / "rirs", scenes, kind, rng)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m training.synthetic OUT``: write the toy data set; the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m training.synthetic",
        description="Write synthetic clips, noise and an RIR bank for toy pretraining.",
    )
    parser.add_argument("out", type=Path, help="folder to create")
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0, help="clip length")
    parser.add_argument("--noise", type=int, default=6, help="noise recordings")
    parser.add_argument("--scenes", type=int, default=8, help="RIR scenes")
    parser.add_argument("--format", choices=("binaural", "ambisonics"), default="binaural")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.clips, args.shards, args.noise, args.scenes) < 1 or args.seconds <= 0:
        print("error: counts must be >= 1 and --seconds > 0", file=sys.stderr)
        return 2
    try:
        write_dataset(
            args.out,
            args.clips,
            args.shards,
            args.seconds,
            args.noise,
            args.scenes,
            args.format,
            args.seed,
        )
    except FileExistsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {args.clips} clips in {args.shards} shards, noise, RIR bank")
    return 0


if __name__ == "__main__":
    sys.exit(main())

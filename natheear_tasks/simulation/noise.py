"""Noise clips for scenes: a folder of recordings (WHAM!-style), or synthesized noise.

A clip is drawn once per file at its highest sample rate and resampled to the others, so
every rate of a file hears the same noise. Recordings: one file chosen at random, channel 0,
a random start, looped when shorter than the clip. Synthesized noise (no recordings given):
Gaussian noise with a power spectrum ``1 / f^beta``, ``beta`` uniform in [0, 2] (white to
brown), above a high-pass at 20 Hz, with a slow sinusoidal level modulation (depth uniform
in [0, 0.5], rate uniform in [0.1, 2] Hz) so that it is not stationary.
"""

from __future__ import annotations

import hashlib
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.fft
import soundfile as sf
from scipy.signal import resample_poly

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
SPECTRAL_SLOPE = (0.0, 2.0)
MODULATION_DEPTH = (0.0, 0.5)
MODULATION_RATE = (0.1, 2.0)
HIGH_PASS = 20.0


class NoiseError(ValueError):
    """A noise folder that cannot be used (empty, unreadable files)."""


def resample(x: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling along the last axis (float32)."""
    if source_rate == target_rate:
        return np.asarray(x, dtype=np.float32)
    ratio = Fraction(int(target_rate), int(source_rate))
    return resample_poly(x, ratio.numerator, ratio.denominator, axis=-1).astype(np.float32)


def _fit(x: np.ndarray, length: int) -> np.ndarray:
    """Cut or zero-pad the last axis to ``length`` samples."""
    if x.shape[-1] >= length:
        return x[..., :length]
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, length - x.shape[-1])])


class SynthesizedNoise:
    """Coloured, slowly modulated Gaussian noise (see the module docstring)."""

    def describe(self) -> dict:
        return {
            "kind": "synthesized",
            "spectral_slope": list(SPECTRAL_SLOPE),
            "modulation_depth": list(MODULATION_DEPTH),
            "modulation_rate_hz": list(MODULATION_RATE),
        }

    def draw(
        self, rng: np.random.Generator, lengths: dict[int, int]
    ) -> tuple[dict[int, np.ndarray], dict]:
        """Noise clips ``{rate: (lengths[rate],) float32}`` and their record."""
        top = max(lengths)
        length = max(int(np.ceil(n * top / r)) for r, n in lengths.items())
        beta = float(rng.uniform(*SPECTRAL_SLOPE))
        depth = float(rng.uniform(*MODULATION_DEPTH))
        rate_hz = float(rng.uniform(*MODULATION_RATE))
        phase = float(rng.uniform(0, 2 * np.pi))
        # A complex Gaussian spectrum (independent standard normal real and imaginary
        # parts) by the Box-Muller transform of uniform numbers, several times faster than
        # rng.standard_normal; shaped to 1 / f^beta in power, zero below the high-pass.
        uniform = rng.random((2, length // 2 + 1), dtype=np.float32)
        log_freqs, first = _log_frequencies(length, top)
        amplitude = np.sqrt(-2 * np.log1p(-uniform[0]))  # 1 - u is in (0, 1]
        amplitude *= np.exp(np.float32(-beta / 2) * log_freqs)
        amplitude[:first] = 0
        angle = np.float32(2 * np.pi) * uniform[1]
        spectrum = np.empty(len(amplitude), np.complex64)
        spectrum.real = amplitude * np.cos(angle)
        spectrum.imag = amplitude * np.sin(angle)
        noise = scipy.fft.irfft(spectrum, length)
        t = np.arange(length, dtype=np.float32) / top
        noise *= 1 + depth * np.sin(2 * np.pi * rate_hz * t + phase)
        noise /= max(float(np.sqrt(np.mean(noise.astype(np.float64) ** 2))), 1e-12)
        record = {
            "kind": "synthesized",
            "spectral_slope": round(beta, 4),
            "modulation_depth": round(depth, 4),
            "modulation_rate_hz": round(rate_hz, 4),
        }
        return {r: _fit(resample(noise, top, r), n) for r, n in lengths.items()}, record


@lru_cache(maxsize=16)
def _log_frequencies(length: int, rate: int) -> tuple[np.ndarray, int]:
    """``log f`` of the bins of a ``length``-sample rfft at ``rate`` (float32; the bins below
    the high-pass hold ``log`` of the high-pass) and the first bin at or above it."""
    freqs = np.fft.rfftfreq(length, 1 / rate)
    first = int(np.searchsorted(freqs, HIGH_PASS))
    log_freqs = np.log(np.maximum(freqs, HIGH_PASS)).astype(np.float32)
    log_freqs.flags.writeable = False
    return log_freqs, first


class NoiseFolder:
    """Noise recordings in a folder (searched recursively; wav, flac, ogg)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise NoiseError(f"--noise {self.folder} is not a folder")
        files = sorted(
            p for p in self.folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()
        )
        problems, self.files, self.frames, self.rates = [], [], [], []
        for path in files:
            try:
                info = sf.info(str(path))
            except Exception as error:  # soundfile raises several types for bad files
                problems.append(f"{path}: unreadable ({error})")
                continue
            if info.frames == 0:
                problems.append(f"{path}: empty")
                continue
            self.files.append(path)
            self.frames.append(info.frames)
            self.rates.append(info.samplerate)
        if problems:
            raise NoiseError(
                f"--noise {self.folder}: {len(problems)} unusable files (fix or remove them): "
                + "; ".join(problems[:10])
            )
        if not self.files:
            raise NoiseError(
                f"--noise {self.folder} holds no {'/'.join(AUDIO_SUFFIXES)} files; pass a folder "
                "of noise recordings, or leave --noise out for synthesized noise"
            )

    def describe(self) -> dict:
        listing = "\n".join(
            f"{p.relative_to(self.folder).as_posix()}\t{n}\t{r}"
            for p, n, r in zip(self.files, self.frames, self.rates, strict=True)
        )
        return {
            "kind": "recordings",
            "folder": self.folder.name,
            "files": len(self.files),
            "listing_sha256": hashlib.sha256(listing.encode()).hexdigest()[:16],
        }

    def draw(
        self, rng: np.random.Generator, lengths: dict[int, int]
    ) -> tuple[dict[int, np.ndarray], dict]:
        """Noise clips ``{rate: (lengths[rate],) float32}`` and their record (file, start)."""
        index = int(rng.integers(len(self.files)))
        path, frames, rate = self.files[index], self.frames[index], self.rates[index]
        length = max(int(np.ceil(n * rate / r)) for r, n in lengths.items())
        start = int(rng.integers(frames))
        take = np.arange(start, start + length) % frames  # loop short recordings
        first, last = int(take.min()), int(take.max()) + 1
        data, _ = sf.read(str(path), start=first, stop=last, dtype="float32", always_2d=True)
        clip = data[take - first, 0]
        clip = clip / max(float(np.sqrt(np.mean(clip.astype(np.float64) ** 2))), 1e-12)
        record = {
            "kind": "recording",
            "file": path.relative_to(self.folder).as_posix(),
            "start_seconds": round(start / rate, 6),
        }
        return {r: _fit(resample(clip, rate, r), n) for r, n in lengths.items()}, record

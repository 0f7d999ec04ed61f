"""Dry mono sound events of a few classes with distinct spectra, synthesized with numpy.

For simulated SELD recordings (no recordings or tools needed). Each class has its own
spectral and temporal signature, drawn at random per event:

* ``alarm``: two alternating tones (1-1.5 kHz and 1.26 times that, 4 alternations a
  second, a 6-10 Hz warble of 5 %) with two harmonics (amplitudes 1/k) over a little noise;
* ``engine``: a harmonic series on a 35-80 Hz fundamental (amplitudes 1/k) and as much
  80-3000 Hz rumble noise, with a slow level modulation;
* ``speech``: a voiced, vibrato harmonic series (100-220 Hz) shaped by two formants
  (300-800 Hz, 900-2200 Hz), with 3-5 syllables a second;
* ``birdsong``: 60-120-ms upward chirps from 2-3 kHz to 3.5-5 kHz;
* ``knock``: 3-7 decaying noise bursts a second in 300-2500 Hz;
* ``water``: noise in 1-6 kHz with a slow random level.

Every sound has unit RMS and 10-ms fades; frequencies stay below 0.45 times the rate.
"""

from __future__ import annotations

import numpy as np

CLASSES = ("alarm", "engine", "speech", "birdsong", "knock", "water")
FADE_SECONDS = 0.01


def _band_noise(rng: np.random.Generator, n: int, rate: int, low: float, high: float):
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spectrum[(freqs < low) | (freqs > min(high, 0.45 * rate))] = 0
    return np.fft.irfft(spectrum, n)


def _harmonics(t: np.ndarray, phase: np.ndarray, amplitudes: np.ndarray, rng) -> np.ndarray:
    """``sum_k a_k sin(k phase + phi_k)`` for ``k = 1..len(amplitudes)``."""
    out = np.zeros_like(t)
    offsets = rng.uniform(0, 2 * np.pi, len(amplitudes))
    for k, (a, phi) in enumerate(zip(amplitudes, offsets, strict=True), start=1):
        if a:
            out += a * np.sin(k * phase + phi)
    return out


def _alarm(rng, t, rate):
    low = rng.uniform(1000, 1500)
    high = 1.26 * low
    frequency = np.where((t * 4).astype(int) % 2 == 0, low, high)
    frequency = frequency * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(6, 10) * t))
    phase = 2 * np.pi * np.cumsum(frequency) / rate
    count = int(min(3, 0.45 * rate / (1.02 * high)))
    tone = _harmonics(t, phase, 1.0 / np.arange(1, count + 1), rng)
    return tone + 0.3 * _band_noise(rng, len(t), rate, low / 2, 3 * high)


def _engine(rng, t, rate):
    f0 = rng.uniform(35, 80)
    count = int(min(30, 0.45 * rate / f0))
    amplitudes = 1.0 / np.arange(1, count + 1)
    tone = _harmonics(t, 2 * np.pi * f0 * t, amplitudes, rng)
    rumble = _band_noise(rng, len(t), rate, 80, 3000)
    rumble *= np.sqrt(np.mean(tone**2) / max(np.mean(rumble**2), 1e-20))
    return (tone + rumble) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))


def _speech(rng, t, rate):
    f0 = rng.uniform(100, 220)
    f = f0 * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(f) / rate
    count = int(min(4000, 0.45 * rate) / (1.03 * f0))
    k = np.arange(1, count + 1) * f0
    formants = [(rng.uniform(300, 800), 0.3), (rng.uniform(900, 2200), 0.25)]
    envelope = sum(np.exp(-0.5 * (np.log(k / c) / w) ** 2) for c, w in formants) + 0.02
    syllables = np.abs(np.sin(np.pi * rng.uniform(3, 5) * t + rng.uniform(0, np.pi))) ** 0.5
    return _harmonics(t, phase, envelope, rng) * syllables


def _birdsong(rng, t, rate):
    out = np.zeros_like(t)
    start = rng.uniform(0, 0.05)
    while start < t[-1]:
        length = rng.uniform(0.06, 0.12)
        low = rng.uniform(2000, 3000)
        high = min(rng.uniform(3500, 5000), 0.45 * rate)
        span = (t >= start) & (t < start + length)
        local = t[span] - start
        frequency = low + (high - low) * local / length
        phase = 2 * np.pi * np.cumsum(frequency) / rate
        out[span] = np.sin(phase) * np.hanning(span.sum())
        start += length + rng.uniform(0.04, 0.15)
    return out


def _knock(rng, t, rate):
    out = np.zeros_like(t)
    start = rng.uniform(0, 0.05)
    while start < t[-1]:
        n = int(rng.uniform(0.08, 0.12) * rate)
        burst = _band_noise(rng, n, rate, 300, 2500) * np.exp(-np.arange(n) / (0.02 * rate))
        first = int(start * rate)
        take = min(n, len(t) - first)
        out[first : first + take] += burst[:take]
        start += rng.uniform(1 / 7, 1 / 3)
    return out


def _water(rng, t, rate):
    noise = _band_noise(rng, len(t), rate, 1000, 6000)
    level = np.interp(t, np.linspace(0, t[-1] + 1e-9, 8), rng.uniform(0.5, 1.0, 8))
    return noise * level


_SYNTHS = {
    "alarm": _alarm,
    "engine": _engine,
    "speech": _speech,
    "birdsong": _birdsong,
    "knock": _knock,
    "water": _water,
}


def dry_sound(name: str, samples: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A ``(samples,)`` float32 sound of class ``name`` (one of :data:`CLASSES`), unit RMS,
    with 10-ms fades."""
    if name not in _SYNTHS:
        raise ValueError(f"unknown sound class {name!r}; known: {list(CLASSES)}")
    t = np.arange(samples) / rate
    sound = _SYNTHS[name](rng, t, rate)
    sound = sound / max(float(np.sqrt(np.mean(sound**2))), 1e-12)
    ramp = max(1, min(samples // 2, round(FADE_SECONDS * rate)))
    gain = np.ones(samples)
    gain[:ramp] = np.arange(1, ramp + 1) / (ramp + 1)
    gain[samples - ramp :] = gain[:ramp][::-1]
    return (sound * gain).astype(np.float32)

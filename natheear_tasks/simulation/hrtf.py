"""Head-related impulse responses: a measured set (SOFA, the MIT KEMAR set shipped in the
``slab`` wheel) or a closed-form spherical head.

Directions are unit vectors in the listener frame: x forward, y left, z up. An
:class:`HrtfSet` answers with the measured direction nearest to the one asked for (the
KEMAR set covers elevations -40..90 degrees, so lower sources get the -40-degree responses).
"""

from __future__ import annotations

import bz2
import hashlib
import importlib
import importlib.util
import math
import pickle
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

KEMAR = "kemar"
SPHERICAL_HEAD = "spherical-head"
KEMAR_FILE = "mit_kemar_normal_pinna.bz2"
HEAD_RADIUS = 0.0875  # metres
SPEED_OF_SOUND = 343.0


class HrtfError(ValueError):
    """An HRTF that cannot be loaded or does not fit (no left/right pair, no data)."""


@dataclass(frozen=True)
class HrtfSet:
    """Head-related impulse responses on a grid of directions.

    Attributes:
        name: what it is (``"kemar"``, ``"spherical-head"`` or the SOFA file name).
        directions: ``(M, 3)`` unit vectors, listener frame.
        hrirs: ``(M, 2, N)`` float32, left then right ear.
        sample_rate: Hz.
        digest: short hash of the data (recorded with RIR banks).
    """

    name: str
    directions: np.ndarray
    hrirs: np.ndarray
    sample_rate: int
    digest: str

    def nearest(self, directions: np.ndarray) -> np.ndarray:
        """Index of the grid direction nearest to each of ``directions (..., 3)``."""
        return np.argmax(directions @ self.directions.T, axis=-1)

    def resampled(self, sample_rate: int) -> HrtfSet:
        """The same set at ``sample_rate`` (polyphase resampling)."""
        if sample_rate == self.sample_rate:
            return self
        ratio = Fraction(sample_rate, self.sample_rate)
        hrirs = resample_poly(self.hrirs, ratio.numerator, ratio.denominator, axis=-1)
        return HrtfSet(
            self.name, self.directions, hrirs.astype(np.float32), sample_rate, self.digest
        )


def _make(name: str, directions: np.ndarray, hrirs: np.ndarray, sample_rate: float) -> HrtfSet:
    if hrirs.ndim != 3 or hrirs.shape[1] != 2 or len(hrirs) != len(directions) or not len(hrirs):
        raise HrtfError(
            f"HRTF {name!r}: expected (directions, 2 ears, taps) impulse responses, got "
            f"{hrirs.shape} for {len(directions)} directions"
        )
    if not np.isfinite(hrirs).all():
        raise HrtfError(f"HRTF {name!r} holds NaN or infinite samples")
    if int(sample_rate) != sample_rate:
        raise HrtfError(f"HRTF {name!r} has a non-integer sample rate {sample_rate}")
    directions = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    hrirs = np.ascontiguousarray(hrirs, dtype=np.float32)
    digest = hashlib.sha256(hrirs.tobytes() + directions.astype(np.float32).tobytes())
    return HrtfSet(name, directions, hrirs, int(sample_rate), digest.hexdigest()[:16])


def spherical_to_vector(azimuth_deg: np.ndarray, elevation_deg: np.ndarray) -> np.ndarray:
    """``(..., 3)`` unit vectors for azimuth (counter-clockwise from front) and elevation."""
    az, el = np.deg2rad(azimuth_deg), np.deg2rad(elevation_deg)
    return np.stack([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)], axis=-1)


def load_sofa(path: str | Path) -> HrtfSet:
    """An HRTF set from a SOFA file (SimpleFreeFieldHRIR; receivers left, right), via sofar."""
    import sofar

    path = Path(path)
    try:
        sofa = sofar.read_sofa(str(path), verify=False, verbose=False)
    except Exception as error:  # sofar raises many types for unreadable files
        raise HrtfError(f"cannot read SOFA file {path}: {error}") from error
    hrirs = np.asarray(sofa.Data_IR, dtype=np.float64)
    positions = np.asarray(sofa.SourcePosition, dtype=np.float64)
    if hrirs.ndim != 3 or hrirs.shape[1] != 2:
        raise HrtfError(f"{path}: Data_IR has shape {hrirs.shape}; expected (M, 2, N)")
    if str(sofa.SourcePosition_Type).lower() == "cartesian":
        directions = positions
    else:
        directions = spherical_to_vector(positions[:, 0], positions[:, 1])
    rate = float(np.asarray(sofa.Data_SamplingRate).ravel()[0])
    return _make(path.name, directions, hrirs, rate)


class _KemarUnpickler(pickle.Unpickler):
    """Reads slab's KEMAR pickle without importing slab: only plain data classes allowed."""

    class Record:
        def __setstate__(self, state: dict) -> None:
            self.__dict__.update(state)

    def find_class(self, module: str, name: str):
        if module in ("slab.hrtf", "slab.filter") and name in ("HRTF", "Filter"):
            return self.Record
        if module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray"):
            if name in ("ndarray", "dtype"):
                return getattr(np, name)
            if name == "_reconstruct":
                return importlib.import_module("numpy._core.multiarray")._reconstruct
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in the KEMAR data")


def kemar_path() -> Path:
    """Path of the MIT KEMAR data in the installed ``slab`` package (slab is not imported)."""
    spec = importlib.util.find_spec("slab")
    if spec is None or not spec.submodule_search_locations:
        raise HrtfError(
            "the MIT KEMAR HRTF comes with the `slab` package (pip install slab); install it, "
            f"pass --hrtf FILE.sofa, or --hrtf {SPHERICAL_HEAD} for the closed-form head model"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / KEMAR_FILE
    if not path.exists():
        raise HrtfError(f"the installed slab package has no {KEMAR_FILE} at {path}")
    return path


@lru_cache(maxsize=1)
def load_kemar() -> HrtfSet:
    """MIT KEMAR, normal pinna (Gardner and Martin 1994): 710 directions, 44.1 kHz, 512 taps."""
    with bz2.BZ2File(kemar_path()) as f:
        data = _KemarUnpickler(f).load()
    sources = np.asarray(data.sources, dtype=np.float64)  # azimuth, elevation, distance
    hrirs = np.stack([np.asarray(f.data, dtype=np.float64).T for f in data.data])
    return _make(KEMAR, spherical_to_vector(sources[:, 0], sources[:, 1]), hrirs, data.samplerate)


def fibonacci_sphere(count: int) -> np.ndarray:
    """``(count, 3)`` nearly uniform unit vectors (a Fibonacci lattice)."""
    k = np.arange(count) + 0.5
    z = 1 - 2 * k / count
    phi = np.pi * (1 + 5**0.5) * k
    r = np.sqrt(1 - z**2)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


@lru_cache(maxsize=4)
def spherical_head(sample_rate: int, count: int = 1024, taps: int = 512) -> HrtfSet:
    """Closed-form rigid spherical head (Brown and Duda 1998): head shadow and Woodworth ITD.

    Ears at +-90 degrees azimuth on a sphere of radius 8.75 cm. Each ear's response is the
    one-pole/one-zero shadow filter ``(1 + j a w / 2 w0) / (1 + j w / 2 w0)``, ``w0 = c / r``,
    ``a(theta) = 1.05 + 0.95 cos(theta / 150 deg * 180 deg)`` with ``theta`` the angle
    between source and ear, and the delay ``-r/c cos(theta)`` (``theta < 90`` deg) or
    ``r/c (theta - pi/2)``. There are no pinna cues: front/back and elevation are ambiguous.
    """
    directions = fibonacci_sphere(count)
    freqs = np.fft.rfftfreq(taps, 1 / sample_rate)
    w = 2 * np.pi * freqs
    w0 = SPEED_OF_SOUND / HEAD_RADIUS
    hrirs = np.zeros((count, 2, taps))
    # the ideal delays ring before their onset; that ringing wraps to the end: fade it out
    fade_out = np.ones(taps)
    fade_out[-taps // 4 :] = np.hanning(taps // 2)[taps // 4 :]
    for ear, axis in enumerate((1.0, -1.0)):
        theta = np.arccos(np.clip(directions[:, 1] * axis, -1, 1))  # angle to the ear axis
        alpha = 1.05 + 0.95 * np.cos(theta / math.radians(150) * np.pi)
        delay = np.where(
            theta < np.pi / 2,
            -HEAD_RADIUS / SPEED_OF_SOUND * np.cos(theta),
            HEAD_RADIUS / SPEED_OF_SOUND * (theta - np.pi / 2),
        )
        delay = delay + 2 * HEAD_RADIUS / SPEED_OF_SOUND  # keep every response causal
        shadow = (1 + 1j * alpha[:, None] * w / (2 * w0)) / (1 + 1j * w / (2 * w0))
        spectrum = shadow * np.exp(-1j * w * delay[:, None])
        hrirs[:, ear] = np.fft.irfft(spectrum, n=taps) * fade_out
    return _make(SPHERICAL_HEAD, directions, hrirs, sample_rate)


def load_hrtf(spec: str) -> HrtfSet:
    """``"kemar"`` (default), ``"spherical-head"`` (at 48 kHz; resample as needed) or a
    path to a ``.sofa`` file."""
    if spec == KEMAR:
        return load_kemar()
    if spec == SPHERICAL_HEAD:
        return spherical_head(48000)
    path = Path(spec)
    if path.suffix.lower() != ".sofa" or not path.is_file():
        raise HrtfError(
            f"--hrtf {spec!r} is not an existing .sofa file; pass a SOFA file, "
            f"{KEMAR!r} (MIT KEMAR from the slab package) or {SPHERICAL_HEAD!r}"
        )
    return load_sofa(path)

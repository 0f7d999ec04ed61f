"""natheear_tasks.ambisonics: FuMa <-> AmbiX, active intensity, the dipole energy ratio."""

import math

import numpy as np
import pytest
import torch

from natheear_tasks.ambisonics import (
    active_intensity,
    ambix_to_fuma,
    cross_spectra,
    dipole_ratio,
    fuma_to_ambix,
    stft_size,
    to_ambix,
)
from natheear_tasks.formats.dcase_frames import direction_xyz

RATE = 16000


def _plane_wave(azimuth: float, elevation: float, seed: int = 0, seconds: float = 0.5):
    """AmbiX ``(4, T)`` float64 of white noise arriving from ``(azimuth, elevation)``."""
    x, y, z = direction_xyz(azimuth, elevation)
    signal = np.random.default_rng(seed).standard_normal(int(seconds * RATE))
    return torch.from_numpy(np.outer([1.0, y, z, x], signal))


def _angle(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def test_fuma_round_trip_and_channel_meaning():
    ambix = _plane_wave(60, 20)
    fuma = ambix_to_fuma(ambix)
    w, x, y, z = fuma
    assert torch.allclose(w, ambix[0] / math.sqrt(2))
    assert torch.equal(x, ambix[3]) and torch.equal(y, ambix[1]) and torch.equal(z, ambix[2])
    assert torch.allclose(fuma_to_ambix(fuma), ambix)
    assert torch.equal(to_ambix(ambix, "acn"), ambix)
    assert torch.allclose(to_ambix(fuma, "fuma"), ambix)
    with pytest.raises(ValueError, match="channel order"):
        to_ambix(ambix, "n3d")


@pytest.mark.parametrize(("az", "el"), [(0, 0), (90, 0), (-135, 30), (170, -50), (20, 80)])
def test_active_intensity_points_at_a_plane_wave(az, el):
    audio = _plane_wave(az, el)
    n_fft = stft_size(RATE)
    intensity, energy = active_intensity(audio, RATE, n_fft, n_fft // 2)
    assert intensity.shape == (3, energy.shape[-1])
    assert _angle(intensity.sum(-1).numpy(), direction_xyz(az, el)) < 0.01
    # FuMa files carry the same components on channels 1-3 in x, y, z order
    cross, _ = cross_spectra(ambix_to_fuma(audio), RATE, n_fft, n_fft // 2)
    assert _angle(cross.sum(-1).numpy(), direction_xyz(az, el)) < 0.01


def test_active_intensity_is_batched():
    batch = torch.stack([_plane_wave(30, 0, seed=1), _plane_wave(-100, 10, seed=2)])
    intensity, energy = active_intensity(batch, RATE, 512, 256)
    assert intensity.shape[:2] == (2, 3) and energy.shape[0] == 2
    single, _ = active_intensity(batch[1], RATE, 512, 256)
    assert torch.allclose(intensity[1], single)


def test_dipole_ratio_tells_sn3d_from_fuma():
    mixture = _plane_wave(40, 10, seed=3) + _plane_wave(-120, -30, seed=4)
    assert dipole_ratio(mixture) == pytest.approx(1.0, abs=0.02)
    assert dipole_ratio(ambix_to_fuma(mixture)) == pytest.approx(2.0, abs=0.04)

"""First-order Ambisonics conventions: channel orders, conversion to AmbiX, and the active
intensity (whose direction is a single source's direction of arrival).

* AmbiX (``"acn"``): ACN channel order with SN3D normalisation, W, Y, Z, X; a plane wave
  from azimuth ``az`` and elevation ``el`` has the gains ``W = 1, Y = sin az cos el,
  Z = sin el, X = cos az cos el``.
* FuMa (``"fuma"``, Furse-Malham, first order): W, X, Y, Z with W scaled by ``1/sqrt(2)``.

Directions are in the listener's frame: x forward, y left, z up (azimuth counter-clockwise
from the front, elevation up). Functions take ``(..., 4, T)`` tensors (batched, any device).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

CHANNEL_ORDERS = ("acn", "fuma")
AMBIX_CHANNELS = ("W", "Y", "Z", "X")
INTENSITY_BAND = (200.0, 8000.0)  # Hz summed for an intensity direction
SQRT2 = math.sqrt(2.0)


def fuma_to_ambix(audio: Tensor) -> Tensor:
    """FuMa ``(..., 4, T)`` (W, X, Y, Z; W scaled by 1/sqrt(2)) to AmbiX (W, Y, Z, X, SN3D)."""
    w, x, y, z = audio.unbind(dim=-2)
    return torch.stack([w * SQRT2, y, z, x], dim=-2)


def ambix_to_fuma(audio: Tensor) -> Tensor:
    """AmbiX ``(..., 4, T)`` (W, Y, Z, X, SN3D) to FuMa (W / sqrt(2), X, Y, Z)."""
    w, y, z, x = audio.unbind(dim=-2)
    return torch.stack([w / SQRT2, x, y, z], dim=-2)


def to_ambix(audio: Tensor, order: str) -> Tensor:
    """``(..., 4, T)`` in channel ``order`` (``"acn"`` or ``"fuma"``) as AmbiX."""
    if order == "acn":
        return audio
    if order == "fuma":
        return fuma_to_ambix(audio)
    raise ValueError(f"channel order must be one of {CHANNEL_ORDERS}, got {order!r}")


def cross_spectra(
    audio: Tensor,
    sample_rate: int,
    n_fft: int,
    hop: int,
    band: tuple[float, float] = INTENSITY_BAND,
) -> tuple[Tensor, Tensor]:
    """``Re(conj(S_0) S_k)`` for channels ``k = 1, 2, 3`` in file order, summed over the
    STFT bins of ``band``, per STFT frame, and the energy of channel 0 there.

    Whatever the channel order, these are the intensity components carried by channels 1-3
    (:func:`active_intensity` arranges them as ``[x, y, z]`` for AmbiX).

    Args:
        audio: ``(..., 4, T)``.
        sample_rate: Hz.
        n_fft: STFT size (Hann window of the same length, centred frames).
        hop: STFT hop in samples.
        band: lowest and highest frequency summed, Hz (capped at Nyquist).
    Returns:
        ``(..., 3, N)`` and ``(..., N)``, float32 (float64 for float64 input).
    """
    shape = audio.shape
    flat = audio.reshape(-1, shape[-1])
    window = torch.hann_window(n_fft, dtype=flat.dtype, device=flat.device)
    spec = torch.stft(flat, n_fft, hop, window=window, return_complex=True)
    spec = spec.reshape(*shape[:-1], *spec.shape[-2:])  # (..., 4, F, N)
    freqs = torch.fft.rfftfreq(n_fft, 1 / sample_rate, device=flat.device)
    keep = (freqs >= band[0]) & (freqs <= band[1])
    w = spec[..., 0, keep, :]
    cross = (torch.conj(w).unsqueeze(-3) * spec[..., 1:, keep, :]).real.sum(dim=-2)
    return cross, w.abs().square().sum(dim=-2)


def active_intensity(
    audio: Tensor,
    sample_rate: int,
    n_fft: int,
    hop: int,
    band: tuple[float, float] = INTENSITY_BAND,
) -> tuple[Tensor, Tensor]:
    """Active intensity ``Re(conj(W) [X, Y, Z])`` of AmbiX audio per STFT frame, summed over
    ``band``, and the energy of W (arguments as :func:`cross_spectra`).

    Returns:
        ``intensity (..., 3, N)`` as ``[x, y, z]`` in the listener's frame (its direction is
        the direction of arrival of a single plane wave) and ``energy (..., N)``.
    """
    cross, energy = cross_spectra(audio, sample_rate, n_fft, hop, band)
    y, z, x = cross.unbind(dim=-2)
    return torch.stack([x, y, z], dim=-2), energy


def stft_size(sample_rate: int, seconds: float = 0.04) -> int:
    """The power of two nearest above ``seconds`` of samples (an STFT size for intensity)."""
    return 1 << max(4, math.ceil(math.log2(seconds * sample_rate)))


def dipole_ratio(audio: Tensor) -> float:
    """Energy of the three dipole channels over the energy of W, over the whole signal.

    For any mixture of uncorrelated plane waves this is 1 in SN3D (AmbiX) and 2 in FuMa
    (whose W carries 1/sqrt(2)); diffuse sound keeps the ratio, coherent reflections move it
    a little. ``audio``: ``(..., 4, T)``, channel 0 = W.
    """
    energy = audio.double().movedim(-2, 0).reshape(4, -1).square().sum(dim=-1)
    return float(energy[1:].sum() / energy[0].clamp(min=torch.finfo(torch.float64).tiny))

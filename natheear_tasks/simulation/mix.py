"""Scene mixing: convolution with room impulse responses, fades and SNR scaling.

Pure, batched, device-agnostic functions in the style of ``torchaudio.functional``; the
same code mixes Nat-HEAR tasks offline (:mod:`natheear_tasks.tasks.convert`) and naturalistic
scenes online during pretraining.

A scene (GRAM's recipe): a dry mono clip convolved with the source RIR, plus one mono
noise clip (0.2-s linear fades) convolved with every noise RIR of the scene and summed
(one RIR: localized noise; 3-5: diffuse), scaled to an SNR in dB with
``a = sqrt(E_x / E_n * 10^(-SNR / 10))``, the energies summed over every channel and
over the span where the noise is active.
"""

from __future__ import annotations

import scipy.fft
import torch
from torch import Tensor

NOISE_FADE_SECONDS = 0.2


def fft_length(signal_length: int, rir_length: int) -> int:
    """FFT size for the linear convolution of ``signal_length`` samples with ``rir_length``
    taps (at least their sum minus one, with small prime factors)."""
    return scipy.fft.next_fast_len(signal_length + rir_length - 1, real=True)


def rir_spectrum(rir: Tensor, n: int) -> Tensor:
    """``rir (..., C, L)`` -> ``(..., C, n // 2 + 1)`` complex: its spectrum for
    :func:`convolve_spectrum` (complex64, complex128 for float64 input)."""
    dtype = torch.float64 if rir.dtype == torch.float64 else torch.float32
    return torch.fft.rfft(rir.to(dtype), n=n)


def convolve_spectrum(signal: Tensor, spectrum: Tensor, n: int) -> Tensor:
    """:func:`fft_convolve` with the impulse response given as its spectrum.

    Args:
        signal: ``(..., T)``.
        spectrum: ``(..., C, n // 2 + 1)`` from :func:`rir_spectrum`; leading dimensions
            broadcast against the signal's.
        n: the FFT size, at least ``T + L - 1`` (:func:`fft_length`).
    Returns:
        ``(..., C, T)``, float32 (float64 for a complex128 spectrum or float64 signal).
    """
    double = signal.dtype == torch.float64 or spectrum.dtype == torch.complex128
    signal = signal.to(torch.float64 if double else torch.float32)
    wet = torch.fft.rfft(signal, n=n).unsqueeze(-2) * spectrum
    return torch.fft.irfft(wet, n=n)[..., : signal.shape[-1]]


def fft_convolve(signal: Tensor, rir: Tensor) -> Tensor:
    """Linear convolution of a signal with a multi-channel impulse response, cut to ``T``.

    Args:
        signal: ``(..., T)``.
        rir: ``(..., C, L)``; leading dimensions broadcast against the signal's.
    Returns:
        ``(..., C, T)``: ``out[..., c, t] = sum_l rir[..., c, l] * signal[..., t - l]``
        (the first ``T`` samples of the full convolution, so events keep their times).
        Computed in float32 (float64 for float64 input).
    """
    n = fft_length(signal.shape[-1], rir.shape[-1])
    dtype = torch.float64 if torch.float64 in (signal.dtype, rir.dtype) else torch.float32
    return convolve_spectrum(signal, rir_spectrum(rir.to(dtype), n), n)


def fade(
    x: Tensor, sample_rate: int, seconds: float = NOISE_FADE_SECONDS, active: Tensor | None = None
) -> Tensor:
    """Linear fade in and out over the last axis.

    Args:
        x: ``(..., T)``.
        sample_rate: samples per second of ``x``.
        seconds: length of each ramp (at most half the faded span).
        active: optional ``(..., T)`` bool (broadcastable to ``x``), one contiguous span per
            row; the ramps then sit at the span's first and last samples.
    Returns:
        ``(..., T)``; the ramp gains are ``(k + 1) / (n + 1)`` for ``k = 0..n-1``.
    """
    length = x.shape[-1]
    if active is None and length >= 2:  # the same gains, computed for the ramps only
        ramp = max(1, min(length // 2, round(seconds * sample_rate)))
        gain = torch.arange(1, ramp + 1, device=x.device, dtype=torch.float32) / (ramp + 1)
        out = x.clone()
        out[..., :ramp] *= gain.to(x.dtype)
        out[..., length - ramp :] *= gain.flip(0).to(x.dtype)
        return out
    t = torch.arange(length, device=x.device, dtype=torch.float32)
    if active is None:
        start = torch.zeros((), device=x.device)
        end = torch.full((), length - 1.0, device=x.device)
    else:
        span = active.to(device=x.device, dtype=torch.float32)
        start = torch.where(span > 0, t, float(length)).amin(-1, keepdim=True)
        end = torch.where(span > 0, t, -1.0).amax(-1, keepdim=True)
    ramp = torch.clamp(((end - start + 1) / 2).floor(), max=round(seconds * sample_rate))
    ramp = ramp.clamp(min=1.0)
    gain = torch.minimum((t - start + 1) / (ramp + 1), (end - t + 1) / (ramp + 1)).clamp(0, 1)
    if active is not None:
        gain = gain * span
    return x * gain.to(x.dtype)


def scale_noise_to_snr(
    source: Tensor, noise: Tensor, snr_db: Tensor, active: Tensor | None = None
) -> Tensor:
    """Scale ``noise`` so that the source-to-noise energy ratio equals ``snr_db``.

    Args:
        source: ``(B, C, T)`` the (reverberant) source.
        noise: ``(B, C, T)`` the (spatialized) noise.
        snr_db: ``(B,)`` target SNR in dB.
        active: optional ``(B, T)`` bool, the span where the noise is active; energies are
            summed over all channels and over this span (the whole clip when ``None``).
    Returns:
        ``(B, C, T)``: ``a * noise`` with ``a = sqrt(E_x / E_n * 10^(-snr_db / 10))``;
        all zeros where the noise or the source has no energy.
    """
    if active is None:
        e_source, e_noise = (x.square().sum(dim=(1, 2)) for x in (source, noise))
    else:
        weight = active[:, None, :].to(source.dtype)
        e_source, e_noise = ((x.square() * weight).sum(dim=(1, 2)) for x in (source, noise))
    ratio = e_source / e_noise.clamp(min=torch.finfo(e_noise.dtype).tiny)
    gain = torch.sqrt(ratio * 10.0 ** (-snr_db.to(ratio.dtype) / 10.0))
    gain = torch.where(e_noise > 0, gain, torch.zeros_like(gain))
    return noise * gain[:, None, None]


def scene_kernels(source_rir: Tensor, noise_rirs: Tensor, noise_rir_mask: Tensor) -> Tensor:
    """The two impulse responses of a scene: the source RIR and the sum of its real noise RIRs
    (the same mono noise goes through every noise RIR: sum the RIRs, convolve once).

    Args:
        source_rir: ``(B, C, L)``.
        noise_rirs: ``(B, K, C, L)``, padded to ``K`` rows.
        noise_rir_mask: ``(B, K)`` bool, which rows are real.
    Returns:
        ``(B, 2, C, L)``.
    """
    mask = noise_rir_mask.to(noise_rirs.dtype)[:, :, None, None]
    return torch.stack([source_rir, (noise_rirs * mask).sum(dim=1)], dim=1)


def mix_scene(
    dry: Tensor,
    source_rir: Tensor,
    noise: Tensor,
    noise_rirs: Tensor,
    noise_rir_mask: Tensor,
    snr_db: Tensor,
    sample_rate: int,
    active: Tensor | None = None,
) -> Tensor:
    """Render a batch of naturalistic scenes.

    Args:
        dry: ``(B, T)`` dry mono source clips.
        source_rir: ``(B, C, L)`` source RIRs.
        noise: ``(B, T)`` mono noise clips (zero outside ``active``).
        noise_rirs: ``(B, K, C, L)`` noise RIRs, padded to ``K`` rows.
        noise_rir_mask: ``(B, K)`` bool, which rows are real (1 = localized noise,
            3-5 = diffuse).
        snr_db: ``(B,)`` SNR in dB.
        sample_rate: samples per second (for the 0.2-s noise fades).
        active: optional ``(B, T)`` bool span where the noise is active (the whole clip when
            ``None``): the fades sit at its edges and the SNR energies are measured over it.
    Returns:
        ``(B, C, T)`` mixture, float32 (float64 for float64 input).
    """
    kernels = scene_kernels(source_rir, noise_rirs, noise_rir_mask)
    n = fft_length(dry.shape[-1], kernels.shape[-1])
    dtype = torch.float64 if torch.float64 in (dry.dtype, kernels.dtype) else torch.float32
    spectra = rir_spectrum(kernels.to(dtype), n)
    return mix_scene_spectra(dry, noise, spectra, n, snr_db, sample_rate, active)


def mix_scene_spectra(
    dry: Tensor,
    noise: Tensor,
    spectra: Tensor,
    n: int,
    snr_db: Tensor,
    sample_rate: int,
    active: Tensor | None = None,
) -> Tensor:
    """:func:`mix_scene` with the scene's impulse responses given as spectra, so that the
    clips of one scene share them.

    Args:
        dry: ``(B, T)``.
        noise: ``(B, T)``.
        spectra: ``(B, 2, C, n // 2 + 1)`` (or ``(1, ...)`` for one scene): the
            :func:`scene_kernels` through :func:`rir_spectrum` at ``n``.
        n: the FFT size, at least ``T + L - 1`` (:func:`fft_length`).
        snr_db: as for :func:`mix_scene`.
        sample_rate: as for :func:`mix_scene`.
        active: as for :func:`mix_scene`.
    Returns:
        ``(B, C, T)`` mixture, float32 (float64 for complex128 spectra).
    """
    noise = fade(noise, sample_rate, NOISE_FADE_SECONDS, active)
    wet = convolve_spectrum(torch.stack([dry, noise], dim=1), spectra, n)
    source, spatial_noise = wet.unbind(dim=1)
    return source + scale_noise_to_snr(source, spatial_noise, snr_db, active)

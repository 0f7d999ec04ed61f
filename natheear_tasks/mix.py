"""Scene mixing: convolution with room impulse responses, fades and SNR scaling.

Pure, batched, device-agnostic functions in the style of ``torchaudio.functional``; the
same code mixes Nat-HEAR tasks offline (:mod:`natheear_tasks.convert`) and naturalistic
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
    length = signal.shape[-1]
    dtype = torch.float64 if torch.float64 in (signal.dtype, rir.dtype) else torch.float32
    n = scipy.fft.next_fast_len(length + rir.shape[-1] - 1, real=True)
    spectrum = torch.fft.rfft(signal.to(dtype), n=n).unsqueeze(-2)
    spectrum = spectrum * torch.fft.rfft(rir.to(dtype), n=n)
    return torch.fft.irfft(spectrum, n=n)[..., :length]


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
    weight = 1.0 if active is None else active[:, None, :].to(source.dtype)
    e_source = (source.square() * weight).sum(dim=(1, 2))
    e_noise = (noise.square() * weight).sum(dim=(1, 2))
    ratio = e_source / e_noise.clamp(min=torch.finfo(e_noise.dtype).tiny)
    gain = torch.sqrt(ratio * 10.0 ** (-snr_db.to(ratio.dtype) / 10.0))
    gain = torch.where(e_noise > 0, gain, torch.zeros_like(gain))
    return noise * gain[:, None, None]


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
    noise = fade(noise, sample_rate, NOISE_FADE_SECONDS, active)
    mask = noise_rir_mask.to(noise_rirs.dtype)[:, :, None, None]
    # The same mono noise goes through every noise RIR: sum the RIRs, convolve once.
    noise_rir = (noise_rirs * mask).sum(dim=1)
    wet = fft_convolve(torch.stack([dry, noise], dim=1), torch.stack([source_rir, noise_rir], 1))
    source, spatial_noise = wet.unbind(dim=1)
    return source + scale_noise_to_snr(source, spatial_noise, snr_db, active)

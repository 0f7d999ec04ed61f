"""GRAM input features: log-mel spectrograms, Ambisonics intensity vectors, normalisation.

Pure, batched, device-agnostic functions in the style of ``torchaudio.functional``.
All functions take waveforms at :data:`SAMPLE_RATE` (32 kHz).

Frame convention: frame ``i`` is centred on sample ``i * HOP`` (``center=True`` with
reflect padding, as ``torchaudio.transforms.MelSpectrogram``). A waveform of ``T``
samples keeps the ``ceil(T / HOP)`` frames whose centre lies inside it, so a 2-s clip is
exactly 200 frames and a 10-s clip exactly 1000.
"""

from __future__ import annotations

import math

import torch
import torchaudio.functional as AF
from torch import Tensor

SAMPLE_RATE = 32000
N_FFT = 1024
HOP = 320
F_MIN = 50.0
F_MAX = 16000.0
N_MELS = 128
LOG_EPS = 1e-5
AMBISONICS_LOG_EPS = 1e-6
IV_EPS = 1e-6
NORM_EPS = 1e-5
# Audio of peak <= 2^40 has frame powers below 2^103 (Parseval: 1024 x 384 x peak^2, x 4
# for the Ambisonics energy, x 4 for resampler overshoot), far inside float32 (2^128).
SAFE_PEAK_LOG2 = 40

FEATURE_KINDS = ("mono", "binaural", "ambisonics")
AUDIO_CHANNELS = {"mono": 1, "binaural": 2, "ambisonics": 4}
FEATURE_CHANNELS = {"mono": 1, "binaural": 2, "ambisonics": 7}


def num_frames(num_samples: int) -> int:
    """Frames whose centre lies inside a waveform of ``num_samples`` samples at 32 kHz."""
    return math.ceil(num_samples / HOP)


def mel_filterbank(
    device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """GRAM's mel filterbank: 128 HTK mels over 50-16000 Hz, no normalisation.

    Returns:
        Tensor of shape ``(N_FFT // 2 + 1, N_MELS)`` = ``(513, 128)``.
    """
    fb = AF.melscale_fbanks(
        n_freqs=N_FFT // 2 + 1,
        f_min=F_MIN,
        f_max=F_MAX,
        n_mels=N_MELS,
        sample_rate=SAMPLE_RATE,
        norm=None,
        mel_scale="htk",
    )
    return fb.to(device=device, dtype=dtype)


def analysis_window(
    device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Periodic Hann window of ``N_FFT`` samples, shape ``(1024,)``."""
    return torch.hann_window(N_FFT, device=device, dtype=dtype)


def pad_for_frames(wave: Tensor) -> Tensor:
    """Reflect-pad a waveform by ``N_FFT // 2`` on both sides (the ``center=True`` padding).

    After padding, frame ``i`` covers samples ``[i * HOP, i * HOP + N_FFT)``, so any run of
    frames can be computed from a slice (see :func:`frame_slice`).

    Args:
        wave: ``(..., T)`` with ``T > N_FFT // 2``.
    Returns:
        ``(..., T + N_FFT)``.
    """
    shape = wave.shape
    flat = wave.reshape(-1, 1, shape[-1])
    padded = torch.nn.functional.pad(flat, (N_FFT // 2, N_FFT // 2), mode="reflect")
    return padded.reshape(*shape[:-1], shape[-1] + N_FFT)


def frame_slice(first: int, stop: int) -> slice:
    """Samples of a :func:`pad_for_frames` waveform that frames ``[first, stop)`` need."""
    return slice(first * HOP, (stop - 1) * HOP + N_FFT)


def stft(padded: Tensor, window: Tensor) -> Tensor:
    """Complex STFT of an already padded waveform (see :func:`pad_for_frames`).

    Args:
        padded: ``(..., L)`` with ``L >= N_FFT``.
        window: ``(N_FFT,)``.
    Returns:
        Complex tensor ``(..., 513, 1 + (L - N_FFT) // HOP)``.
    """
    shape = padded.shape
    spec = torch.stft(
        padded.reshape(-1, shape[-1]),
        n_fft=N_FFT,
        hop_length=HOP,
        win_length=N_FFT,
        window=window,
        center=False,
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    return spec.reshape(*shape[:-1], *spec.shape[-2:])


def mel_project(spec: Tensor, fb: Tensor) -> Tensor:
    """Project a linear-frequency spectrogram ``(..., 513, N)`` onto mels: ``(..., 128, N)``."""
    return torch.matmul(spec.transpose(-1, -2), fb).transpose(-1, -2)


def log_mel(spec: Tensor, fb: Tensor, eps: float = LOG_EPS, log2_gain: int = 0) -> Tensor:
    """``log(mel(|S|^2) + eps)`` of a complex STFT ``(..., 513, N)``; returns ``(..., 128, N)``.

    With ``log2_gain = k``: the log-mel of ``2^k S``, for an STFT of audio scaled down by
    ``2^-k`` so that its power stays finite in float32 (see :func:`safe_gain_exponent`):
    ``2k log 2 + log(mel + eps 4^-k)``, summed with ``logaddexp`` so that an ``eps 4^-k``
    below the float32 range still counts (a silent bin gives ``log eps``, not ``-inf``).
    """
    power = spec.real.square() + spec.imag.square()
    mel = mel_project(power, fb)
    if not log2_gain:
        return torch.log(mel + eps)
    shift = 2 * log2_gain * math.log(2.0)
    floor = torch.tensor(math.log(eps) - shift, dtype=mel.dtype, device=mel.device)
    return torch.logaddexp(torch.log(mel), floor) + shift


def intensity_vectors(spec: Tensor, fb: Tensor, log2_gain: int = 0) -> Tensor:
    """Mel-projected normalised active-intensity channels of a first-order Ambisonics STFT.

    ``IV_k = 2 Re(conj(S_0) S_k) / (eps + sum_c |S_c|^2)`` for ``k = 1, 2, 3`` in the
    channel order of the input (AmbiX files give Y, Z, X), projected through the mel
    filterbank without a log.

    Args:
        spec: complex ``(..., 4, 513, N)``, channel 0 omnidirectional (W).
        fb: ``(513, 128)``.
        log2_gain: the intensity vectors of ``2^k S`` (see :func:`log_mel`): ``eps`` becomes
            ``eps 4^-k``, kept at least the smallest normal float so that a silent bin
            gives 0, not 0 / 0 (which changes only bins over 600 dB below the peak).
    Returns:
        ``(..., 3, 128, N)``.
    """
    w = spec[..., :1, :, :]
    dipoles = spec[..., 1:, :, :]
    active = 2.0 * (w.real * dipoles.real + w.imag * dipoles.imag)
    energy = (spec.real.square() + spec.imag.square()).sum(dim=-3, keepdim=True)
    eps = IV_EPS
    if log2_gain:
        eps = max(IV_EPS * 4.0**-log2_gain, torch.finfo(energy.dtype).tiny)
    return mel_project(active / (eps + energy), fb)


def safe_gain_exponent(peak: float) -> int:
    """The ``k`` for which audio of ``peak`` times ``2^-k`` has a power that cannot overflow
    float32 (peak at most ``2^SAFE_PEAK_LOG2``); 0 for any audio up to that peak.

    Powers of two scale exactly, and :func:`features_from_padded` with ``log2_gain = k``
    gives the features of the unscaled audio.
    """
    if not peak > 2.0**SAFE_PEAK_LOG2:
        return 0
    return math.ceil(math.log2(peak)) - SAFE_PEAK_LOG2


def features_from_padded(
    padded: Tensor, kind: str, window: Tensor, fb: Tensor, log2_gain: int = 0
) -> Tensor:
    """Features of a padded waveform (see :func:`pad_for_frames`).

    Args:
        padded: ``(..., C, L)`` with C = 1 (mono), 2 (binaural) or 4 (ambisonics, W first).
        kind: one of :data:`FEATURE_KINDS`.
        log2_gain: ``padded`` is a waveform scaled by ``2^-log2_gain``; the features are those
            of the unscaled one (see :func:`safe_gain_exponent`).
    Returns:
        ``(..., C', 128, N)`` with C' = 1, 2 or 7 (4 log-mels then 3 intensity vectors).
    """
    spec = stft(padded, window)
    if kind == "ambisonics":
        logmel = log_mel(spec, fb, AMBISONICS_LOG_EPS, log2_gain)
        return torch.cat([logmel, intensity_vectors(spec, fb, log2_gain)], dim=-3)
    return log_mel(spec, fb, LOG_EPS, log2_gain)


def compute_features(wave: Tensor, kind: str) -> Tensor:
    """Features of whole waveforms at 32 kHz.

    Args:
        wave: ``(..., C, T)``; C must match ``kind`` (1, 2 or 4 channels).
        kind: ``"mono"``, ``"binaural"`` or ``"ambisonics"``.
    Returns:
        ``(..., C', 128, ceil(T / HOP))``.
    """
    if kind not in FEATURE_KINDS:
        raise ValueError(f"unknown feature kind {kind!r}; expected one of {FEATURE_KINDS}")
    if wave.shape[-2] != AUDIO_CHANNELS[kind]:
        raise ValueError(
            f"{kind} features need {AUDIO_CHANNELS[kind]} audio channels, got {wave.shape[-2]}"
        )
    window = analysis_window(wave.device, wave.dtype)
    fb = mel_filterbank(wave.device, wave.dtype)
    padded = pad_for_frames(wave)
    return features_from_padded(
        padded[..., frame_slice(0, num_frames(wave.shape[-1]))], kind, window, fb
    )


def normalize(x: Tensor, num_valid: Tensor | None = None, eps: float = NORM_EPS) -> Tensor:
    """Per-sample normalisation: a LayerNorm without affine over the whole ``(C, M, N)`` block.

    When ``num_valid`` is given, only the first ``num_valid[b]`` frames of sample ``b``
    enter the statistics and the frames after them are set to 0 (the normalised mean),
    so zero padding does not skew a partially filled chunk.

    Args:
        x: ``(B, C, M, N)``.
        num_valid: ``(B,)`` integer frame counts in ``[1, N]``, or None for all frames.
    Returns:
        ``(B, C, M, N)``.
    """
    if num_valid is None:
        return torch.nn.functional.layer_norm(x, x.shape[1:], eps=eps)
    frames = torch.arange(x.shape[-1], device=x.device)
    mask = (frames[None, :] < num_valid[:, None].to(x.device)).to(x.dtype)[:, None, None, :]
    count = mask.sum(dim=(1, 2, 3), keepdim=True) * (x.shape[1] * x.shape[2])
    mean = _sample_sums(x * mask) / count
    var = _sample_sums((x - mean).square() * mask) / count
    return (x - mean) * torch.rsqrt(var + eps) * mask


def _sample_sums(x: Tensor) -> Tensor:
    """``(B, C, M, N)`` to ``(B, 1, 1, 1)`` sums, the same bits whatever the thread count.

    A CPU reduction to a single value (one sample) is split across the intra-op threads,
    so its rounding depended on their number; summing each of the ``C * M`` rows first
    (one thread per row) and then the few row sums (too few to be split) does not.
    """
    return x.flatten(1, 2).sum(dim=-1).sum(dim=-1)[:, None, None, None]

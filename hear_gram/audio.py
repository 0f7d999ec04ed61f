"""Audio handed to the HEAR API: checks, layout and channel adaptation.

Layout rule (batched input only; a batch holds equal-length files):

* ``(B, T)`` is mono.
* ``(B, a, b)`` is channels-first ``(B, C, T)`` when ``a < b`` and channels-last
  ``(B, T, C)`` (heareval's layout for multi-channel wav files) when ``a > b``: the
  channel axis is the shorter one. Audio long enough to embed (at least
  :func:`min_samples`) is always longer than the 4 channels any rule accepts, so the rule
  is never ambiguous for valid input; ``a == b`` is rejected.

Channel adaptation (the model's audio channels: mono 1, binaural 2, Ambisonics 4):

=============  ===========  ==============================  ===========================
input          mono model   binaural model                  Ambisonics model
=============  ===========  ==============================  ===========================
1 channel      as is        copied to L and R               copied to W, Y, Z, X
2 channels     (L + R) / 2  as is                           error (no spatial mapping)
4 (AmbiX)      W            W copied to L and R             as is (ACN: W, Y, Z, X; SN3D)
=============  ===========  ==============================  ===========================

Copying mono to every channel matches GRAM pretraining, whose clean batches were dry
mono copied to all channels.
"""

from __future__ import annotations

import math

import torch
import torchaudio.functional as AF
from torch import Tensor

from hear_gram import features as feat

MAX_CHANNELS = 4
# Kaiser-windowed sinc, 16 zero crossings: flat to 12 kHz, -0.16 dB at 14 kHz (torchaudio's
# default, 6 crossings with a Hann window, loses 1.8 dB there), at the same cost.
RESAMPLER = {"lowpass_filter_width": 16, "resampling_method": "sinc_interp_kaiser", "beta": 8.6}


def min_samples(sample_rate: int) -> int:
    """Shortest input accepted at ``sample_rate``: one STFT window (1024 samples at 32 kHz)."""
    return math.ceil(feat.N_FFT * sample_rate / feat.SAMPLE_RATE)


def check_audio(audio: Tensor, sample_rate: int) -> Tensor:
    """Validate a HEAR batch and return it channels-first, ``(B, C, T)`` float32.

    Raises:
        TypeError: not a floating-point tensor.
        ValueError: wrong rank, empty, non-finite (also after the cast to float32), too
            short, or too many channels.
    """
    if not isinstance(audio, Tensor):
        raise TypeError(f"audio must be a torch.Tensor, got {type(audio).__name__}")
    if not audio.is_floating_point():
        raise TypeError(
            f"audio has dtype {audio.dtype}; pass floating-point samples in [-1, 1] "
            "(for int16 PCM, divide by 32768)"
        )
    layout = "(batch, samples): mono"
    if audio.dim() == 2:
        audio = audio[:, None, :]
    elif audio.dim() == 3:
        a, b = audio.shape[1:]
        if a == b:
            raise ValueError(
                f"audio of shape {tuple(audio.shape)} is ambiguous: pass (B, C, T) or (B, T, C) "
                "with more samples than channels"
            )
        if a > b:
            audio = audio.transpose(1, 2)
            layout = f"(batch, samples, channels), channels last, since {b} < {a}"
        else:
            layout = f"(batch, channels, samples), channels first, since {a} < {b}"
    else:
        raise ValueError(
            f"audio must be (batch, samples), (batch, channels, samples) or "
            f"(batch, samples, channels); got shape {tuple(audio.shape)}"
        )
    if audio.numel() == 0:
        raise ValueError(f"audio is empty (shape {tuple(audio.shape)})")
    channels, samples = audio.shape[1:]
    if channels > MAX_CHANNELS or channels == 3:
        raise ValueError(
            f"audio of shape {tuple(audio.shape)} was read as {layout} (the shorter axis is "
            f"the channels): {channels} channels; hear_gram takes 1 (mono), 2 (binaural / "
            "stereo) or 4 (first-order Ambisonics, AmbiX)"
        )
    shortest = min_samples(sample_rate)
    if samples < shortest:
        raise ValueError(
            f"audio was read as {layout} (the shorter axis is the channels): {samples} "
            f"samples, shorter than one analysis frame ({shortest} samples at {sample_rate} Hz)"
        )
    if not torch.isfinite(audio).all():
        raise ValueError("audio contains NaN or infinite samples")
    converted = audio.float()
    if not torch.isfinite(converted).all():
        peak = audio.abs().max().item()
        raise ValueError(
            f"audio peak {peak:.3g} is beyond the float32 range (3.4e+38) hear_gram computes "
            "in; scale it down (divide each file by its peak, for example)"
        )
    return converted


def adapt_channels(audio: Tensor, kind: str) -> Tensor:
    """Map ``(B, C, T)`` audio to the channels a model of feature ``kind`` takes.

    See the module docstring for the table. Returns ``(B, C_model, T)``.
    """
    channels = audio.shape[1]
    if kind == "mono":
        return audio[:, :1] if channels == 4 else audio.mean(dim=1, keepdim=True)
    if kind == "binaural":
        if channels == 2:
            return audio
        return audio[:, :1].expand(-1, 2, -1)
    if kind == "ambisonics":
        if channels == 2:
            raise ValueError(
                "a 2-channel (stereo / binaural) recording has no first-order Ambisonics "
                "equivalent; use a binaural model (hear_gram.gram_binaural) or pass 4-channel "
                "AmbiX (W, Y, Z, X) audio"
            )
        return audio if channels == 4 else audio.expand(-1, 4, -1)
    raise ValueError(f"unknown feature kind {kind!r}")


def resampled_length(num_samples: int, orig_freq: int, new_freq: int) -> int:
    """Samples of ``torchaudio.functional.resample`` output for ``num_samples`` input."""
    g = math.gcd(orig_freq, new_freq)
    return math.ceil(new_freq // g * num_samples / (orig_freq // g))


def resample_span(wave: Tensor, orig_freq: int, new_freq: int, start: int, stop: int) -> Tensor:
    """Samples ``[start, stop)`` of ``torchaudio.functional.resample(wave, orig_freq,
    new_freq, **RESAMPLER)``, computed from only the input they depend on.

    The resampler is a polyphase FIR filter: output block ``k`` (``new / gcd`` samples)
    reads input around sample ``k * orig / gcd``. The span's blocks are resampled from an
    input slice with a margin wider than the filter on each side (zeros beyond the file's
    ends, as in the whole-file call), so the result equals the whole-file result while the
    memory used follows the span, not the file.

    Args:
        wave: ``(..., T)``.
    Returns:
        ``(..., min(stop, L) - start)`` with ``L = resampled_length(T, orig, new)``.
    """
    if orig_freq == new_freq:
        return wave[..., start:stop]
    g = math.gcd(orig_freq, new_freq)
    orig, new = orig_freq // g, new_freq // g
    stop = min(stop, resampled_length(wave.shape[-1], orig_freq, new_freq))
    margin = orig * (4 * RESAMPLER["lowpass_filter_width"] + 4)
    first = max(0, start // new * orig - margin)
    last = min(wave.shape[-1], -(-stop // new) * orig + margin)
    out = AF.resample(wave[..., first:last], orig_freq, new_freq, **RESAMPLER)
    offset = first // orig * new
    return out[..., start - offset : stop - offset]

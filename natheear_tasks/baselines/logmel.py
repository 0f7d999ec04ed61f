"""A plain log-mel HEAR module: GRAM's own input features, no network.

The audio is mixed to mono with hear_gram's channel rule (the mean of 2 channels, W of
first-order Ambisonics), so the baseline hears no spatial cues. It is the lower reference
of a comparison: what a probe gets from the spectrogram alone.

* timestamp embeddings: GRAM's 128 log-mels (32 kHz, 10-ms hop) averaged over 4 frames,
  one 128-d vector every 40 ms;
* scene embeddings: the mean and standard deviation of the 10-ms log-mel frames over the
  whole clip (256-d).

Usage::

    hear-validator natheear_tasks.baselines.logmel
    python -m heareval.embeddings.runner natheear_tasks.baselines.logmel --tasks-dir tasks
"""

from __future__ import annotations

import torch
import torchaudio
from torch import Tensor, nn

from hear_gram import features as feat
from hear_gram.audio import adapt_channels, check_audio

FRAMES_PER_STEP = 4
DEFAULT_SAMPLE_RATE = 48000


class LogMelModel(nn.Module):
    """Log-mel features behind the HEAR attributes (no parameters)."""

    def __init__(self, sample_rate: int = DEFAULT_SAMPLE_RATE) -> None:
        super().__init__()
        if int(sample_rate) != sample_rate or sample_rate < 8000:
            raise ValueError(f"sample_rate must be an integer rate >= 8000 Hz, got {sample_rate!r}")
        self.sample_rate = int(sample_rate)
        self.timestamp_embedding_size = feat.N_MELS
        self.scene_embedding_size = 2 * feat.N_MELS
        self.resample = (
            torchaudio.transforms.Resample(self.sample_rate, feat.SAMPLE_RATE)
            if self.sample_rate != feat.SAMPLE_RATE
            else nn.Identity()
        )

    def log_mel(self, audio: Tensor) -> Tensor:
        """``(B, T)`` / ``(B, C, T)`` / ``(B, T, C)`` audio to mono log-mels ``(B, 128, N)``."""
        audio = check_audio(audio, self.sample_rate)
        mono = adapt_channels(audio, "mono")[:, 0]
        wave = self.resample(mono)
        return feat.compute_features(wave[:, None], "mono")[:, 0]


def load_model(model_file_path: str = "", sample_rate: int = DEFAULT_SAMPLE_RATE) -> LogMelModel:
    """The log-mel model; ``model_file_path`` must be empty (there are no weights)."""
    if model_file_path:
        raise ValueError(
            f"the log-mel baseline has no weights, got model_file_path={model_file_path!r}; "
            "leave it empty (no --model / -m)"
        )
    return LogMelModel(sample_rate).eval()


def get_timestamp_embeddings(audio: Tensor, model: LogMelModel) -> tuple[Tensor, Tensor]:
    """``(B, S, 128)`` log-mels averaged over 40-ms steps and ``(B, S)`` step centres in ms."""
    with torch.inference_mode():
        mel = model.log_mel(audio)
    frames = mel.shape[-1]
    steps = -(-frames // FRAMES_PER_STEP)
    padded = torch.nn.functional.pad(mel, (0, steps * FRAMES_PER_STEP - frames))
    counts = torch.full((steps,), float(FRAMES_PER_STEP), device=mel.device)
    counts[-1] = frames - (steps - 1) * FRAMES_PER_STEP
    pooled = padded.reshape(*mel.shape[:2], steps, FRAMES_PER_STEP).sum(-1) / counts
    hop_ms = 1000.0 * feat.HOP / feat.SAMPLE_RATE
    first = torch.arange(steps, device=mel.device, dtype=torch.float32) * FRAMES_PER_STEP
    centres = (first + (counts - 1) / 2) * hop_ms
    return pooled.transpose(1, 2).contiguous(), centres.expand(mel.shape[0], -1).contiguous()


def get_scene_embeddings(audio: Tensor, model: LogMelModel) -> Tensor:
    """``(B, 256)``: mean and standard deviation over time of each log-mel band."""
    with torch.inference_mode():
        mel = model.log_mel(audio)
    std = mel.std(dim=-1) if mel.shape[-1] > 1 else torch.zeros_like(mel[..., 0])
    return torch.cat([mel.mean(dim=-1), std], dim=-1)

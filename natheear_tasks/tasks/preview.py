"""A PNG of one clip so a person can see the scene: per-channel log-mel spectrograms and,
for first-order Ambisonics (AmbiX W, Y, Z, X), the direction of the active intensity over
time; for two channels, the interaural level difference. When the clip belongs to a
converted task, the true source direction (from ``scenes.jsonl``) is drawn too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from natheear_tasks.ambisonics import INTENSITY_BAND, active_intensity

CHANNEL_NAMES = {1: ["mono"], 2: ["left", "right"], 4: ["W", "Y", "Z", "X"]}


class PreviewError(ValueError):
    """A file that cannot be previewed."""


def intensity_directions(
    audio: np.ndarray, sample_rate: int, n_fft: int, hop: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Azimuth and elevation (degrees) of the active intensity per frame, and frame energy.

    Args:
        audio: ``(4, T)`` AmbiX (W, Y, Z, X).
    Returns:
        ``azimuth (N,)``, ``elevation (N,)``, ``energy (N,)`` (of W).
    """
    intensity, energy = active_intensity(
        torch.from_numpy(audio).float(), sample_rate, n_fft, hop, INTENSITY_BAND
    )
    x, y, z = intensity.numpy()
    azimuth = np.degrees(np.arctan2(y, x))
    elevation = np.degrees(np.arctan2(z, np.hypot(x, y)))
    return azimuth, elevation, energy.numpy()


def _true_direction(wav: Path) -> dict | None:
    """The source of ``<task>/<rate>/<split>/<file>``'s record in the task's scenes.jsonl
    (``<file>`` may hold folders); None for a clip of no converted task."""
    wav = wav.resolve()
    task = next((p for p in wav.parents if (p / "scenes.jsonl").is_file()), None)
    if task is None or len(wav.relative_to(task).parts) < 3:
        return None
    _, split, *file = wav.relative_to(task).parts
    with open(task / "scenes.jsonl") as f:
        for line in f:
            record = json.loads(line)
            if record["split"] == split and record["file"] == "/".join(file):
                return record["scene"].get("source")
    return None


def write_preview(wav: Path, out: Path) -> None:
    """Plot ``wav`` into the PNG ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        audio, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises several types for bad files
        raise PreviewError(f"cannot read {wav}: {error}") from error
    audio = audio.T
    channels = audio.shape[0]
    if channels not in CHANNEL_NAMES:
        raise PreviewError(f"{wav} has {channels} channels; previews take 1, 2 or 4")
    n_fft = 1 << int(np.ceil(np.log2(0.025 * rate)))
    hop = n_fft // 4
    mel = torchaudio.transforms.MelSpectrogram(rate, n_fft=n_fft, hop_length=hop, n_mels=64)
    logmel = torch.log10(mel(torch.from_numpy(audio)) + 1e-8).numpy()
    extra = 1 if channels in (2, 4) else 0
    rows = channels + extra * (2 if channels == 4 else 1)
    fig, axes = plt.subplots(rows, 1, figsize=(10, 1.6 * rows + 0.6), sharex=True, squeeze=False)
    axes = axes[:, 0]
    seconds = audio.shape[1] / rate
    top = logmel.max()
    for c, name in enumerate(CHANNEL_NAMES[channels]):
        axes[c].imshow(
            logmel[c],
            origin="lower",
            aspect="auto",
            extent=(0, seconds, 0, 64),
            vmin=top - 8,
            vmax=top,
            cmap="magma",
        )
        axes[c].set_ylabel(f"{name}\nmel bin")
    truth = _true_direction(wav)
    times = np.arange(logmel.shape[-1]) * hop / rate
    if channels == 4:
        azimuth, elevation, energy = intensity_directions(audio, rate, n_fft, hop)
        alpha = np.clip(energy / max(energy.max(), 1e-12), 0.05, 1.0) ** 0.5
        for ax, values, label, key, limit in (
            (axes[4], azimuth, "azimuth (deg)", "azimuth", 180),
            (axes[5], elevation, "elevation (deg)", "elevation", 90),
        ):
            ax.scatter(times[: len(values)], values, s=6, c="tab:blue", alpha=alpha[: len(values)])
            if truth is not None and key in truth:
                ax.axhline(truth[key], color="tab:red", lw=1.5, label="true source")
                ax.legend(loc="upper right", fontsize=8)
            ax.set_ylim(-limit, limit)
            ax.set_ylabel(label)
    elif channels == 2:
        power = 10**logmel
        ild = 10 * np.log10(power[0].sum(0) / np.maximum(power[1].sum(0), 1e-12))
        axes[2].plot(times, ild, color="tab:blue")
        axes[2].axhline(0, color="grey", lw=0.5)
        axes[2].set_ylabel("ILD L/R (dB)")
        if truth is not None and "azimuth" in truth:
            axes[2].set_title(
                f"true source: azimuth {truth['azimuth']:.0f} deg, elevation "
                f"{truth['elevation']:.0f} deg (positive azimuth: left)",
                fontsize=9,
            )
    axes[-1].set_xlabel("time (s)")
    fig.suptitle(f"{wav.name}: {channels} channel(s), {rate} Hz, {seconds:.2f} s", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)

"""The FOA channel order of a SELD dataset, told from its audio and labels.

In a window where one source is active, the active intensity points at the source. Channels
1-3 carry the intensity's components in the order of the file's convention: AmbiX (ACN)
files in y, z, x order, FuMa files in x, y, z order. For up to 200 single-source windows
(spread evenly over the dataset's list) the intensity summed over the window (200 Hz to
8 kHz) is read both ways and compared with the labelled direction: an order *agrees* when
its median error is below 30 degrees. The data tell the order when exactly one agrees.

The energy of the dipoles over that of W is recorded too: about 1 for SN3D (AmbiX) and 2
for FuMa, whose W carries 1/sqrt(2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch

from natheear_tasks.ambisonics import CHANNEL_ORDERS, INTENSITY_BAND, cross_spectra, stft_size
from natheear_tasks.tasks.seld_dataset import Dataset
from natheear_tasks.tasks.seld_plan import TaskPlan

AGREE_DEG = 30.0
MIN_WINDOWS = 8
MAX_WINDOWS = 200
# where each order keeps x, y, z among channels 1-3
AXES = {"acn": (2, 0, 1), "fuma": (0, 1, 2)}


@dataclass
class OrderCheck:
    """What the audio says about the channel order."""

    windows: int
    median_error_deg: dict[str, float]  # per order
    dipole_ratio: float | None

    @property
    def agreeing(self) -> list[str]:
        if self.windows < MIN_WINDOWS:
            return []
        return [o for o in CHANNEL_ORDERS if self.median_error_deg[o] < AGREE_DEG]

    def record(self) -> dict:
        return {
            "single_source_windows": self.windows,
            "median_error_deg": self.median_error_deg,
            "agree_below_deg": AGREE_DEG,
            "dipole_to_w_energy": self.dipole_ratio,
        }

    def describe(self) -> str:
        if self.windows < MIN_WINDOWS:
            return f"{self.windows} single-source windows (the check needs {MIN_WINDOWS})"
        errors = ", ".join(f"{o} {e:.1f}" for o, e in self.median_error_deg.items())
        return (
            f"median intensity-vs-label error over {self.windows} single-source windows: "
            f"{errors} degrees (agreement below {AGREE_DEG:.0f}); dipole/W energy "
            f"{self.dipole_ratio:.2f} (SN3D about 1, FuMa about 2)"
        )


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norm == 0:
        return 180.0
    return math.degrees(math.acos(max(-1.0, min(1.0, float(a @ b) / norm))))


def check_order(dataset: Dataset, localization: TaskPlan) -> OrderCheck:
    """Compare both readings of the channels with the labels of the localization windows."""
    items = localization.items
    if len(items) > MAX_WINDOWS:
        picks = np.linspace(0, len(items) - 1, MAX_WINDOWS).round().astype(int)
        items = [items[i] for i in sorted(set(picks.tolist()))]
    by_identity = {r.identity: r for r in dataset.recordings}
    labels = {(i.split, i.file): localization.labels[i.split][i.file] for i in items}
    errors: dict[str, list[float]] = {o: [] for o in CHANNEL_ORDERS}
    energy = np.zeros(4)
    for item in items:
        recording = by_identity[item.recording]
        rate = recording.sample_rate
        start = round(item.start * rate)
        stop = min(recording.samples, start + round(item.seconds * rate))
        audio, _ = sf.read(
            str(recording.wav), start=start, stop=stop, dtype="float64", always_2d=True
        )
        audio = torch.from_numpy(audio.T.copy())
        energy += audio.square().sum(dim=-1).numpy()
        n_fft = stft_size(rate)
        band = (INTENSITY_BAND[0], min(INTENSITY_BAND[1], 0.45 * rate))
        cross, _ = cross_spectra(audio, rate, n_fft, n_fft // 2, band)
        total = cross.sum(dim=-1).numpy()
        truth = np.asarray(labels[item.split, item.file])
        for order, axes in AXES.items():
            errors[order].append(_angle(total[list(axes)], truth))
    medians = {o: round(float(np.median(e)), 2) if e else 180.0 for o, e in errors.items()}
    ratio = round(float(energy[1:].sum() / energy[0]), 3) if energy[0] > 0 else None
    return OrderCheck(len(items), medians, ratio)

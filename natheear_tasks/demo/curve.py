"""The main job's learning curve: localization error of the pretrained GRAM against its
pretraining steps, with 95 % intervals, as a PNG.

Step 0 is the untrained twin (the run's own initial weights), the last step the trained
model; the steps between are the run's intermediate checkpoints. Each point is the mean
direction-of-arrival error over the test clips with a percentile bootstrap interval over
the clips; the log-mel baseline (mono: no spatial cues) and the best constant guess are
drawn as references.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from natheear_tasks.evaluation import intervals
from natheear_tasks.evaluation.report import label_panel, save_png

SEED = 0


def mean_interval(errors: list[float]) -> tuple[float, float, float]:
    """Mean of ``errors`` and its 95 % percentile bootstrap interval over the items
    (:data:`intervals.RESAMPLES` resamples, seeded)."""
    values = np.asarray(errors, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no errors to average")
    rng = np.random.default_rng(SEED)
    picks = rng.integers(0, values.size, (intervals.RESAMPLES, values.size))
    low, high = intervals.percentile_interval(values[picks].mean(axis=1))
    return float(values.mean()), low, high


def plot(
    curves: dict[str, dict[int, list[float]]],
    references: dict[str, dict[str, list[float]]],
    path: Path,
) -> Path:
    """Write the learning curve PNG.

    Args:
        curves: ``{task: {step: per-clip DoA errors}}`` of the pretrained model.
        references: ``{task: {label: per-clip DoA errors}}`` drawn as horizontal bands.
        path: the PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.6 * len(curves), 3.6), squeeze=False)
    for ax, (task, by_step) in zip(axes[0], curves.items(), strict=True):
        steps = sorted(by_step)
        points = np.array([mean_interval(by_step[s]) for s in steps])
        ax.errorbar(
            steps, points[:, 0], yerr=[points[:, 0] - points[:, 1], points[:, 2] - points[:, 0]],
            marker="o", capsize=3, label="GRAM (step 0: untrained twin)",
        )  # fmt: skip
        for i, (label, errors) in enumerate(references.get(task, {}).items()):
            mean, low, high = mean_interval(errors)
            ax.axhline(mean, color=f"C{i + 1}", linestyle="--", linewidth=1, label=label)
            ax.axhspan(low, high, color=f"C{i + 1}", alpha=0.12)
        label_panel(ax, task, "pretraining step", "mean DoA error (degrees), 95 % interval")
    fig.tight_layout()
    return save_png(fig, path)

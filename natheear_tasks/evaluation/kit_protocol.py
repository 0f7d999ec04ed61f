"""``evaluate --protocol listen-eval-kit``: the probes trained, decoded and scored as the GRAM
authors' evaluation kit does, so that a score can be set beside the paper's.

* **SELD tasks** (``accdoa``): each embedding step is one sample; its target is, per class,
  the unit vector of an event of that class active at the step's timestamp (the kit's
  interval tree: ``start <= t < end + 0.0001`` ms; with two, the later in the file), zero
  for inactive classes. The probe is heareval's predictor with a ``3 C`` output through
  Tanh, trained with MSE (single-track ACCDOA, no ADPIT); a class is active in a step when
  its vector is longer than 0.5, its direction the vector's; no post-processing. Reference
  and prediction are compared at the steps, in 1-s blocks of ``1000 // step`` steps (the
  kit's ``pred_timestamp_per_second``), with the DCASE SELD metrics
  (:mod:`~natheear_tasks.evaluation.seld_metrics`) and the task's threshold and averaging.
* **Localization tasks**: the probe is the direction probe (the kit's
  ``cartesian-regression``: Tanh, MSE against ``[x, y, z]``); model selection follows the
  task's first localization metric in the kit's sense (``DOA``: the mean of
  ``2 arcsin(|t - p| / 2)`` over the raw outputs, its ``nan_to_num`` quirk included;
  ``MAE``: the mean angle of the normalised outputs; ``DOE``: their median), and the test
  scores carry ``DOA``, ``MAE`` and ``DOE``.
* **Classification and event tasks**: heareval's predictions runner, as in both protocols.

Seeds, the grid points searched and the 95 % intervals are this package's in both
protocols (the kit seeds once per run, so its scores cannot be replayed bit for bit).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from natheear_tasks.evaluation import determinism, doa_probe, probe_training
from natheear_tasks.evaluation.probe_training import FitResult, fold_name, predict
from natheear_tasks.evaluation.seld_metrics import SeldCounts, count_file, seld_scores
from natheear_tasks.evaluation.seld_probe import (
    METRIC,
    SCORES_NAME,
    counts_json,
    primary_metric,
    scores_or_none,
)
from natheear_tasks.formats.dcase_frames import FrameRow, azimuth_elevation
from natheear_tasks.formats.published import SeldEvent, SeldFormat
from natheear_tasks.tasks.seld_folder import read_task
from natheear_tasks.tasks.taskdir import atomic_write_json

NAME = "listen-eval-kit"
OURS = "natheear"
PROTOCOLS = (OURS, NAME)
ACTIVE_NORM = 0.5
END_SLACK_MS = 0.0001  # the kit's interval tree ends events just after their end
KIT_LOCALIZATION = ("DOA", "MAE", "DOE")


def kit_localization_scores(prediction: Tensor, target: Tensor) -> dict[str, float]:
    """The kit's ``DOA``, ``MAE`` and ``DOE`` of raw ``(N, 3)`` outputs and unit targets."""
    p, t = prediction.double().numpy(), target.double().numpy()
    with np.errstate(invalid="ignore"):  # a chord over 2 is NaN, kept as the kit keeps it
        chord = 2 * np.arcsin(np.sqrt(((t - p) ** 2).sum(axis=1)) / 2) * (180 / np.pi)
    chord = np.nan_to_num(chord, nan=0.0)  # the kit's nan_to_num(x, 180): 180 is `copy`
    angles = doa_probe.doa_error_deg(prediction, target).double().numpy()
    return {
        "DOA": float(chord.mean()),
        "MAE": float(angles.mean()),
        "DOE": float(np.median(angles)),
    }


def kit_selection_metric(metadata: dict) -> str:
    """The kit's name of the localization metric that selects the probe: the first of the
    task's ``evaluation`` the kit scores localization with (``DOA`` by default)."""
    named = [m for m in metadata.get("evaluation") or [] if m in KIT_LOCALIZATION]
    mapped = {"mean_doa_error_deg": "MAE", "median_doa_error_deg": "DOE"}
    ours = [mapped[m] for m in metadata.get("evaluation") or [] if m in mapped]
    return (named or ours or ["DOA"])[0]


def score_localization_task(
    embed_task_dir: Path,
    grid: str = "default",
    grid_points: int = 8,
    seed: int = determinism.DEFAULT_SEED,
    model: str = "",
) -> dict:
    """The direction probe selected on the kit's localization metric; the test scores also
    carry the kit's ``DOA``, ``MAE`` and ``DOE``."""
    metadata = json.loads((embed_task_dir / "task_metadata.json").read_text())
    metric = kit_selection_metric(metadata)
    return doa_probe.score_task(
        embed_task_dir, grid, grid_points, seed, model,
        selection=lambda p, t: kit_localization_scores(p, t)[metric],
        extra_scores=kit_localization_scores,
        protocol={"protocol": NAME, "kit_selection_metric": metric},
    )  # fmt: skip


class AccdoaProbe(nn.Module):
    """heareval's fully connected predictor with a single-track ACCDOA Tanh head."""

    def __init__(self, in_dim: int, num_classes: int, conf: dict) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.hidden, width, last = doa_probe.hidden_layers(in_dim, conf)
        self.projection = nn.Linear(width, 3 * num_classes)
        conf["initialization"](self.projection.weight, gain=nn.init.calculate_gain(last))

    def forward(self, x: Tensor) -> Tensor:
        """``(N, D)`` step embeddings to ``(N, C, 3)`` vectors."""
        return torch.tanh(self.projection(self.hidden(x))).view(len(x), self.num_classes, 3)


def step_targets(events: list[SeldEvent], timestamps: np.ndarray, classes: int) -> Tensor:
    """``(S, C, 3)`` the kit's targets at the step timestamps (module docstring)."""
    y = torch.zeros(len(timestamps), classes, 3)
    for event in events:
        at = (timestamps >= event.start) & (timestamps < event.end + END_SLACK_MS)
        y[torch.from_numpy(np.flatnonzero(at)), event.cls] = torch.tensor(event.direction)
    return y


def step_rows(vectors: Tensor) -> list[FrameRow]:
    """The rows of ``(S, C, 3)`` ACCDOA vectors: a class is active in a step when its
    vector is longer than 0.5 (source 0, the vector's direction)."""
    values = vectors.double().numpy()
    active = np.linalg.norm(values, axis=-1) > ACTIVE_NORM
    return [
        FrameRow(int(step), int(cls), 0, *azimuth_elevation(values[step, cls]))
        for step, cls in zip(*np.nonzero(active), strict=True)
    ]


class StepSplit:
    """The step embeddings, targets and references of the files of one or more splits."""

    def __init__(self, names: list[str], xs: list[Tensor], ys: list[Tensor], steps_1s: int):
        self.names, self.steps_1s = names, steps_1s
        self.x, self.y = torch.cat(xs), torch.cat(ys)
        self.sizes = [len(x) for x in xs]
        self.reference = [step_rows(y) for y in ys]

    @staticmethod
    def concat(splits: list[StepSplit]) -> StepSplit:
        out = StepSplit.__new__(StepSplit)
        out.names = [n for s in splits for n in s.names]
        out.x, out.y = torch.cat([s.x for s in splits]), torch.cat([s.y for s in splits])
        out.sizes = [n for s in splits for n in s.sizes]
        out.reference = [r for s in splits for r in s.reference]
        out.steps_1s = splits[0].steps_1s
        return out

    def file_counts(self, model: nn.Module, fmt: SeldFormat, batch_size: int) -> list[SeldCounts]:
        """The SELD counts of every file, at the steps, up to its last reference step."""
        output = predict(model, self.x, batch_size)
        counts, first = [], 0
        for size, reference in zip(self.sizes, self.reference, strict=True):
            rows = step_rows(output[first : first + size])
            first += size
            counts.append(
                count_file(
                    reference, rows, model.num_classes, None, fmt.doa_threshold, self.steps_1s
                )  # fmt: skip
            )
        return counts


def load_step_split(
    embed_task_dir: Path, split: str, fmt: SeldFormat, events: dict[str, list[SeldEvent]]
) -> StepSplit:
    """One split's step embeddings (not pooled) and the kit's step targets of its files'
    ``events`` (checked by :func:`~natheear_tasks.tasks.seld_folder.read_task`)."""
    names, xs, ys, steps = [], [], [], []
    for name in sorted(events):
        base = embed_task_dir / split / name
        embedding = np.load(f"{base}.embedding.npy")
        timestamps = np.asarray(json.loads(Path(f"{base}.timestamps.json").read_text()), float)
        if embedding.ndim != 2 or len(embedding) != len(timestamps) or len(timestamps) < 2:
            raise ValueError(f"{base}: the kit's SELD probe needs (S >= 2, D) step embeddings")
        names.append(name)
        xs.append(torch.from_numpy(embedding.astype(np.float32)))
        ys.append(step_targets(events[name], timestamps, len(fmt.classes)))
        steps.append(float(np.mean(np.diff(timestamps))))
    steps_1s = max(1, int(1000 // np.mean(steps)))
    return StepSplit(names, xs, ys, steps_1s)


def score_seld_task(
    embed_task_dir: Path,
    task_dir: Path,
    grid: str = "default",
    grid_points: int = 8,
    seed: int = determinism.DEFAULT_SEED,
    model: str = "",
) -> dict:
    """Score one SELD task as the kit does and write the SELD probe's scores file (the same
    layout: ``test``, ``folds``, ``file_counts``), marked ``"protocol": "listen-eval-kit"``."""
    metadata = json.loads((task_dir / "task_metadata.json").read_text())
    primary_metric(metadata)
    task = read_task(task_dir, metadata)
    fmt, classes = task.fmt, len(task.fmt.classes)
    splits = {
        split: load_step_split(embed_task_dir, split, fmt, events)
        for split, events in task.events.items()
    }

    def gather(names: list[str]) -> StepSplit:
        return StepSplit.concat([splits[n] for n in names])

    def fit_split(p: dict[str, list[str]], conf: dict, probe_seed: int) -> FitResult:
        train, valid = gather(p["train"]), gather(p["valid"])

        def validation(probe: nn.Module) -> float:
            counts = valid.file_counts(probe, fmt, conf["batch_size"])
            return seld_scores(SeldCounts.total(counts, classes), fmt.average).seld

        return probe_training.fit(
            lambda: AccdoaProbe(train.x.shape[1], classes, conf),
            train.x,
            lambda output, index: nn.functional.mse_loss(output, train.y[index]),
            validation,
            conf,
            probe_seed,
        )

    plan = doa_probe.data_splits(metadata)
    task_grid = metadata.get("evaluation_params", {}).get("task_specific_param_grid")
    confs = doa_probe.grid_confs(grid, grid_points, task_grid, seed)
    with determinism.probe_threads():
        fitted = probe_training.search(plan, confs, fit_split, seed, embed_task_dir.name, model)
        folds, per_file = {}, {}
        for p, result in zip(plan, fitted, strict=True):
            test = gather(p["test"])
            counts = test.file_counts(result.model, fmt, fitted[0].conf["batch_size"])
            folds[fold_name(p)] = {
                **scores_or_none(SeldCounts.total(counts, classes), fmt.average),
                f"validation_{METRIC}": result.validation,
                "epoch": result.epoch,
                "files": test.names,
            }
            per_file.update(zip(test.names, counts, strict=True))
    scores = {
        "metric": METRIC,
        "protocol": NAME,
        "test": {
            **scores_or_none(SeldCounts.total(list(per_file.values()), classes), fmt.average),
            "files": len(per_file),
        },  # fmt: skip
        "folds": folds,
        "hparams": {k: determinism.json_value(v) for k, v in fitted[0].conf.items()},
        "grid": grid,
        "grid_points": grid_points,
        "seed": seed,
        "steps_per_block": splits[plan[0]["test"][0]].steps_1s,
        "scoring": {"doa_threshold": fmt.doa_threshold, "average": fmt.average},
        "file_counts": {name: counts_json(c) for name, c in per_file.items()},
        "frames_from": "embedding steps (listen-eval-kit)",
    }
    atomic_write_json(embed_task_dir / SCORES_NAME, scores, indent=2)
    return scores

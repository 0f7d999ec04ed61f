"""Localization probe: a shallow MLP on scene embeddings predicting the source direction.

The probe mirrors heareval's downstream predictor so that localization scores come from the
same search effort as the classification scores: the same hidden blocks (Linear, BatchNorm,
Dropout, ReLU), the same hyper-parameter grids (:data:`GRIDS`, equal to heareval's
``PARAM_GRID``, ``FAST_PARAM_GRID`` and ``FASTER_PARAM_GRID``), a seeded random choice of
``grid_points`` grid points (heareval's default 8), model selection and early stopping on the
validation split (checked every ``check_val_every_n_epoch`` epochs, stopping after
``patience`` checks without improvement, keeping the best weights), and the same splits
(train/valid/test, or k folds: fold i tests, fold i+1 validates, the rest trains; the grid
search runs on the first split and the chosen point is retrained on the others).

What differs is the head and the score: a Tanh output of 3 units trained with MSE against
the unit direction vector ``[x, y, z]`` (x forward, y left, z up; labels given as
``[azimuth, elevation]`` in degrees are turned into it), and the direction-of-arrival (DoA)
error, the angle between the normalised prediction and the truth, in degrees. The mean and
the median DoA error are reported; the task's primary metric (the first localization
metric of its ``evaluation`` list, the kit's ``MAE`` and ``DOE`` included) selects the
model.

Every probe is trained from its own seed, derived from the task, the model, the test fold
and the grid point, with one intra-op thread (:mod:`natheear_tasks.evaluation.determinism`),
so the same embeddings give the same scores whatever the process's thread count.

Embeddings are read from heareval's embeddings-runner output (the per-file
``<split>/<file>.embedding.npy`` and ``.target-labels.json``), so no pickle is opened.
Split and file names come from the task's files and become paths only once
:func:`natheear_tasks.paths.check_name` accepts them.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from natheear_tasks.evaluation import determinism, probe_training
from natheear_tasks.evaluation.probe_training import FitResult, fold_name, predict
from natheear_tasks.formats import published
from natheear_tasks.paths import check_name
from natheear_tasks.tasks.taskdir import atomic_write_json

# Scores of a localization task, each a reduction of the per-file DoA errors; the task's
# primary metric (the first of its metadata's "evaluation") drives model selection.
METRICS = {
    "mean_doa_error_deg": lambda errors: errors.mean().item(),
    "median_doa_error_deg": lambda errors: errors.median().item(),
}
SCORES_NAME = "test.doa-scores.json"
SEED = determinism.DEFAULT_SEED

# heareval.predictions.task_predictions.PARAM_GRID (and its fast / faster variants);
# tests/test_doa_probe.py checks that they stay equal.
_DEFAULT_GRID = {
    "hidden_layers": [1, 2],
    "hidden_dim": [1024],
    "dropout": [0.1],
    "lr": [3.2e-3, 1e-3, 3.2e-4, 1e-4],
    "patience": [20],
    "max_epochs": [500],
    "check_val_every_n_epoch": [3],
    "batch_size": [1024],
    "hidden_norm": [nn.BatchNorm1d],
    "norm_after_activation": [False],
    "embedding_norm": [nn.Identity],
    "initialization": [nn.init.xavier_uniform_, nn.init.xavier_normal_],
    "optim": [torch.optim.Adam],
}
GRIDS: dict[str, dict[str, list]] = {
    "default": _DEFAULT_GRID,
    "fast": {**_DEFAULT_GRID, "max_epochs": [10, 50], "check_val_every_n_epoch": [3, 10]},
    "faster": {
        **_DEFAULT_GRID,
        "hidden_layers": [0, 1],
        "hidden_dim": [64, 128],
        "patience": [1, 3],
        "max_epochs": [10],
        "check_val_every_n_epoch": [1],
    },
}


@dataclass
class Split:
    """Scene embeddings of one split: file names, ``(N, D)`` features, ``(N, 3)`` unit targets."""

    names: list[str]
    x: Tensor
    y: Tensor

    @staticmethod
    def concat(splits: list[Split]) -> Split:
        return Split(
            [n for s in splits for n in s.names],
            torch.cat([s.x for s in splits]),
            torch.cat([s.y for s in splits]),
        )


def doa_error_deg(prediction: Tensor, target: Tensor) -> Tensor:
    """Angle between predicted and true directions in degrees.

    Args:
        prediction: ``(N, 3)``, any length (normalised here; a zero vector counts as 90°
            from every direction).
        target: ``(N, 3)`` unit vectors.
    Returns:
        ``(N,)`` errors in ``[0, 180]``.
    """
    p = nn.functional.normalize(prediction.double(), dim=-1)
    t = nn.functional.normalize(target.double(), dim=-1)
    cos = (p * t).sum(dim=-1).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cos)).float()


def hidden_layers(in_dim: int, conf: dict) -> tuple[nn.Sequential, int, str]:
    """heareval's predictor's hidden blocks (Linear, norm, Dropout, ReLU) for a grid point:
    the blocks, their output width and the last nonlinearity (for the head's init gain)."""
    layers: list[nn.Module] = []
    width, last = in_dim, "linear"
    for _ in range(conf["hidden_layers"]):
        linear = nn.Linear(width, conf["hidden_dim"])
        conf["initialization"](linear.weight, gain=nn.init.calculate_gain(last))
        layers.append(linear)
        if not conf["norm_after_activation"]:
            layers.append(conf["hidden_norm"](conf["hidden_dim"]))
        layers += [nn.Dropout(conf["dropout"]), nn.ReLU()]
        if conf["norm_after_activation"]:
            layers.append(conf["hidden_norm"](conf["hidden_dim"]))
        width, last = conf["hidden_dim"], "relu"
    return nn.Sequential(*layers), width, last


class DoaProbe(nn.Module):
    """heareval's fully connected predictor with a 3-unit Tanh head (the direction)."""

    def __init__(self, in_dim: int, conf: dict) -> None:
        super().__init__()
        self.hidden, width, last = hidden_layers(in_dim, conf)
        self.projection = nn.Linear(width, 3)
        conf["initialization"](self.projection.weight, gain=nn.init.calculate_gain(last))

    def forward(self, x: Tensor) -> Tensor:
        """``(N, D)`` embeddings to ``(N, 3)`` directions in ``[-1, 1]^3``."""
        return torch.tanh(self.projection(self.hidden(x)))


Selection = Callable[[Tensor, Tensor], float]  # (raw outputs, unit targets) -> score


def fit(
    train: Split,
    valid: Split,
    conf: dict,
    metric: str = "mean_doa_error_deg",
    seed: int = SEED,
    selection: Selection | None = None,
) -> FitResult:
    """Train one probe with early stopping on the validation ``metric`` (or on
    ``selection`` of the raw outputs; seeded; the loop of
    :func:`natheear_tasks.evaluation.probe_training.fit`)."""
    reduce = METRICS[metric]

    def validation(model: nn.Module) -> float:
        output = predict(model, valid.x, conf["batch_size"])
        return selection(output, valid.y) if selection else reduce(doa_error_deg(output, valid.y))

    return probe_training.fit(
        lambda: DoaProbe(train.x.shape[1], conf),
        train.x,
        lambda output, index: nn.functional.mse_loss(output, train.y[index]),
        validation,
        conf,
        seed,
    )


def primary_metric(metadata: dict) -> str:
    """The task's primary localization metric: the first localization metric of its
    ``evaluation`` (ours, or the kit's ``MAE``, ``DOA`` (mean) and ``DOE`` (median)); the
    mean DoA error when it names none (a published task may keep its source's metrics)."""
    named = [published.our_metric(m) for m in metadata.get("evaluation") or []]
    return next((m for m in named if m in METRICS), "mean_doa_error_deg")


def grid_confs(
    grid: str, grid_points: int, task_grid: dict | None = None, seed: int = SEED
) -> list[dict]:
    """The first ``grid_points`` points of ``GRIDS[grid]`` after a seeded shuffle.

    ``task_grid`` replaces some of the grid's values, as a task's
    ``evaluation_params.task_specific_param_grid`` does in heareval.
    """
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; choose one of {sorted(GRIDS)}")
    if grid_points < 1:
        raise ValueError(f"grid_points must be at least 1, got {grid_points}")
    full = {**GRIDS[grid], **(task_grid or {})}
    keys = sorted(full)
    confs = [
        dict(zip(keys, values, strict=True))
        for values in itertools.product(*(full[k] for k in keys))
    ]
    random.Random(seed).shuffle(confs)
    return confs[:grid_points]


def data_splits(metadata: dict) -> list[dict[str, list[str]]]:
    """heareval's train/valid/test split names for a task's ``split_mode``."""
    mode = metadata["split_mode"]
    if mode == "trainvaltest":
        return [{"train": ["train"], "valid": ["valid"], "test": ["test"]}]
    if mode in ("new_split_kfold", "presplit_kfold"):
        folds = sorted(metadata["splits"])
        if len(folds) < 3:
            raise ValueError(f"k-fold tasks need at least 3 folds, got {folds}")
        return [
            {
                "train": [f for f in folds if f not in (test, folds[(i + 1) % len(folds)])],
                "valid": [folds[(i + 1) % len(folds)]],
                "test": [test],
            }
            for i, test in enumerate(folds)
        ]
    raise ValueError(f"unknown split_mode {mode!r} in task metadata")


def fit_and_score(
    splits: dict[str, Split],
    metadata: dict,
    grid: str = "default",
    grid_points: int = 8,
    seed: int = SEED,
    task: str | None = None,
    model: str = "",
    selection: Selection | None = None,
    extra_scores: Callable[[Tensor, Tensor], dict[str, float]] | None = None,
) -> dict:
    """Grid search on the first data split, retrain on the others, score every test split.

    ``selection`` replaces the primary metric in model selection and ``extra_scores`` adds
    scores of the raw test outputs (the kit's protocol,
    :mod:`natheear_tasks.evaluation.kit_protocol`).

    Each probe is trained from :func:`~natheear_tasks.evaluation.determinism.probe_seed`
    of ``seed``, ``task`` (default: the metadata's ``task_name``), ``model``, the test fold
    and the grid point, with :data:`~natheear_tasks.evaluation.determinism.PROBE_THREADS`
    intra-op thread(s).

    Returns:
        JSON-ready scores: ``test`` (mean and median DoA error over all test files, in
        degrees), ``folds`` (per test split, with its ``files``), ``hparams`` (the chosen
        grid point), ``seed`` and ``errors_deg`` (per test file).
    """
    plan = data_splits(metadata)
    metric = primary_metric(metadata)
    task = metadata.get("task_name", "") if task is None else task

    def gather(names: list[str]) -> Split:
        return Split.concat([splits[n] for n in names])

    def fit_split(p: dict[str, list[str]], conf: dict, probe_seed: int) -> FitResult:
        return fit(gather(p["train"]), gather(p["valid"]), conf, metric, probe_seed, selection)

    task_grid = metadata.get("evaluation_params", {}).get("task_specific_param_grid")
    confs = grid_confs(grid, grid_points, task_grid, seed)
    with determinism.probe_threads():
        fitted = probe_training.search(plan, confs, fit_split, seed, task, model)
        best = fitted[0]
        folds, errors, outputs, targets = {}, {}, [], []
        for p, result in zip(plan, fitted, strict=True):
            test = gather(p["test"])
            output = predict(result.model, test.x, best.conf["batch_size"])
            error = doa_error_deg(output, test.y)
            outputs.append(output)
            targets.append(test.y)
            folds[fold_name(p)] = {
                **{name: reduce(error) for name, reduce in METRICS.items()},
                **(extra_scores(output, test.y) if extra_scores else {}),
                f"validation_{metric}": result.validation,
                "epoch": result.epoch,
                "files": test.names,
            }
            errors.update(zip(test.names, error.tolist(), strict=True))
        all_errors = torch.tensor(list(errors.values()))
        test_scores = {name: reduce(all_errors) for name, reduce in METRICS.items()}
        if extra_scores:
            test_scores.update(extra_scores(torch.cat(outputs), torch.cat(targets)))
    return {
        "metric": metric,
        "test": {**test_scores, "files": len(errors)},
        "folds": folds,
        "hparams": {k: determinism.json_value(v) for k, v in best.conf.items()},
        "grid": grid,
        "grid_points": grid_points,
        "seed": seed,
        "errors_deg": errors,
    }


def load_split(embed_task_dir: Path, split: str) -> Split:
    """Scene embeddings and unit targets of one split from heareval's embeddings output.

    Raises:
        ValueError: a split or file name that is not a plain name inside the folder (they
            come from the task's files), or a split without files.
    """
    split = check_name(split, "split name", single=True)
    labels = json.loads((embed_task_dir / f"{split}.json").read_text())
    if not isinstance(labels, dict) or not labels:
        raise ValueError(f"split {split!r} of {embed_task_dir} holds no files")
    names = sorted(labels)
    for name in names:
        check_name(name, f"{split}.json: file name")
    x = np.stack([np.load(embed_task_dir / split / f"{n}.embedding.npy") for n in names])
    if x.ndim != 2:
        raise ValueError(
            f"{embed_task_dir}: localization needs scene embeddings (one vector per file), "
            f"got arrays of shape {x.shape[1:]}; set embedding_type 'scene' in the task"
        )
    y = [published.direction_of(labels[n]) for n in names]
    return Split(names, torch.from_numpy(x).float(), torch.tensor(y, dtype=torch.float32))


def score_task(
    embed_task_dir: Path,
    grid: str = "default",
    grid_points: int = 8,
    seed: int = SEED,
    model: str = "",
    selection: Selection | None = None,
    extra_scores: Callable[[Tensor, Tensor], dict[str, float]] | None = None,
    protocol: dict | None = None,
) -> dict:
    """Score one localization task's embeddings and write :data:`SCORES_NAME` beside them
    (the task is named by its folder, as for heareval's probes); ``protocol`` is recorded
    in the file."""
    metadata = json.loads((embed_task_dir / "task_metadata.json").read_text())
    if not isinstance(metadata.get("splits"), list):
        raise ValueError(f"{embed_task_dir}/task_metadata.json: 'splits' must be a list of names")
    splits = {s: load_split(embed_task_dir, s) for s in metadata["splits"]}
    scores = fit_and_score(
        splits, metadata, grid, grid_points, seed, embed_task_dir.name, model, selection,
        extra_scores,
    )  # fmt: skip
    scores.update(protocol or {})
    atomic_write_json(embed_task_dir / SCORES_NAME, scores, indent=2)
    return scores

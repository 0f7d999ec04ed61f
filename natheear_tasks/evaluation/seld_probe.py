"""SELD probe: a frame-wise MLP on timestamp embeddings with multi-ACCDOA output, trained
with ADPIT and scored with the DCASE SELD metrics.

Input: heareval's embeddings-runner output for a SELD task (``"prediction_type": "accdoa"``,
the published format: :mod:`natheear_tasks.formats.published`): per file
``<split>/<file>.embedding.npy`` ``(S, D)`` and ``<file>.timestamps.json`` (``S`` step
centres in ms), and the task folder's events, turned into label-frame rows (frames of
``1000 / _nb_label_frames_1s`` ms, 100 ms by default).

* **Pooling to label frames.** Frame ``k`` covers ``[k, k + 1)`` frame lengths of its file;
  its input is the mean of the embeddings whose timestamps fall in it. A frame without one
  (steps coarser than the frames) takes the embedding interpolated linearly at its centre
  between the neighbouring steps (the first or last step beyond them). hear_gram's GRAM
  and CAT steps are 80 ms: every 100-ms frame holds one or two.
* **Output: multi-ACCDOA** (Shimada et al. 2022, the DCASE 2022-2023 baseline's): per frame
  a Tanh output of 3 tracks x ``C`` classes x ``[x, y, z]``; a track is active when its
  vector is longer than 0.5, and its direction is the vector's. Decoding: active tracks of
  one class in one frame within 15 degrees of each other (directly or through a third)
  are one event (their mean direction), the others separate events (sources 0, 1, 2 in
  track order).
* **Loss: ADPIT** (auxiliary duplicating permutation-invariant training), from its
  definition: in each frame, for each class with ``N`` active sources (at most 3: further
  ones, by source index, are left out of training), the three tracks' targets are the
  sources' unit vectors assigned to the tracks in every way that uses each source at least
  once (``N = 1``: 1 way; 2: 6; 3: 6), and the loss of the (frame, class) is the smallest
  mean squared error over those assignments; with no source every track's target is 0.
  The loss is the mean over frames and classes. (The baseline's padded targets give the
  same minimum.)
* **Search**: heareval's hidden blocks (:func:`doa_probe.hidden_layers`), grids
  (:data:`doa_probe.GRIDS`, :func:`doa_probe.grid_confs`) and splits
  (:func:`doa_probe.data_splits`); each grid point is trained on the first split with
  early stopping and model selection on the validation split's SELD score (checked every
  ``check_val_every_n_epoch`` epochs, ``patience`` checks without a lower score stop it,
  the best weights are kept; :mod:`natheear_tasks.evaluation.probe_training`, the
  localization probe's loop); the chosen point is retrained on the other splits.
* **Scores**: :mod:`natheear_tasks.evaluation.seld_metrics` over every test file, each
  scored on its own frames (the task's ``scoring_params``: threshold and averaging; 1-s
  segments of ``_nb_label_frames_1s`` frames): a chunk's true length from the task's
  ``chunks.jsonl`` (``audio_seconds``; the last chunk of a recording is padded), else
  ``sample_duration``, else (``null``: files of any length) each wav's length (recorded
  as ``frames_from``). The counts of all test files are summed (as DCASE sums over files),
  per test fold too; per-file counts are kept for intervals.
* **Determinism**: each probe is trained from a seed derived from the base seed, the task,
  the model, the test fold and the grid point, with one intra-op thread, as every probe of
  ``evaluate`` (:mod:`natheear_tasks.evaluation.determinism`).

File and split names read from the task become paths only once
:func:`natheear_tasks.paths.check_name` accepts them.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from natheear_tasks.evaluation import determinism, doa_probe, probe_training
from natheear_tasks.evaluation.probe_training import FitResult, fold_name, predict
from natheear_tasks.evaluation.seld_metrics import SeldCounts, count_file, seld_scores
from natheear_tasks.formats import published
from natheear_tasks.formats.dcase_frames import FrameRow, azimuth_elevation
from natheear_tasks.formats.published import SeldFormat
from natheear_tasks.paths import check_name
from natheear_tasks.tasks.seld_folder import SeldTask, read_task
from natheear_tasks.tasks.taskdir import atomic_write_json

PREDICTION_TYPE = published.ACCDOA
METRIC = "seld_score"
METRICS = published.SELD_METRICS
SCORES_NAME = "test.seld-scores.json"
TRACKS = 3
ACTIVE_NORM = 0.5
UNIFY_DEG = 15.0
SEED = determinism.DEFAULT_SEED


def assignments(sources: int) -> list[tuple[int, ...]]:
    """The ways to give ``TRACKS`` tracks the targets of ``sources`` sources using each
    source at least once (ADPIT's candidates), in lexicographic order."""
    return [a for a in itertools.product(range(sources), repeat=TRACKS) if len(set(a)) == sources]


# every candidate of N = 0..3 sources; N = 0 points at the zero slot (index TRACKS)
_CANDIDATES = [((TRACKS,) * TRACKS, 0)] + [
    (a, n) for n in range(1, TRACKS + 1) for a in assignments(n)
]
_INDEX = torch.tensor([a for a, _ in _CANDIDATES])  # (K, TRACKS)
_SOURCES = torch.tensor([n for _, n in _CANDIDATES])  # (K,)


def adpit_loss(output: Tensor, sources: Tensor, count: Tensor) -> Tensor:
    """ADPIT loss (module docstring) of multi-ACCDOA outputs.

    Args:
        output: ``(N, TRACKS, C, 3)``.
        sources: ``(N, C, TRACKS, 3)`` the unit vectors of the first ``count`` sources of
            each class per frame (zero beyond).
        count: ``(N, C)`` active sources, clipped to ``[0, TRACKS]``.
    Returns:
        the mean over frames and classes of the best assignment's mean squared error.
    """
    padded = torch.cat([sources, sources.new_zeros(*sources.shape[:-2], 1, 3)], dim=-2)
    index = _INDEX.to(output.device)
    targets = padded[:, :, index]  # (N, C, K, TRACKS, 3)
    error = (output.permute(0, 2, 1, 3)[:, :, None] - targets).square().mean(dim=(-1, -2))
    valid = _SOURCES.to(output.device) == count.clamp(max=TRACKS)[..., None]  # (N, C, K)
    return error.masked_fill(~valid, math.inf).min(dim=-1).values.mean()


def decode(output: Tensor, frames: int) -> list[FrameRow]:
    """Rows of one file's multi-ACCDOA output (module docstring).

    Args:
        output: ``(F, TRACKS, C, 3)``.
        frames: decode the first ``frames`` frames only.
    """
    vectors = output[:frames].double().cpu().numpy()
    active = np.linalg.norm(vectors, axis=-1) > ACTIVE_NORM  # (F, TRACKS, C)
    rows = []
    for frame, cls in zip(*np.nonzero(active.any(axis=1)), strict=True):
        tracks = [vectors[frame, t, cls] for t in range(TRACKS) if active[frame, t, cls]]
        group = list(range(len(tracks)))
        for i, j in itertools.combinations(range(len(tracks)), 2):
            if _angle(tracks[i], tracks[j]) <= UNIFY_DEG:
                group = [group[i] if g == group[j] else g for g in group]
        for source, g in enumerate(dict.fromkeys(group)):
            mean = np.mean([v for v, h in zip(tracks, group, strict=True) if h == g], axis=0)
            azimuth, elevation = azimuth_elevation(mean)
            rows.append(FrameRow(int(frame), int(cls), source, azimuth, elevation))
    return rows


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    cos = float(a @ b) / float(np.linalg.norm(a) * np.linalg.norm(b))
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def pool_frames(
    embedding: np.ndarray, timestamps: np.ndarray, frames: int, frame_ms: float = 100.0
) -> np.ndarray:
    """Timestamp embeddings pooled to label frames (module docstring).

    Args:
        embedding: ``(S, D)``.
        timestamps: ``(S,)`` step centres in ms, increasing.
        frames: ``F``.
        frame_ms: one label frame.
    Returns:
        ``(F, D)`` float32.
    """
    if len(timestamps) == 0:
        raise ValueError("no timestamp embedding to pool")
    if np.any(np.diff(timestamps) <= 0):
        raise ValueError("timestamps must increase")
    embedding = embedding.astype(np.float64)
    index = np.floor(timestamps / frame_ms).astype(np.int64)
    inside = (index >= 0) & (index < frames)
    total = np.zeros((frames, embedding.shape[1]))
    np.add.at(total, index[inside], embedding[inside])
    count = np.bincount(index[inside], minlength=frames)
    pooled = total / np.maximum(count, 1)[:, None]
    empty = np.flatnonzero(count == 0)
    centre = (empty + 0.5) * frame_ms
    after = np.searchsorted(timestamps, centre)
    high = np.minimum(after, len(timestamps) - 1)
    low = np.maximum(after - 1, 0)
    span = timestamps[high] - timestamps[low]
    weight = np.divide(centre - timestamps[low], span, out=np.zeros(len(empty)), where=span > 0)
    pooled[empty] = (1 - weight)[:, None] * embedding[low] + weight[:, None] * embedding[high]
    return pooled.astype(np.float32)


@dataclass
class SeldSplit:
    """Frame-wise inputs and targets of the files of one or more splits, file ``i`` holding
    ``frames[i]`` label frames (one after the other)."""

    names: list[str]
    x: Tensor  # (sum of frames, D)
    sources: Tensor  # (sum of frames, C, TRACKS, 3)
    count: Tensor  # (sum of frames, C)
    reference: list[list[FrameRow]]
    scored_frames: list[int]
    frames: list[int]

    def spans(self) -> list[tuple[int, int]]:
        """``(first, end)`` rows of each file."""
        ends = np.cumsum(self.frames).tolist()
        return list(zip([0, *ends[:-1]], ends, strict=True))

    @staticmethod
    def concat(splits: Sequence[SeldSplit]) -> SeldSplit:
        return SeldSplit(
            [n for s in splits for n in s.names],
            torch.cat([s.x for s in splits]),
            torch.cat([s.sources for s in splits]),
            torch.cat([s.count for s in splits]),
            [r for s in splits for r in s.reference],
            [f for s in splits for f in s.scored_frames],
            [f for s in splits for f in s.frames],
        )


def targets(rows: Sequence[FrameRow], frames: int, num_classes: int) -> tuple[Tensor, Tensor]:
    """``sources (F, C, TRACKS, 3)`` and ``count (F, C)`` of one file's rows (module
    docstring: beyond ``TRACKS`` sources of a class in a frame, by source index, left out)."""
    sources = torch.zeros(frames, num_classes, TRACKS, 3)
    count = torch.zeros(frames, num_classes, dtype=torch.long)
    for row in sorted(rows, key=lambda r: (r.frame, r.cls, r.source)):
        slot = int(count[row.frame, row.cls])
        if slot < TRACKS:
            sources[row.frame, row.cls, slot] = torch.from_numpy(row.direction).float()
            count[row.frame, row.cls] += 1
    return sources, count


class SeldProbe(nn.Module):
    """heareval's fully connected predictor with a multi-ACCDOA Tanh head."""

    def __init__(self, in_dim: int, num_classes: int, conf: dict) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.hidden, width, last = doa_probe.hidden_layers(in_dim, conf)
        self.projection = nn.Linear(width, TRACKS * num_classes * 3)
        conf["initialization"](self.projection.weight, gain=nn.init.calculate_gain(last))

    def forward(self, x: Tensor) -> Tensor:
        """``(N, D)`` frame embeddings to ``(N, TRACKS, C, 3)`` ACCDOA vectors."""
        out = torch.tanh(self.projection(self.hidden(x)))
        return out.view(len(x), TRACKS, self.num_classes, 3)


def file_counts(
    model: SeldProbe, split: SeldSplit, fmt: SeldFormat, batch_size: int
) -> list[SeldCounts]:
    """The SELD counts of every file of ``split``, each on its scored frames."""
    output = predict(model, split.x, batch_size)
    counts = []
    for (first, end), reference, scored in zip(
        split.spans(), split.reference, split.scored_frames, strict=True
    ):
        rows = decode(output[first:end], scored)
        counts.append(
            count_file(
                reference,
                rows,
                model.num_classes,
                scored,
                fmt.doa_threshold,
                fmt.frames_per_second,
            )  # fmt: skip
        )
    return counts


def fit(train: SeldSplit, valid: SeldSplit, fmt: SeldFormat, conf: dict, seed: int) -> FitResult:
    """Train one probe with early stopping on the validation SELD score (seeded; the loop of
    :func:`natheear_tasks.evaluation.probe_training.fit`)."""
    num_classes = len(fmt.classes)

    def validation(model: nn.Module) -> float:
        counts = file_counts(model, valid, fmt, conf["batch_size"])
        return seld_scores(SeldCounts.total(counts, num_classes), fmt.average).seld

    return probe_training.fit(
        lambda: SeldProbe(train.x.shape[1], num_classes, conf),
        train.x,
        lambda output, index: adpit_loss(output, train.sources[index], train.count[index]),
        validation,
        conf,
        seed,
    )


def scores_of(counts: SeldCounts, average: str = "macro") -> dict[str, float]:
    """The task's metrics (:data:`METRICS`) of summed counts."""
    s = seld_scores(counts, average)
    return {"seld_score": s.seld, "ER20": s.er20, "F20": s.f20, "LE_CD": s.le_cd, "LR_CD": s.lr_cd}


def counts_json(counts: SeldCounts) -> dict:
    """One file's counts as JSON (arrays as lists)."""
    out = {}
    for f in fields(counts):
        value = getattr(counts, f.name)
        out[f.name] = value.tolist() if isinstance(value, np.ndarray) else value
    return out


def counts_from_json(data: dict) -> SeldCounts:
    """One file's counts from :func:`counts_json`'s JSON."""
    missing = [f.name for f in fields(SeldCounts) if f.name not in data]
    if missing:
        raise ValueError(f"per-file SELD counts lack {missing}")
    values = {f.name: data[f.name] for f in fields(SeldCounts)}
    for name, value in values.items():
        if isinstance(value, list):
            values[name] = np.asarray(value, dtype=np.float64 if name == "le_sum" else np.int64)
    return SeldCounts(**values)


def primary_metric(metadata: dict) -> str:
    """A SELD task's primary metric: the SELD score (the kit's ``SELD``), on which the probe
    is selected; the task's ``evaluation`` list must start with it."""
    evaluation = metadata.get("evaluation") or [METRIC]
    if published.our_metric(evaluation[0]) != METRIC:
        raise ValueError(
            f"a SELD task's first evaluation metric must be {METRIC!r} (the probe is selected "
            f"on it), got {evaluation[0]!r}"
        )
    return METRIC


def fit_and_score(
    splits: dict[str, SeldSplit],
    metadata: dict,
    fmt: SeldFormat,
    grid: str = "default",
    grid_points: int = 8,
    seed: int = SEED,
    task: str | None = None,
    model: str = "",
) -> dict:
    """Grid search on the first data split, retrain on the others, score every test split.

    Returns:
        JSON-ready scores: ``test`` (the metrics over all test files), ``folds`` (per test
        split), ``hparams`` (the chosen grid point), ``seed`` and ``file_counts`` (per test
        file, :func:`counts_json`).
    """
    plan = doa_probe.data_splits(metadata)
    num_classes = len(fmt.classes)
    task = metadata.get("task_name", "") if task is None else task

    def gather(names: list[str]) -> SeldSplit:
        return SeldSplit.concat([splits[n] for n in names])

    def fit_split(p: dict[str, list[str]], conf: dict, probe_seed: int) -> FitResult:
        return fit(gather(p["train"]), gather(p["valid"]), fmt, conf, probe_seed)

    for p in plan:
        valid = gather(p["valid"])
        if not any(valid.reference):
            raise ValueError(
                f"validation split {p['valid']} holds no labelled frame: the SELD score that "
                "selects the probe is undefined; give the task events in every split"
            )
    task_grid = metadata.get("evaluation_params", {}).get("task_specific_param_grid")
    confs = doa_probe.grid_confs(grid, grid_points, task_grid, seed)
    with determinism.probe_threads():
        fitted = probe_training.search(plan, confs, fit_split, seed, task, model)
        best = fitted[0]
        folds, per_file = {}, {}
        for p, result in zip(plan, fitted, strict=True):
            test = gather(p["test"])
            counts = file_counts(result.model, test, fmt, best.conf["batch_size"])
            folds[fold_name(p)] = {
                **scores_or_none(SeldCounts.total(counts, num_classes), fmt.average),
                f"validation_{METRIC}": result.validation,
                "epoch": result.epoch,
                "files": test.names,
            }
            per_file.update(zip(test.names, counts, strict=True))
    total = SeldCounts.total(list(per_file.values()), num_classes)
    return {
        "metric": METRIC,
        "test": {**scores_or_none(total, fmt.average), "files": len(per_file)},
        "scoring": {
            "doa_threshold": fmt.doa_threshold,
            "average": fmt.average,
            "label_frame_ms": fmt.frame_ms,
        },
        "folds": folds,
        "hparams": {k: determinism.json_value(v) for k, v in best.conf.items()},
        "grid": grid,
        "grid_points": grid_points,
        "seed": seed,
        "file_counts": {name: counts_json(c) for name, c in per_file.items()},
    }


def scores_or_none(counts: SeldCounts, average: str) -> dict[str, float | None]:
    """The metrics, or None for each when no reference event was counted."""
    if counts.n_ref.sum() == 0:
        return dict.fromkeys(METRICS)
    return scores_of(counts, average)


def load_split(embed_task_dir: Path, split: str, task: SeldTask) -> SeldSplit:
    """Frame inputs and targets of one split from heareval's embeddings output.

    Args:
        embed_task_dir: the task's embeddings folder.
        split: its name (checked: a plain single name).
        task: :func:`read_task` of the task folder.
    """
    split = check_name(split, "split name", single=True)
    num_classes = len(task.fmt.classes)
    xs, sources, counts, references, scored_frames, frames = [], [], [], [], [], []
    names = list(task.labels[split])
    for name in names:
        base = embed_task_dir / split / name
        embedding = np.load(f"{base}.embedding.npy")
        timestamps = np.asarray(json.loads(Path(f"{base}.timestamps.json").read_text()), float)
        if embedding.ndim != 2 or len(embedding) != len(timestamps):
            raise ValueError(
                f"{base}: SELD needs timestamp embeddings (S, D) with S timestamps, got "
                f"{embedding.shape} and {len(timestamps)}; set embedding_type 'event'"
            )
        count = task.frames[split, name]
        xs.append(torch.from_numpy(pool_frames(embedding, timestamps, count, task.fmt.frame_ms)))
        rows = task.labels[split][name]
        target, active = targets(rows, count, num_classes)
        sources.append(target)
        counts.append(active)
        scored = task.scored[split, name]
        references.append([r for r in rows if r.frame < scored])
        scored_frames.append(scored)
        frames.append(count)
    return SeldSplit(
        names, torch.cat(xs), torch.cat(sources), torch.cat(counts), references, scored_frames,
        frames,
    )  # fmt: skip


def score_task(
    embed_task_dir: Path,
    task_dir: Path,
    grid: str = "default",
    grid_points: int = 8,
    seed: int = SEED,
    model: str = "",
) -> dict:
    """Score one SELD task's embeddings and write :data:`SCORES_NAME` beside them.

    Args:
        embed_task_dir: heareval's embeddings of the task (the task is named by its folder).
        task_dir: the task folder (events, lengths, ``chunks.jsonl``).
    """
    metadata = json.loads((task_dir / "task_metadata.json").read_text())
    task = read_task(task_dir, metadata)
    splits = {s: load_split(embed_task_dir, s, task) for s in metadata["splits"]}
    scores = fit_and_score(
        splits, metadata, task.fmt, grid, grid_points, seed, embed_task_dir.name, model
    )
    scores["frames_from"] = task.frames_from
    atomic_write_json(embed_task_dir / SCORES_NAME, scores, indent=2)
    return scores

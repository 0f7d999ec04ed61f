"""SELD probe: a frame-wise MLP on timestamp embeddings with multi-ACCDOA output, trained
with ADPIT and scored with the DCASE SELD metrics.

Input: heareval's embeddings-runner output for a SELD task (``"prediction_type": "seld"``,
the format of ``natheear-tasks seld``): per file ``<split>/<file>.embedding.npy`` ``(S, D)``
and ``<file>.timestamps.json`` (``S`` step centres in ms), and the split json's frame labels
(``frame``, ``class``, ``source``, ``azimuth``, ``elevation``, ``direction``).

* **Pooling to 100-ms frames.** Frame ``k`` covers ``[100 k, 100 (k + 1))`` ms of its chunk;
  its input is the mean of the embeddings whose timestamps fall in it. A frame without one
  (steps coarser than 100 ms) takes the embedding interpolated linearly at its centre
  between the neighbouring steps (the first or last step beyond them). hear_gram's GRAM
  and CAT steps are 80 ms: every frame holds one or two.
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
  scored on its own frames: a chunk's true length from the task's ``chunks.jsonl``
  (``audio_seconds``; the last chunk of a recording is padded), or ``sample_duration``
  when the task folder has no such file (recorded as ``frames_from``). The counts of all
  test files are summed (as DCASE sums over files), per test fold too; per-file counts are
  kept for intervals.
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
from natheear_tasks.formats.dcase_frames import FRAME_SECONDS, FrameRow, azimuth_elevation
from natheear_tasks.paths import check_name
from natheear_tasks.tasks.taskdir import atomic_write_json

PREDICTION_TYPE = "seld"
METRIC = "seld_score"
METRICS = ("seld_score", "ER20", "F20", "LE_CD", "LR_CD")
SCORES_NAME = "test.seld-scores.json"
CHUNKS_FILE = "chunks.jsonl"
TRACKS = 3
ACTIVE_NORM = 0.5
UNIFY_DEG = 15.0
FRAME_MS = round(1000 * FRAME_SECONDS)
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


def pool_frames(embedding: np.ndarray, timestamps: np.ndarray, frames: int) -> np.ndarray:
    """Timestamp embeddings pooled to 100-ms frames (module docstring).

    Args:
        embedding: ``(S, D)``.
        timestamps: ``(S,)`` step centres in ms, increasing.
        frames: ``F``.
    Returns:
        ``(F, D)`` float32.
    """
    if len(timestamps) == 0:
        raise ValueError("no timestamp embedding to pool")
    if np.any(np.diff(timestamps) <= 0):
        raise ValueError("timestamps must increase")
    embedding = embedding.astype(np.float64)
    index = np.floor(timestamps / FRAME_MS).astype(np.int64)
    inside = (index >= 0) & (index < frames)
    total = np.zeros((frames, embedding.shape[1]))
    np.add.at(total, index[inside], embedding[inside])
    count = np.bincount(index[inside], minlength=frames)
    pooled = total / np.maximum(count, 1)[:, None]
    empty = np.flatnonzero(count == 0)
    centre = (empty + 0.5) * FRAME_MS
    after = np.searchsorted(timestamps, centre)
    high = np.minimum(after, len(timestamps) - 1)
    low = np.maximum(after - 1, 0)
    span = timestamps[high] - timestamps[low]
    weight = np.divide(centre - timestamps[low], span, out=np.zeros(len(empty)), where=span > 0)
    pooled[empty] = (1 - weight)[:, None] * embedding[low] + weight[:, None] * embedding[high]
    return pooled.astype(np.float32)


@dataclass
class SeldSplit:
    """Frame-wise inputs and targets of the files of one or more splits, ``F`` frames each."""

    names: list[str]
    x: Tensor  # (files * F, D)
    sources: Tensor  # (files * F, C, TRACKS, 3)
    count: Tensor  # (files * F, C)
    reference: list[list[FrameRow]]
    scored_frames: list[int]
    frames: int

    @staticmethod
    def concat(splits: Sequence[SeldSplit]) -> SeldSplit:
        return SeldSplit(
            [n for s in splits for n in s.names],
            torch.cat([s.x for s in splits]),
            torch.cat([s.sources for s in splits]),
            torch.cat([s.count for s in splits]),
            [r for s in splits for r in s.reference],
            [f for s in splits for f in s.scored_frames],
            splits[0].frames,
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


def file_counts(model: SeldProbe, split: SeldSplit, batch_size: int) -> list[SeldCounts]:
    """The SELD counts of every file of ``split``, each on its scored frames."""
    output = predict(model, split.x, batch_size)
    counts = []
    for i, reference in enumerate(split.reference):
        rows = decode(output[i * split.frames : (i + 1) * split.frames], split.scored_frames[i])
        counts.append(count_file(reference, rows, model.num_classes, split.scored_frames[i]))
    return counts


def _total(counts: Sequence[SeldCounts], num_classes: int) -> SeldCounts:
    total = SeldCounts.zeros(num_classes)
    for c in counts:
        total = total + c
    return total


def fit(train: SeldSplit, valid: SeldSplit, num_classes: int, conf: dict, seed: int) -> FitResult:
    """Train one probe with early stopping on the validation SELD score (seeded; the loop of
    :func:`natheear_tasks.evaluation.probe_training.fit`)."""

    def validation(model: nn.Module) -> float:
        counts = file_counts(model, valid, conf["batch_size"])
        return seld_scores(_total(counts, num_classes)).seld

    return probe_training.fit(
        lambda: SeldProbe(train.x.shape[1], num_classes, conf),
        train.x,
        lambda output, index: adpit_loss(output, train.sources[index], train.count[index]),
        validation,
        conf,
        seed,
    )


def scores_of(counts: SeldCounts) -> dict[str, float]:
    """The task's metrics (:data:`METRICS`) of summed counts."""
    s = seld_scores(counts)
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
    """A SELD task's primary metric: the SELD score, on which the probe is selected; the
    task's ``evaluation`` list must start with it."""
    evaluation = metadata.get("evaluation") or [METRIC]
    if evaluation[0] != METRIC:
        raise ValueError(
            f"a SELD task's first evaluation metric must be {METRIC!r} (the probe is selected "
            f"on it), got {evaluation[0]!r}"
        )
    return METRIC


def fit_and_score(
    splits: dict[str, SeldSplit],
    metadata: dict,
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
    num_classes = len(metadata["classes"])
    task = metadata.get("task_name", "") if task is None else task

    def gather(names: list[str]) -> SeldSplit:
        return SeldSplit.concat([splits[n] for n in names])

    def fit_split(p: dict[str, list[str]], conf: dict, probe_seed: int) -> FitResult:
        return fit(gather(p["train"]), gather(p["valid"]), num_classes, conf, probe_seed)

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
            counts = file_counts(result.model, test, best.conf["batch_size"])
            folds[fold_name(p)] = {
                **_scores_or_none(_total(counts, num_classes)),
                f"validation_{METRIC}": result.validation,
                "epoch": result.epoch,
                "files": test.names,
            }
            per_file.update(zip(test.names, counts, strict=True))
    total = _total(list(per_file.values()), num_classes)
    return {
        "metric": METRIC,
        "test": {**_scores_or_none(total), "files": len(per_file)},
        "folds": folds,
        "hparams": {k: determinism.json_value(v) for k, v in best.conf.items()},
        "grid": grid,
        "grid_points": grid_points,
        "seed": seed,
        "file_counts": {name: counts_json(c) for name, c in per_file.items()},
    }


def _scores_or_none(counts: SeldCounts) -> dict[str, float | None]:
    """The metrics, or None for each when no reference event was counted."""
    if counts.n_ref.sum() == 0:
        return dict.fromkeys(METRICS)
    return scores_of(counts)


def label_rows(labels: object, file: str, frames: int, num_classes: int) -> list[FrameRow]:
    """The frame rows of one file's SELD labels (the ``natheear-tasks seld`` format).

    Raises:
        ValueError: labels that are not that format, naming the file and the entry.
    """
    if not isinstance(labels, list):
        raise ValueError(f"{file}: SELD labels must be a list of frame entries")
    rows = []
    for i, entry in enumerate(labels):
        where = f"{file}[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: a SELD label must be an object, got {entry!r}")
        missing = [
            k for k in ("frame", "class", "source", "azimuth", "elevation") if k not in entry
        ]
        if missing:
            raise ValueError(f"{where}: SELD label lacks {missing} (see natheear-tasks seld)")
        frame, cls, source = entry["frame"], entry["class"], entry["source"]
        azimuth, elevation = entry["azimuth"], entry["elevation"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (frame, cls, source)):
            raise ValueError(f"{where}: frame, class and source must be integers")
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in (azimuth, elevation)):
            raise ValueError(f"{where}: azimuth and elevation must be finite numbers")
        if not (0 <= frame < frames and 0 <= cls < num_classes and source >= 0):
            raise ValueError(
                f"{where}: frame {frame}, class {cls} or source {source} out of range "
                f"(frames [0, {frames}), classes [0, {num_classes}))"
            )
        if not (-180 <= azimuth <= 180 and -90 <= elevation <= 90):
            raise ValueError(f"{where}: azimuth {azimuth} or elevation {elevation} out of range")
        rows.append(FrameRow(frame, cls, source, float(azimuth), float(elevation)))
    return rows


def task_frames(metadata: dict) -> int:
    """Frames per file: ``sample_duration`` in 100-ms frames (a whole number of them)."""
    if metadata.get("prediction_type") != PREDICTION_TYPE:
        raise ValueError(f"not a SELD task: prediction_type {metadata.get('prediction_type')!r}")
    if metadata.get("frame_seconds", FRAME_SECONDS) != FRAME_SECONDS:
        raise ValueError(f"SELD tasks have 100-ms frames, got {metadata['frame_seconds']} s")
    classes = metadata.get("classes")
    if not isinstance(classes, list) or not classes:
        raise ValueError("a SELD task's metadata needs 'classes' (names in index order)")
    duration = metadata.get("sample_duration")
    frames = round(duration / FRAME_SECONDS) if isinstance(duration, int | float) else 0
    if frames < 1 or abs(frames * FRAME_SECONDS - duration) > 1e-6:
        raise ValueError(
            f"a SELD task needs a sample_duration of whole 100-ms frames, got {duration!r}"
        )
    return frames


def chunk_frames(task_dir: Path | None) -> dict[tuple[str, str], int] | None:
    """Scored frames per ``(split, file)`` from the task's ``chunks.jsonl`` (frames that
    start within ``audio_seconds``), or None without that file."""
    path = None if task_dir is None else task_dir / CHUNKS_FILE
    if path is None or not path.is_file():
        return None
    frames = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            seconds = float(record["audio_seconds"])
            key = (str(record["split"]), str(record["file"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path} line {number}: not a chunk record ({error})") from None
        frames[key] = math.ceil(round(seconds / FRAME_SECONDS, 6))
    return frames


def split_labels(folder: Path, split: str, metadata: dict) -> dict[str, list[FrameRow]]:
    """The frame rows of every file of one split file, by file name (sorted).

    Args:
        folder: a task folder or its embeddings folder (both hold ``<split>.json``).
        split: its name (checked: a plain single name).
        metadata: the task's metadata.
    Raises:
        ValueError: a bad split or file name, a split without files, labels not in the
            ``natheear-tasks seld`` format.
    """
    split = check_name(split, "split name", single=True)
    frames = task_frames(metadata)
    num_classes = len(metadata["classes"])
    labels = json.loads((folder / f"{split}.json").read_text())
    if not isinstance(labels, dict) or not labels:
        raise ValueError(f"split {split!r} of {folder} holds no files")
    rows = {}
    for name in sorted(labels):
        check_name(name, f"{split}.json: file name")
        rows[name] = label_rows(labels[name], f"{split}.json[{name!r}]", frames, num_classes)
    return rows


def task_problems(task_dir: Path, metadata: dict) -> list[str]:
    """What would stop the probe on a SELD task folder, found before any embedding: its
    metadata, ``chunks.jsonl``, and per split the first bad name or label, a file without
    a chunk record, or no label at all (the SELD score of a split without events is
    undefined, and every split validates or tests in some fold)."""
    try:
        task_frames(metadata)
        scored = chunk_frames(task_dir)
    except ValueError as error:
        return [str(error)]
    problems = []
    for split in metadata["splits"]:
        try:
            rows = split_labels(task_dir, split, metadata)
        except (OSError, ValueError) as error:
            problems.append(str(error))
            continue
        unrecorded = [] if scored is None else [n for n in rows if (split, n) not in scored]
        if unrecorded:
            problems.append(f"{CHUNKS_FILE} has no record of {split}/{unrecorded[0]}")
        elif not any(rows.values()):
            problems.append(
                f"{split}.json holds no SELD label (no active source in any frame); a SELD "
                "task needs events in every split"
            )
    return problems


def load_split(
    embed_task_dir: Path,
    split: str,
    metadata: dict,
    scored: dict[tuple[str, str], int] | None = None,
) -> SeldSplit:
    """Frame inputs and targets of one split from heareval's embeddings output.

    Args:
        embed_task_dir: the task's embeddings folder.
        split: its name (checked: a plain single name).
        metadata: the task's metadata.
        scored: :func:`chunk_frames`; None scores every file on all its frames.
    """
    labels = split_labels(embed_task_dir, split, metadata)
    frames = task_frames(metadata)
    num_classes = len(metadata["classes"])
    xs, sources, counts, references, scored_frames = [], [], [], [], []
    for name, rows in labels.items():
        base = embed_task_dir / split / name
        embedding = np.load(f"{base}.embedding.npy")
        timestamps = np.asarray(json.loads(Path(f"{base}.timestamps.json").read_text()), float)
        if embedding.ndim != 2 or len(embedding) != len(timestamps):
            raise ValueError(
                f"{base}: SELD needs timestamp embeddings (S, D) with S timestamps, got "
                f"{embedding.shape} and {len(timestamps)}; set embedding_type 'event'"
            )
        xs.append(torch.from_numpy(pool_frames(embedding, timestamps, frames)))
        target, count = targets(rows, frames, num_classes)
        sources.append(target)
        counts.append(count)
        if scored is None:
            true_frames = frames
        elif (split, name) in scored:
            true_frames = min(frames, scored[split, name])
        else:
            raise ValueError(f"{CHUNKS_FILE} has no record of {split}/{name}")
        references.append([r for r in rows if r.frame < true_frames])
        scored_frames.append(true_frames)
    return SeldSplit(
        list(labels),
        torch.cat(xs),
        torch.cat(sources),
        torch.cat(counts),
        references,
        scored_frames,
        frames,
    )


def score_task(
    embed_task_dir: Path,
    task_dir: Path | None = None,
    grid: str = "default",
    grid_points: int = 8,
    seed: int = SEED,
    model: str = "",
) -> dict:
    """Score one SELD task's embeddings and write :data:`SCORES_NAME` beside them.

    Args:
        embed_task_dir: heareval's embeddings of the task (the task is named by its folder).
        task_dir: the task folder, for the chunks' true lengths (:data:`CHUNKS_FILE`).
    """
    metadata = json.loads((embed_task_dir / "task_metadata.json").read_text())
    scored = chunk_frames(task_dir)
    splits = {s: load_split(embed_task_dir, s, metadata, scored) for s in metadata["splits"]}
    scores = fit_and_score(splits, metadata, grid, grid_points, seed, embed_task_dir.name, model)
    scores["frames_from"] = CHUNKS_FILE if scored is not None else "sample_duration"
    atomic_write_json(embed_task_dir / SCORES_NAME, scores, indent=2)
    return scores

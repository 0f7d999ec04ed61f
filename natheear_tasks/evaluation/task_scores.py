"""Reading a scored task back: each route's test scores with their per-item statistics
(heareval's per-clip outputs, the direction probe's errors, the SELD probe's per-file
counts), then the ``summary.json`` entry with its 95 % interval."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from natheear_tasks.evaluation import doa_probe, intervals, seld_probe
from natheear_tasks.evaluation.discovery import TaskInfo
from natheear_tasks.evaluation.errors import ScoreUnavailable
from natheear_tasks.evaluation.heareval_predict import TEST_OUTPUTS_SUFFIX
from natheear_tasks.evaluation.probe_training import fold_name
from natheear_tasks.seeding import derive_seed

HEAREVAL_SCORES = "test.predicted-scores.json"
HEAREVAL_DONE = "prediction-done.json"


def heareval_score(embed_dir: Path) -> dict:
    """The primary test score of a heareval-scored task (mean and std over folds) and the
    score of each test fold (``folds``)."""
    data = json.loads((embed_dir / HEAREVAL_SCORES).read_text())
    folds = {
        k: v["test_score"] for k, v in data.items() if isinstance(v, dict) and "test_score" in v
    }
    if "aggregated_scores" in data:
        agg = data["aggregated_scores"]
        return {"score": agg["test_score_mean"], "std": agg["test_score_std"], "folds": folds}
    if len(folds) != 1:
        raise RuntimeError(f"{embed_dir / HEAREVAL_SCORES} has no single test score")
    return {"score": next(iter(folds.values())), "std": None, "folds": folds}


def test_folds(task: TaskInfo) -> list[str]:
    """heareval's names of the task's test folds (``["test"]``, or one per k-fold fold)."""
    return [fold_name(p) for p in doa_probe.data_splits(task.metadata)]


def _labels(embed_dir: Path) -> list[str]:
    """The label vocabulary in index order."""
    with (embed_dir / "labelvocabulary.csv").open(newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: int(row["idx"]))
    return [str(row["label"]) for row in rows]


def heareval_items(task: TaskInfo, embed_dir: Path) -> intervals.ItemStats:
    """Per-item statistics of a heareval-scored task from its ``<fold>.test-outputs.json``."""
    names, stats, folds = [], [], []
    labels = None
    for fold in test_folds(task):
        outputs = json.loads((embed_dir / f"{fold}{TEST_OUTPUTS_SUFFIX}").read_text())
        if outputs["kind"] == "event":
            labels = labels or _labels(embed_dir)
            fold_names, fold_stats = intervals.event_statistics(task.metric, outputs, labels)
        else:
            fold_names, fold_stats = intervals.scene_statistics(task.metric, outputs)
        names += fold_names
        stats.append(fold_stats)
        folds += [fold] * len(fold_names)
    return intervals.ItemStats(
        task.metric, names, np.concatenate(stats), folds, fold_mean=len(set(folds)) > 1
    )


def heareval_task_scores(task: TaskInfo, embed_dir: Path) -> intervals.TaskScores:
    """A heareval-scored task's result: its score (mean over folds) and per-item statistics."""
    scored = heareval_score(embed_dir)
    return intervals.TaskScores(
        entry={"score": scored["score"], "std": scored["std"]},
        values={task.metric: scored["score"]},
        items={task.metric: heareval_items(task, embed_dir)},
        fold_scores={task.metric: list(scored["folds"].values())},
        unit="files" if task.metadata["embedding_type"] == "event" else "clips",
    )


def localization_task_scores(task: TaskInfo, embed_dir: Path) -> intervals.TaskScores:
    """A localization task's result: mean and median DoA error, each with its per-clip
    statistics (the clip's error)."""
    data = json.loads((embed_dir / doa_probe.SCORES_NAME).read_text())
    folds_of = {name: fold for fold, f in data["folds"].items() for name in f["files"]}
    names = sorted(data["errors_deg"])
    errors = [data["errors_deg"][n] for n in names]
    folds = [folds_of[n] for n in names]
    values = {m: data["test"][m] for m in doa_probe.METRICS}
    kit = {m: data["test"][m] for m in ("DOA", "MAE", "DOE") if m in data["test"]}
    return intervals.TaskScores(
        entry={
            "score": values[task.metric],
            "mean": values["mean_doa_error_deg"],
            "median": values["median_doa_error_deg"],
            "std": None,
            **({"listen_eval_kit": kit} if kit else {}),
        },
        values=values,
        items={m: intervals.ItemStats(m, names, errors, folds) for m in doa_probe.METRICS},
        fold_scores={m: [f[m] for f in data["folds"].values()] for m in doa_probe.METRICS},
        fields={"mean_doa_error_deg": "mean", "median_doa_error_deg": "median"},
    )


def seld_task_scores(task: TaskInfo, embed_dir: Path) -> intervals.TaskScores:
    """A SELD task's result: the SELD score, ER20, F20, LE_CD and LR_CD over all test files,
    each with per-file statistics (the file's SELD counts, which add up over files).

    Raises:
        ScoreUnavailable: no reference event in the scored frames of the test files (or of
            a test fold): the metrics are undefined.
    """
    data = json.loads((embed_dir / seld_probe.SCORES_NAME).read_text())
    undefined = [
        where
        for where, scores in {"all test files": data["test"], **data["folds"]}.items()
        if scores[task.metric] is None
    ]
    if undefined:
        raise ScoreUnavailable(
            f"{task.name}: no reference event in the scored frames of {undefined}: the SELD "
            "metrics are undefined there"
        )
    folds_of = {name: fold for fold, f in data["folds"].items() for name in f["files"]}
    names = sorted(data["file_counts"])
    rows = [seld_probe.counts_from_json(data["file_counts"][n]).vector() for n in names]
    folds = [folds_of[n] for n in names]
    values = {m: data["test"][m] for m in seld_probe.METRICS}
    others = [m for m in seld_probe.METRICS if m != task.metric]
    return intervals.TaskScores(
        entry={"score": values[task.metric], **{m: values[m] for m in others}, "std": None},
        values=values,
        items={m: intervals.ItemStats(m, names, rows, folds) for m in seld_probe.METRICS},
        fold_scores={m: [f[m] for f in data["folds"].values()] for m in seld_probe.METRICS},
        fields={m: m for m in others},
        unit="files",
    )


def score_entry(
    task: TaskInfo, embed_dir: Path, seed: int
) -> tuple[dict, intervals.ItemStats, np.ndarray]:
    """A task's summary entry (scores, ``ci95`` and how it was made), its per-item
    statistics and the primary score of each bootstrap resample (drawn from
    ``derive_seed(seed, "bootstrap", task)``, so every model of the task alike).

    Raises:
        intervals.DecompositionError: the per-item statistics miss the reported score.
        ScoreUnavailable: the probe's scores are undefined.
    """
    if task.localization:
        scores = localization_task_scores(task, embed_dir)
    elif task.seld:
        scores = seld_task_scores(task, embed_dir)
    else:
        scores = heareval_task_scores(task, embed_dir)
    return intervals.with_intervals(scores, task.metric, derive_seed(seed, "bootstrap", task.name))

"""Per-task scores and the SUPERB-style aggregate s(m).

For each task with a reference (a baseline score and a best score on the task's primary
metric), a model's normalised score is ``(score - baseline) / (best - baseline)`` clipped
to ``[0, 1]``; s(m) is the mean over those tasks, in percent. The same formula serves
metrics where lower is better (DoA error, segment error rate, SELD score): ``best`` is
then below ``baseline`` and a score between them still maps into ``[0, 1]``.

References file (``--references``), JSON::

    {"baseline": "logmel",          # defaults for every task (optional)
     "best": "perfect",
     "tasks": {"speech_commands": {"baseline": 0.12, "best": 0.97},
               "speech_commands_localization": {"metric": "mean_doa_error_deg",
                                                "baseline": 90.0, "best": 10.0}}}

or CSV with a header ``task,baseline,best`` and optionally ``metric``. A value is a number
on the task's primary metric, ``"perfect"`` (the metric's ideal value: 1 for accuracies,
mAP, AUC and F-measures, 0 for error rates, DoA errors and the SELD score), or the label
of a model of the same evaluation (its score on that task). ``metric``, when given, must
name the task's primary metric, so numbers of another metric are never mixed in.

s(m) gets a 95 % interval from the tasks' bootstrap resamples (:func:`s_m_resampled`).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PERFECT = "perfect"

# Primary metrics: whether higher is better, and the ideal value where there is one.
HIGHER_IS_BETTER = {
    "top1_acc": True,
    "pitch_acc": True,
    "chroma_acc": True,
    "mAP": True,
    "aucroc": True,
    "d_prime": True,
    "event_onset_200ms_fms": True,
    "event_onset_50ms_fms": True,
    "event_onset_offset_50ms_20perc_fms": True,
    "segment_1s_er": False,
    "mean_doa_error_deg": False,
    "median_doa_error_deg": False,
    "seld_score": False,
}
IDEAL = {
    "top1_acc": 1.0,
    "pitch_acc": 1.0,
    "chroma_acc": 1.0,
    "mAP": 1.0,
    "aucroc": 1.0,
    "event_onset_200ms_fms": 1.0,
    "event_onset_50ms_fms": 1.0,
    "event_onset_offset_50ms_20perc_fms": 1.0,
    "segment_1s_er": 0.0,
    "mean_doa_error_deg": 0.0,
    "median_doa_error_deg": 0.0,
    "seld_score": 0.0,
}


class ReferenceError(ValueError):
    """A references file that cannot be read or does not fit the tasks."""


def higher_is_better(metric: str) -> bool:
    """Direction of a primary metric; raises ``KeyError`` naming the known metrics."""
    if metric not in HIGHER_IS_BETTER:
        raise KeyError(f"unknown metric {metric!r}; known: {sorted(HIGHER_IS_BETTER)}")
    return HIGHER_IS_BETTER[metric]


def normalized_score(score: float, baseline: float, best: float) -> float:
    """``(score - baseline) / (best - baseline)`` clipped to ``[0, 1]``.

    Raises:
        ValueError: ``best == baseline`` (the task cannot tell models apart).
    """
    if best == baseline:
        raise ValueError(f"best and baseline are both {best}: no range to normalise over")
    return min(1.0, max(0.0, (score - baseline) / (best - baseline)))


def check_reference(metric: str, baseline: float, best: float, task: str) -> None:
    """Raise :class:`ReferenceError` unless ``best`` is better than ``baseline`` on ``metric``."""
    if not (math.isfinite(baseline) and math.isfinite(best)):
        raise ReferenceError(f"{task}: baseline {baseline} and best {best} must be finite")
    better = best > baseline if higher_is_better(metric) else best < baseline
    if not better:
        direction = "higher" if higher_is_better(metric) else "lower"
        raise ReferenceError(
            f"{task}: best ({best}) must be better than baseline ({baseline}) on {metric}, "
            f"where {direction} is better"
        )


@dataclass
class References:
    """Baseline and best per task: numbers, ``"perfect"`` or model labels."""

    defaults: dict
    tasks: dict[str, dict]
    source: str

    def entry(self, task: str) -> dict:
        return {**self.defaults, **self.tasks.get(task, {})}


def _value(raw: object, where: str) -> float | str:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ReferenceError(f"{where}: expected a number, 'perfect' or a model label, got {raw!r}")
    if isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            if not raw.strip():
                raise ReferenceError(f"{where}: empty value") from None
            return raw.strip()
    return float(raw)


def _entry(raw: object, where: str) -> dict:
    if not isinstance(raw, dict):
        raise ReferenceError(f"{where}: expected an object with baseline/best, got {raw!r}")
    unknown = sorted(set(raw) - {"baseline", "best", "metric"})
    if unknown:
        raise ReferenceError(f"{where}: unknown fields {unknown}; allowed: baseline, best, metric")
    entry = {k: _value(raw[k], f"{where}.{k}") for k in ("baseline", "best") if k in raw}
    if raw.get("metric") not in (None, ""):
        entry["metric"] = str(raw["metric"])
    return entry


def load_references(path: str | Path) -> References:
    """Read a references file (JSON or CSV, see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ReferenceError(f"references file {path} does not exist")
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = {"task", "baseline", "best"} - set(reader.fieldnames or [])
            if missing:
                raise ReferenceError(
                    f"{path}: CSV header needs task, baseline, best (and optionally metric); "
                    f"missing {sorted(missing)}"
                )
            tasks = {}
            for line, row in enumerate(reader, start=2):
                fields = {k: v for k, v in row.items() if k != "task" and v not in (None, "")}
                tasks[row["task"]] = _entry(fields, f"{path}:{line}")
        return References({}, tasks, str(path))
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ReferenceError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(raw, dict):
        raise ReferenceError(f"{path}: expected a JSON object")
    unknown = sorted(set(raw) - {"baseline", "best", "tasks"})
    if unknown:
        raise ReferenceError(f"{path}: unknown fields {unknown}; allowed: baseline, best, tasks")
    defaults = _entry({k: raw[k] for k in ("baseline", "best") if k in raw}, str(path))
    tasks = raw.get("tasks", {})
    if not isinstance(tasks, dict):
        raise ReferenceError(f"{path}: 'tasks' must map task names to objects")
    return References(
        defaults, {t: _entry(e, f"{path}: tasks.{t}") for t, e in tasks.items()}, str(path)
    )


def resolve_reference(
    refs: References, task: str, metric: str, scores: dict[str, dict[str, float]]
) -> tuple[float, float] | str:
    """``(baseline, best)`` for ``task``, or a one-line reason why there is none.

    Args:
        scores: ``{model label: {task: primary score}}`` of this evaluation.
    Raises:
        ReferenceError: the entry names another metric, or its numbers put best no better
            than baseline (when a model's score does, the task is skipped).
    """
    entry = refs.entry(task)
    if entry.get("metric", metric) != metric:
        raise ReferenceError(
            f"{refs.source}: {task} reference is on {entry['metric']}, but the task's primary "
            f"metric is {metric}"
        )
    values, from_model = [], False
    for key in ("baseline", "best"):
        value = entry.get(key)
        if value is None:
            return f"no {key} given"
        if value == PERFECT:
            if metric not in IDEAL:
                return f"{metric} has no perfect value; give a number"
            value = IDEAL[metric]
        elif isinstance(value, str):
            if value not in scores:
                return f"{key} {value!r} is not a model of this evaluation ({sorted(scores)})"
            if task not in scores[value]:
                return f"{key} model {value!r} has no score"
            value, from_model = scores[value][task], True
        values.append(float(value))
    baseline, best = values
    try:
        check_reference(metric, baseline, best, task)
    except ReferenceError:
        if from_model:  # a model's score can reach the best; that task then tells nothing
            return f"the baseline ({baseline:g}) already reaches the best ({best:g})"
        raise
    return baseline, best


def s_m(
    refs: References,
    metrics: dict[str, str],
    scores: dict[str, dict[str, float]],
) -> dict:
    """s(m) of every model over the tasks that have a reference.

    Args:
        metrics: ``{task: primary metric}`` of every task evaluated.
        scores: ``{model label: {task: primary score}}``.
    Returns:
        ``{"references": {task: [baseline, best]}, "skipped": {task: reason},
        "models": {label: {"s_m": percent or None, "normalized": {task: value},
        "missing": [tasks without a score]}}}``.
    """
    resolved, skipped = {}, {}
    for task, metric in metrics.items():
        reference = resolve_reference(refs, task, metric, scores)
        if isinstance(reference, str):
            skipped[task] = reference
        else:
            resolved[task] = reference
    models = {}
    for label, by_task in scores.items():
        normalized = {
            task: normalized_score(by_task[task], *resolved[task])
            for task in resolved
            if task in by_task
        }
        missing = sorted(set(resolved) - set(normalized))
        value = 100.0 * sum(normalized.values()) / len(normalized) if normalized else None
        models[label] = {
            "s_m": None if missing else value,
            "normalized": normalized,
            "missing": missing,
        }
    return {
        "references": {t: list(r) for t, r in resolved.items()},
        "skipped": skipped,
        "models": models,
    }


def s_m_resampled(
    refs: References,
    metrics: dict[str, str],
    tasks: list[str],
    resampled: dict[str, dict[str, np.ndarray]],
) -> dict[str, np.ndarray | None]:
    """s(m) of every bootstrap resample, for an interval of s(m).

    The same rules as :func:`s_m`, applied to each resample: a baseline or best given as a
    model label takes that model's score on the same resample (the resamples of a task
    hold the same clips for every model, so the comparison stays paired), numbers and
    ``"perfect"`` stay fixed. A resample where a task's best is no better than its
    baseline has no s(m) (``nan``).

    Args:
        metrics: ``{task: primary metric}``.
        tasks: the tasks s(m) averages over (``s_m(...)["references"]``).
        resampled: ``{model label: {task: (B,) primary scores}}``.
    Returns:
        ``{label: (B,) s(m) in percent}``, or None for a model without resamples of every
        task (or whose reference model lacks them).
    """
    out: dict[str, np.ndarray | None] = {}
    for label, by_task in resampled.items():
        parts = []
        for task in tasks:
            metric, entry = metrics[task], refs.entry(task)
            bounds = [
                _resampled_value(entry[k], metric, task, resampled) for k in ("baseline", "best")
            ]
            if task not in by_task or any(b is None for b in bounds):
                parts = None
                break
            baseline, best = (np.asarray(b, dtype=np.float64) for b in bounds)
            valid = best > baseline if higher_is_better(metric) else best < baseline
            span = np.where(valid, best - baseline, 1.0)
            normalized = np.clip((by_task[task] - baseline) / span, 0.0, 1.0)
            parts.append(np.where(valid, normalized, np.nan))
        out[label] = None if parts is None or not parts else 100.0 * np.mean(parts, axis=0)
    return out


def _resampled_value(
    value: float | str, metric: str, task: str, resampled: dict[str, dict[str, np.ndarray]]
) -> np.ndarray | float | None:
    """A reference value on each resample: a number, the ideal value, or a model's resamples."""
    if value == PERFECT:
        return IDEAL[metric]
    if isinstance(value, str):
        return resampled.get(value, {}).get(task)
    return float(value)

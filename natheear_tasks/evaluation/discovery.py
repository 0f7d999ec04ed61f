"""Task discovery for ``evaluate``: the task folders under ``--tasks-dir``, what each one is
(the route that scores it: heareval, the direction probe or the SELD probe) and every
problem found before any model runs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from natheear_tasks.evaluation import doa_probe, scoring, seld_probe
from natheear_tasks.evaluation.errors import UsageError
from natheear_tasks.paths import name_problem
from natheear_tasks.tasks import localize


@dataclass
class TaskInfo:
    """A task directory and what the report needs to know about it."""

    name: str
    path: Path
    metadata: dict

    @property
    def localization(self) -> bool:
        return self.metadata.get("prediction_type") == localize.PREDICTION_TYPE

    @property
    def seld(self) -> bool:
        return self.metadata.get("prediction_type") == seld_probe.PREDICTION_TYPE

    @property
    def metric(self) -> str:
        if self.localization:
            return doa_probe.primary_metric(self.metadata)
        if self.seld:
            return seld_probe.primary_metric(self.metadata)
        return self.metadata["evaluation"][0]

    def describe(self) -> dict:
        return {
            "name": self.name,
            "embedding_type": self.metadata["embedding_type"],
            "prediction_type": self.metadata["prediction_type"],
            "metric": self.metric,
            "higher_is_better": scoring.higher_is_better(self.metric),
        }


def find_tasks(tasks_dir: Path, names: list[str] | None = None) -> list[TaskInfo]:
    """Task directories (folders with ``task_metadata.json``) under ``tasks_dir``, by name."""
    if not tasks_dir.is_dir():
        raise UsageError(f"--tasks-dir {tasks_dir} is not a folder")
    found = {
        p.name: p
        for p in sorted(tasks_dir.iterdir())
        if not p.name.startswith(".") and (p / "task_metadata.json").is_file()
    }
    if names:
        unknown = sorted(set(names) - set(found))
        if unknown:
            raise UsageError(
                f"--task {unknown} not found in {tasks_dir}; task directories there: "
                f"{sorted(found) or 'none'}"
            )
        found = {n: found[n] for n in sorted(set(names))}
    if not found:
        raise UsageError(f"{tasks_dir} holds no task directories (folders with task_metadata.json)")
    tasks, problems = [], []
    for name, path in found.items():
        try:
            metadata = json.loads((path / "task_metadata.json").read_text())
        except (OSError, json.JSONDecodeError) as error:
            problems.append(f"{name}: task_metadata.json is unreadable ({error})")
            continue
        if not isinstance(metadata, dict):
            problems.append(f"{name}: task_metadata.json must hold a JSON object")
            continue
        missing = [
            k
            for k in ("embedding_type", "prediction_type", "split_mode", "splits")
            if k not in metadata
        ]
        if metadata.get("prediction_type") != localize.PREDICTION_TYPE and not metadata.get(
            "evaluation"
        ):
            missing.append("evaluation")
        if missing:
            problems.append(f"{name}: task_metadata.json lacks {missing}")
            continue
        split_problems = _split_problems(name, metadata["splits"])
        if split_problems:
            problems += split_problems
            continue
        task = TaskInfo(name, path, metadata)
        try:
            metric = task.metric
        except ValueError as error:
            problems.append(f"{name}: {error}")
            continue
        if task.localization and metadata["embedding_type"] != "scene":
            problems.append(f"{name}: a localization task needs embedding_type 'scene'")
        elif task.seld and metadata["embedding_type"] != "event":
            problems.append(f"{name}: a SELD task needs embedding_type 'event'")
        elif metric not in scoring.HIGHER_IS_BETTER:
            problems.append(f"{name}: unknown primary metric {metric!r}")
        else:
            found_problems = []
            if task.localization:
                found_problems = _direction_problems(task)
            elif task.seld:
                found_problems = [f"{name}: {p}" for p in seld_probe.task_problems(path, metadata)]
            problems += found_problems
            if not found_problems:
                tasks.append(task)
    if problems:
        raise UsageError("bad task directories:\n  " + "\n  ".join(problems))
    return tasks


def _split_problems(task: str, splits: object) -> list[str]:
    """Split names that cannot become file names inside the task folder (they are read as
    ``<split>.json`` and ``<rate>/<split>/``): not plain single names, or not a list."""
    if not isinstance(splits, list) or not splits:
        return [f"{task}: task_metadata.json 'splits' must be a non-empty list of split names"]
    return [
        f"{task}: split name {split!r} {problem}"
        for split in splits
        if (problem := name_problem(split, single=True))
    ]


def _direction_problems(task: TaskInfo) -> list[str]:
    """Labels of a localization task that are not unit vectors ``[x, y, z]`` (first 3)."""
    problems = []
    for split in task.metadata["splits"]:
        path = task.path / f"{split}.json"
        try:
            labels = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            problems.append(f"{task.name}: {path.name} is unreadable ({error})")
            continue
        for file, label in labels.items():
            try:
                doa_probe.unit_vector(label)
            except ValueError as error:
                problems.append(f"{task.name}: {split}.json[{file!r}]: {error}")
                if len(problems) >= 3:
                    return problems
    return problems

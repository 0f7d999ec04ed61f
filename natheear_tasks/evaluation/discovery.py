"""Task discovery for ``evaluate``: the task folders under ``--tasks-dir``, what each one is
(the route that scores it: heareval, the direction probe or the SELD probe) and every
problem found before any model runs.

Folders in the published format (:mod:`natheear_tasks.formats.published`: the GRAM
authors' NatHEAR and RealSELD suites, and what ``natheear-tasks`` writes) and plain HEAR
tasks are read alike: ``accdoa`` tasks go to the SELD probe, scene tasks whose labels are
directions (``[x, y, z]`` or ``[azimuth, elevation]``) to the direction probe, the rest to
heareval's predictions runner. A field or value that is not understood is listed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from natheear_tasks.evaluation import doa_probe, scoring, seld_probe
from natheear_tasks.evaluation.errors import UsageError
from natheear_tasks.formats import published
from natheear_tasks.paths import name_problem
from natheear_tasks.tasks import seld_folder

HEAREVAL = "heareval"
LOCALIZATION = "localization"
SELD = "seld"
REQUIRED = ("embedding_type", "prediction_type", "split_mode", "splits")
MAX_LISTED = 5  # problems listed per task and check, before "..."


@dataclass
class TaskInfo:
    """A task directory, the route that scores it and what the report needs to know."""

    name: str
    path: Path
    metadata: dict
    route: str = HEAREVAL

    @property
    def localization(self) -> bool:
        return self.route == LOCALIZATION

    @property
    def seld(self) -> bool:
        return self.route == SELD

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
            "route": self.route,
            "metric": self.metric,
            "higher_is_better": scoring.higher_is_better(self.metric),
        }


def find_tasks(tasks_dir: Path, names: list[str] | None = None) -> list[TaskInfo]:
    """Task directories (folders with ``task_metadata.json``) under ``tasks_dir``, by name,
    each checked and routed.

    Raises:
        UsageError: every problem of every task, each naming the task, file, key and value.
    """
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
        task, task_problems = read_task_info(name, path)
        problems += [f"{name}: {p}" for p in task_problems]
        if task is not None and not task_problems:
            tasks.append(task)
    if problems:
        raise UsageError("bad task directories:\n  " + "\n  ".join(problems))
    return tasks


def read_task_info(name: str, path: Path) -> tuple[TaskInfo | None, list[str]]:
    """One task folder read, routed and checked: ``(task, [])`` or ``(task or None,
    problems)``."""
    try:
        metadata = json.loads((path / "task_metadata.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        return None, [f"task_metadata.json is unreadable ({error})"]
    if not isinstance(metadata, dict):
        return None, ["task_metadata.json must hold a JSON object"]
    missing = [k for k in REQUIRED if k not in metadata]
    if missing:
        return None, [f"task_metadata.json lacks {missing}"]
    problems = [f"task_metadata.json: {p}" for p in published.metadata_problems(metadata, _known)]
    problems += _split_problems(metadata["splits"])
    if problems:
        return None, problems
    task = TaskInfo(name, path, metadata, _route(path, metadata))
    if task.seld:
        if metadata["embedding_type"] != "event":
            return task, ["task_metadata.json: embedding_type must be 'event' for an accdoa task"]
        try:
            task.metric  # noqa: B018 (checks the evaluation list)
        except ValueError as error:
            return task, [f"task_metadata.json: {error}"]
        return task, seld_folder.task_problems(path, metadata)[: 4 * MAX_LISTED]
    if task.localization:
        if metadata["embedding_type"] != "scene":
            return task, ["task_metadata.json: a localization task needs embedding_type 'scene'"]
        return task, _direction_problems(task)
    if not metadata.get("evaluation"):
        return task, ["task_metadata.json lacks 'evaluation' (the metrics heareval scores)"]
    return task, []


def _known(metric: str) -> bool:
    """Whether ``evaluate`` scores a metric named in a task's ``evaluation``."""
    return metric in scoring.HIGHER_IS_BETTER or metric in published.SELD_METRICS


def _route(path: Path, metadata: dict) -> str:
    """The probe of a task: SELD for ``accdoa`` (and the old ``seld``, refused later),
    the direction probe for a localization prediction type or a scene task whose labels of
    its first split are directions, else heareval."""
    kind = metadata["prediction_type"]
    if kind in (published.ACCDOA, published.OUR_SELD):
        return SELD
    if kind in (*published.LOCALIZATION_TYPES, published.OUR_LOCALIZATION):
        return LOCALIZATION
    if metadata["embedding_type"] == "scene":
        labels = _split_labels(path, metadata["splits"][0])
        if labels and all(published.is_direction_label(v) for v in labels.values()):
            return LOCALIZATION
    return HEAREVAL


def _split_labels(path: Path, split: str) -> dict | None:
    try:
        labels = json.loads((path / f"{split}.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return labels if isinstance(labels, dict) else None


def _split_problems(splits: object) -> list[str]:
    """Split names that cannot become file names inside the task folder (they are read as
    ``<split>.json`` and ``<rate>/<split>/``): not plain single names, or not a list."""
    if not isinstance(splits, list) or not splits:
        return ["task_metadata.json 'splits' must be a non-empty list of split names"]
    return [
        f"split name {split!r} {problem}"
        for split in splits
        if (problem := name_problem(split, single=True))
    ]


def _direction_problems(task: TaskInfo) -> list[str]:
    """Labels of a localization task that are not directions (the first few)."""
    problems = []
    for split in task.metadata["splits"]:
        labels = _split_labels(task.path, split)
        if labels is None:
            problems.append(f"{split}.json is unreadable or not an object of file labels")
            continue
        for file, label in labels.items():
            try:
                published.direction_of(label)
            except ValueError as error:
                problems.append(f"{split}.json[{file!r}]: {error}")
                if len(problems) >= MAX_LISTED:
                    return problems
    return problems

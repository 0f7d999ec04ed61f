"""Running a model's embeddings and probes on its tasks: heareval's runners in subprocesses
(through :mod:`natheear_tasks.evaluation.heareval_embed` and
:mod:`natheear_tasks.evaluation.heareval_predict`, their output in
``OUT/runs/<label>/{embeddings,predictions}.log``), the direction probe on localization
tasks and the SELD probe on SELD tasks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tqdm import tqdm

from natheear_tasks import children
from natheear_tasks.evaluation import doa_probe, kit_protocol, seld_probe
from natheear_tasks.evaluation.discovery import TaskInfo
from natheear_tasks.evaluation.heareval_predict import TEST_OUTPUTS_SUFFIX
from natheear_tasks.evaluation.models import ModelSpec, Settings
from natheear_tasks.evaluation.task_scores import HEAREVAL_DONE, HEAREVAL_SCORES, test_folds
from natheear_tasks.formats.published import HEAREVAL_TYPES, LOCALIZATION_TYPES

TF_CHATTER = ("WARNING: All log messages", "I0000", "W0000", "E0000")
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p
    )
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def _run_logged(command: list[str], log: Path, what: str) -> None:
    with log.open("a") as handle:
        handle.write(f"\n$ {' '.join(command)}\n")
        handle.flush()
        code = children.run(
            command, stdout=handle, stderr=subprocess.STDOUT, env=_env(), cwd=log.parent
        )
    if code:
        lines = log.read_text(errors="replace").strip().splitlines()
        tail = [line for line in lines if not line.startswith(TF_CHATTER)][-8:]
        raise RuntimeError(
            f"{what} failed (exit {code}); full log: {log}\n    " + "\n    ".join(tail)
        )


def embed_dir_of(run_dir: Path, task: TaskInfo) -> Path | None:
    """The embeddings folder of ``task`` in a model's run folder, or None before embedding."""
    found = sorted((run_dir / "embeddings").glob(f"*/{task.name}"))
    if len(found) > 1:
        raise RuntimeError(f"{run_dir} holds several embeddings of {task.name}: {found}")
    return found[0] if found else None


def is_scored(embed_dir: Path | None, task: TaskInfo) -> bool:
    """Whether ``task``'s test scores are on disk in ``embed_dir`` (for its route)."""
    if embed_dir is None:
        return False
    if task.localization:
        return (embed_dir / doa_probe.SCORES_NAME).is_file()
    if task.seld:
        return (embed_dir / seld_probe.SCORES_NAME).is_file()
    outputs = [embed_dir / f"{fold}{TEST_OUTPUTS_SUFFIX}" for fold in test_folds(task)]
    return all(
        p.is_file() for p in [embed_dir / HEAREVAL_SCORES, embed_dir / HEAREVAL_DONE, *outputs]
    )


def stage_task(task: TaskInfo, link: Path) -> None:
    """Show ``task`` to heareval's embeddings runner at ``link``: a link to its folder, or,
    for a localization task whose prediction type heareval checks (``multiclass`` asks for
    one label per file, a direction has 3), a folder of links to its files beside a
    metadata that says ``cartesian-regression`` (the task folder itself is not touched)."""
    if not (task.localization and task.metadata["prediction_type"] in HEAREVAL_TYPES):
        link.symlink_to(task.path.resolve(), target_is_directory=True)
        return
    link.mkdir()
    for entry in task.path.resolve().iterdir():
        if entry.name != "task_metadata.json":
            (link / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    metadata = {**task.metadata, "prediction_type": LOCALIZATION_TYPES[0]}
    (link / "task_metadata.json").write_text(json.dumps(metadata, indent=2))


def embed(
    spec: ModelSpec, weights: Path | str | None, tasks: list[TaskInfo], run_dir: Path
) -> None:
    """Embed ``tasks`` with heareval's embeddings runner in a child process, into ``run_dir``."""
    staging = run_dir / "tasks"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    for task in tasks:
        stage_task(task, staging / task.name)
    command = [sys.executable, "-m", "natheear_tasks.evaluation.heareval_embed", spec.module]
    if weights is not None:
        command += ["--model", str(weights)]
    command += [
        "--tasks-dir",
        str(staging),
        "--embeddings-dir",
        str(run_dir / "embeddings"),
        "--model-options",
        json.dumps(spec.options),
    ]
    tqdm.write(
        f"[{spec.label}] embeddings of {len(tasks)} task(s) (log: {run_dir / 'embeddings.log'})"
    )
    try:
        _run_logged(command, run_dir / "embeddings.log", f"embeddings of {spec.label}")
    finally:
        shutil.rmtree(staging)


def predict(
    spec: ModelSpec, tasks: list[TaskInfo], run_dir: Path, settings: Settings, key: str
) -> None:
    """Train and test the probes of ``tasks`` (heareval's runner, the direction or SELD probe)."""
    dirs = {task.name: embed_dir_of(run_dir, task) for task in tasks}
    missing = sorted(name for name, d in dirs.items() if d is None)
    if missing:
        raise RuntimeError(f"the embeddings runner wrote nothing for {missing}")
    heareval_dirs = [str(dirs[t.name]) for t in tasks if not (t.localization or t.seld)]
    if heareval_dirs:
        tqdm.write(
            f"[{spec.label}] heareval predictions for {len(heareval_dirs)} task(s) "
            f"(log: {run_dir / 'predictions.log'})"
        )
        command = [sys.executable, "-m", "natheear_tasks.evaluation.heareval_predict"]
        command += heareval_dirs
        command += ["--grid", settings.grid, "--grid-points", str(settings.grid_points)]
        command += ["--seed", str(settings.seed), "--model-key", key]
        _run_logged(command, run_dir / "predictions.log", f"predictions of {spec.label}")
    kit = settings.protocol == kit_protocol.NAME
    arguments = (settings.grid, settings.grid_points, settings.seed)
    for task in tasks:
        if task.localization:
            tqdm.write(f"[{spec.label}] localization probe on {task.name}")
            score = kit_protocol.score_localization_task if kit else doa_probe.score_task
            score(dirs[task.name], *arguments, key)
        elif task.seld:
            tqdm.write(f"[{spec.label}] SELD probe on {task.name}")
            score = kit_protocol.score_seld_task if kit else seld_probe.score_task
            score(dirs[task.name], task.path, *arguments, key)

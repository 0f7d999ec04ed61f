"""``natheear-tasks evaluate``: embeddings, downstream probes and the report for HEAR
and Nat-HEAR task directories, for one model or several side by side.

Data flow, per model::

    TASKS/<task>  --heareval embeddings runner-->  OUT/runs/<label>/embeddings/<module>/<task>
        classification / event tasks --heareval predictions runner--> test.predicted-scores.json
        localization tasks           --doa_probe (MLP -> direction)-> test.doa-scores.json
        SELD tasks                   --seld_probe (multi-ACCDOA) ---> test.seld-scores.json
    all models  -->  OUT/summary.json, OUT/summary.md, OUT/scores.png, OUT/doa_errors.png

The heareval runners run as subprocesses through
:mod:`natheear_tasks.evaluation.heareval_embed` and
:mod:`natheear_tasks.evaluation.heareval_predict` (which fix them at run time); their output goes to
``OUT/runs/<label>/{embeddings,predictions}.log``. A task already scored for a model is
skipped unless ``--force``; ``OUT/runs/<label>/model.json`` records which weights and probe
settings made the scores, and a run with other weights or settings under the same label
stops with an error instead of mixing results.

Reproducible: every probe is trained from a seed derived from ``--seed`` and (task, model,
fold, grid point), with one intra-op thread (:mod:`natheear_tasks.evaluation.determinism`),
so the same tasks, models and options give the same scores with any thread count; the
CPU, library versions and thread counts go into ``summary.json``. Every score carries a
95 % confidence interval (:mod:`natheear_tasks.evaluation.intervals`), s(m) too.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hear_gram.checkpoint import CONFIG_NAME
from natheear_tasks.evaluation import (
    determinism,
    doa_probe,
    intervals,
    report,
    scoring,
    seld_probe,
)
from natheear_tasks.evaluation.heareval_embed import RANDOM
from natheear_tasks.evaluation.heareval_predict import TEST_OUTPUTS_SUFFIX
from natheear_tasks.evaluation.probe_training import fold_name
from natheear_tasks.exits import run_command
from natheear_tasks.paths import name_problem
from natheear_tasks.pool import run_jobs
from natheear_tasks.seeding import derive_seed
from natheear_tasks.tasks import localize
from natheear_tasks.tasks.taskdir import atomic_write_bytes, atomic_write_json

HEAREVAL_SCORES = "test.predicted-scores.json"
HEAREVAL_DONE = "prediction-done.json"
GRID_NAMES = tuple(doa_probe.GRIDS)
TF_CHATTER = ("WARNING: All log messages", "I0000", "W0000", "E0000")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_HUB_REF = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class UsageError(ValueError):
    """Bad command-line input or task directories (exit code 2)."""


class ModelUnavailable(RuntimeError):
    """A model's weights cannot be had here (e.g. a Hub download while offline)."""


class ScoreUnavailable(RuntimeError):
    """A probe's test scores are undefined (a SELD task's test files without any event)."""


@dataclass
class ModelSpec:
    """One model to evaluate: a HEAR module, its weights (or none) and load options."""

    label: str
    module: str
    model: str | None = None
    options: dict = field(default_factory=dict)
    optional: bool = False


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


@dataclass
class Settings:
    """Probe settings shared by heareval's predictions runner, the localization probe and
    the SELD probe; ``seed`` also seeds the bootstrap."""

    grid: str = "default"
    grid_points: int = 8
    seed: int = determinism.DEFAULT_SEED

    def as_dict(self) -> dict:
        return {"grid": self.grid, "grid_points": self.grid_points, "seed": self.seed}


@dataclass
class ModelResult:
    """What happened to one model, and its scores (``{task: entry}``)."""

    spec: ModelSpec
    status: str = "ok"
    reason: str = ""
    scores: dict[str, dict] = field(default_factory=dict)
    errors: dict[str, list[float]] = field(default_factory=dict)
    # Per task: the test items (fold, name) and the primary score of each bootstrap
    # resample, paired across models (the same items, the same resamples).
    items: dict[str, tuple] = field(default_factory=dict)
    resampled: dict[str, np.ndarray] = field(default_factory=dict)


# --- inputs -------------------------------------------------------------------------------


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


def _broadcast(values: list, count: int, flag: str) -> list:
    if len(values) == count:
        return values
    if len(values) == 1:
        return values * count
    raise UsageError(
        f"{flag} given {len(values)} times for {count} models; give it once or once per model"
    )


def _default_label(module: str, model: str | None) -> str:
    if model:
        return Path(model.rstrip("/")).name.split("@")[0] or module
    return module.rsplit(".", 1)[-1]


def _options(text: str, flag: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"{flag} {text!r} is not JSON ({error})") from error
    if not isinstance(value, dict):
        raise UsageError(f"{flag} must be a JSON object such as '{{\"sample_rate\": 16000}}'")
    return value


def specs_from_args(args: argparse.Namespace) -> list[ModelSpec]:
    """Model specs from ``--models FILE`` or from ``--module/--model/--label/--model-options``."""
    if args.models:
        if args.module or args.model or args.label or args.model_options:
            raise UsageError(
                "--models FILE cannot be combined with --module/--model/--label/--model-options"
            )
        specs = load_models_file(Path(args.models))
    else:
        models = [None if m.lower() in ("", "none") else m for m in (args.model or [])]
        count = max(len(args.module or []), len(models), 1)
        modules = _broadcast(args.module or ["hear_gram"], count, "--module")
        models = _broadcast(models or [None], count, "--model")
        options = _broadcast(
            [_options(o, "--model-options") for o in args.model_options or ["{}"]],
            count,
            "--model-options",
        )
        labels = args.label or [_default_label(m, w) for m, w in zip(modules, models, strict=True)]
        if len(labels) != count:
            raise UsageError(f"--label given {len(labels)} times for {count} models")
        specs = [
            ModelSpec(label, module, model, option)
            for label, module, model, option in zip(labels, modules, models, options, strict=True)
        ]
    check_specs(specs)
    return specs


def load_models_file(path: Path) -> list[ModelSpec]:
    """Models from a JSON list of ``{"label", "module", "model"?, "options"?, "optional"?}``;
    relative model paths are taken from the file's folder."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UsageError(f"--models {path} cannot be read as JSON ({error})") from error
    if not isinstance(raw, list) or not raw:
        raise UsageError(f"--models {path} must hold a non-empty JSON list of models")
    specs = []
    for index, entry in enumerate(raw):
        where = f"{path}[{index}]"
        if not isinstance(entry, dict) or "module" not in entry:
            raise UsageError(f"{where}: each model needs at least a 'module'")
        unknown = sorted(set(entry) - {"label", "module", "model", "options", "optional"})
        if unknown:
            raise UsageError(f"{where}: unknown fields {unknown}")
        model = entry.get("model") or None
        if model and not Path(model).is_absolute() and (path.parent / model).exists():
            model = str(path.parent / model)
        options = entry.get("options", {})
        if not isinstance(options, dict):
            raise UsageError(f"{where}: 'options' must be a JSON object")
        label = entry.get("label") or _default_label(entry["module"], model)
        specs.append(ModelSpec(label, entry["module"], model, options, bool(entry.get("optional"))))
    return specs


def check_specs(specs: list[ModelSpec]) -> None:
    labels = [s.label for s in specs]
    for label in labels:
        if not _LABEL.match(label):
            raise UsageError(
                f"model label {label!r} must be letters, digits and _ . + - (it names a folder)"
            )
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise UsageError(f"models share the labels {duplicates}; pass --label for each model")


def module_sample_rate(spec: ModelSpec) -> tuple[int | None, str]:
    """The rate a model will take, and where that was read: its ``sample_rate`` option, the
    module's ``DEFAULT_SAMPLE_RATE`` constant, the default of ``load_model``'s
    ``sample_rate`` parameter, or else the ``sample_rate`` of the model loaded once (local
    weights or none only; a Hub model is not downloaded for this). ``None`` and the reason
    when it cannot be known before embedding.

    Raises:
        UsageError: the module cannot be imported.
    """
    if "sample_rate" in spec.options:
        return spec.options["sample_rate"], "its sample_rate option"
    try:
        module = importlib.import_module(spec.module)
    except ImportError as error:
        raise UsageError(
            f"--module {spec.module!r} ({spec.label}) cannot be imported: {error}"
        ) from error
    constant = getattr(module, "DEFAULT_SAMPLE_RATE", None)
    if isinstance(constant, int):
        return constant, f"the default of {spec.module}"
    load = getattr(module, "load_model", None)
    if load is None:
        raise UsageError(f"--module {spec.module!r} ({spec.label}) has no load_model")
    try:
        parameter = inspect.signature(load).parameters.get("sample_rate")
    except (TypeError, ValueError):
        parameter = None
    if parameter is not None and isinstance(parameter.default, int):
        return parameter.default, f"the default of {spec.module}.load_model"
    if spec.model is not None and spec.model != RANDOM and not Path(spec.model).exists():
        return None, "its weights are not local yet"
    try:
        model = load(spec.model, **spec.options) if spec.model else load(**spec.options)
    except Exception as error:  # a third-party module may raise anything
        return None, f"load_model failed ({type(error).__name__}: {error})"
    return getattr(model, "sample_rate", None), f"{spec.module}.load_model(...).sample_rate"


def check_sample_rates(specs: list[ModelSpec], tasks: list[TaskInfo]) -> list[str]:
    """Every task has a folder at the rate each model will take (:func:`module_sample_rate`).

    Returns:
        Notes on models whose rate cannot be known before embedding.
    Raises:
        UsageError: a task lacks a model's rate; names the option that sets it.
    """
    problems, notes = [], []
    for spec in specs:
        rate, source = module_sample_rate(spec)
        if rate is None:
            notes.append(f"{spec.label}: sample rate not checked before embedding: {source}")
            continue
        for task in tasks:
            if not (task.path / str(rate)).is_dir():
                present = sorted(p.name for p in task.path.iterdir() if p.name.isdigit())
                fix = {**spec.options, "sample_rate": int(present[0])} if present else None
                advice = f"; pass --model-options '{json.dumps(fix)}'" if fix else ""
                problems.append(
                    f"{spec.label} takes {rate} Hz ({source}), but {task.name} has only "
                    f"{present}{advice}"
                )
    if problems:
        raise UsageError(
            'sample rates do not match (set "sample_rate" in --model-options, or in the '
            'model\'s "options" of --models):\n  ' + "\n  ".join(problems)
        )
    return notes


def check_references(
    refs: scoring.References, specs: list[ModelSpec], tasks: list[TaskInfo]
) -> None:
    """Check a references file against the tasks and models before any work starts."""
    no_scores: dict[str, dict[str, float]] = {s.label: {} for s in specs}
    for task in tasks:
        scoring.resolve_reference(refs, task.name, task.metric, no_scores)


# --- weights ------------------------------------------------------------------------------


def resolve_weights(spec: ModelSpec) -> Path | str | None:
    """A local path for the model's weights: the path itself, or a Hub snapshot; ``"random"``
    (untrained, seeded weights, as hear_gram's ``load_model`` takes them) unless a file or
    folder of that name exists.

    Raises:
        ModelUnavailable: a Hub reference that cannot be downloaded nor found in the cache.
        UsageError: neither an existing path nor a Hub reference.
    """
    if spec.model is None:
        return None
    path = Path(spec.model).expanduser()
    if path.exists():
        return path.resolve()
    if spec.model == RANDOM:
        return RANDOM
    if _HUB_REF.match(spec.model) and not spec.model.startswith((".", "/", "~")):
        from hear_gram.checkpoint import download
        from hear_gram.errors import CheckpointError

        try:
            return download(spec.model)
        except CheckpointError as error:
            cause = error.__context__ or error
            detail = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
            raise ModelUnavailable(
                f"{spec.model} could not be downloaded from the Hugging Face Hub and is not in "
                f"the local cache ({type(cause).__name__}: {detail}); on a machine with network "
                f"access run `hf download {spec.model}`, then copy HF_HOME here"
            ) from error
    raise UsageError(
        f"--model {spec.model!r} ({spec.label}) is neither an existing file or folder, nor a "
        f"Hugging Face Hub reference org/name[@revision], nor {RANDOM!r}"
    )


def weights_digest(path: Path | str | None) -> str | None:
    """sha256 over a weights file, or over every file of a checkpoint folder (None for no
    weights or ``"random"``).

    A hear_gram ``config.json`` enters without its ``metadata`` (where and how the weights
    were made: run folders, a twin's path), so the same weights exported to another folder
    or machine get the same digest, hence the same probe seeds and scores.
    """
    if not isinstance(path, Path):
        return None
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        if path.is_dir() and file.relative_to(path) == Path(CONFIG_NAME):
            config = json.loads(file.read_text())
            config.pop("metadata", None)
            digest.update(json.dumps(config, sort_keys=True).encode())
            continue
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


# --- running ------------------------------------------------------------------------------


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
        code = subprocess.run(
            command, stdout=handle, stderr=subprocess.STDOUT, env=_env(), cwd=log.parent
        ).returncode
    if code:
        lines = log.read_text(errors="replace").strip().splitlines()
        tail = [line for line in lines if not line.startswith(TF_CHATTER)][-8:]
        raise RuntimeError(
            f"{what} failed (exit {code}); full log: {log}\n    " + "\n    ".join(tail)
        )


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


def _test_folds(task: TaskInfo) -> list[str]:
    """heareval's names of the task's test folds (``["test"]``, or one per k-fold fold)."""
    return [fold_name(p) for p in doa_probe.data_splits(task.metadata)]


def _is_scored(embed_dir: Path | None, task: TaskInfo) -> bool:
    if embed_dir is None:
        return False
    if task.localization:
        return (embed_dir / doa_probe.SCORES_NAME).is_file()
    if task.seld:
        return (embed_dir / seld_probe.SCORES_NAME).is_file()
    outputs = [embed_dir / f"{fold}{TEST_OUTPUTS_SUFFIX}" for fold in _test_folds(task)]
    return all(
        p.is_file() for p in [embed_dir / HEAREVAL_SCORES, embed_dir / HEAREVAL_DONE, *outputs]
    )


def _labels(embed_dir: Path) -> list[str]:
    """The label vocabulary in index order."""
    with (embed_dir / "labelvocabulary.csv").open(newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: int(row["idx"]))
    return [str(row["label"]) for row in rows]


def heareval_items(task: TaskInfo, embed_dir: Path) -> intervals.ItemStats:
    """Per-item statistics of a heareval-scored task from its ``<fold>.test-outputs.json``."""
    names, stats, folds = [], [], []
    labels = None
    for fold in _test_folds(task):
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
    return intervals.TaskScores(
        entry={
            "score": values[task.metric],
            "mean": values["mean_doa_error_deg"],
            "median": values["median_doa_error_deg"],
            "std": None,
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


def _embed_dir(run_dir: Path, task: TaskInfo) -> Path | None:
    found = sorted((run_dir / "embeddings").glob(f"*/{task.name}"))
    if len(found) > 1:
        raise RuntimeError(f"{run_dir} holds several embeddings of {task.name}: {found}")
    return found[0] if found else None


@dataclass
class Prepared:
    """A model ready to run: its weights on disk (or ``"random"``), its run folder and the
    key that seeds its probes (:func:`~natheear_tasks.evaluation.determinism.model_key`)."""

    result: ModelResult
    weights: Path | str | None = None
    run_dir: Path | None = None
    key: str = ""


def prepare_model(spec: ModelSpec, out: Path, settings: Settings, force: bool) -> Prepared:
    """Resolve the weights (downloading Hub references) and check the run folder's record.

    Raises:
        UsageError: the run folder holds results of other weights or settings (no --force).
    """
    result = ModelResult(spec)
    try:
        weights = resolve_weights(spec)
    except ModelUnavailable as error:
        result.status, result.reason = "unavailable", str(error)
        tqdm.write(f"[{spec.label}] unavailable: {error}")
        return Prepared(result)
    run_dir = out / "runs" / spec.label
    digest = weights_digest(weights)
    fingerprint = {
        "module": spec.module,
        "model": str(weights) if weights else None,
        "weights_sha256": digest,
        "options": spec.options,
        **settings.as_dict(),
    }
    record = run_dir / "model.json"
    if record.is_file():
        old = json.loads(record.read_text())
        if old != fingerprint:
            if not force:
                changed = sorted(
                    k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k)
                )
                raise UsageError(
                    f"{run_dir} holds results of another model or probe setting (differs in "
                    f"{changed}); pass --force to recompute, or use another --label or --out"
                )
            shutil.rmtree(run_dir)
    atomic_write_json(record, fingerprint, indent=2)
    key = determinism.model_key(spec.module, digest, fingerprint["model"], spec.options)
    return Prepared(result, weights, run_dir, key)


def evaluate_model(
    prepared: Prepared, tasks: list[TaskInfo], settings: Settings, force: bool
) -> ModelResult:
    """Embed, probe and score ``tasks`` with one prepared model; failures end up in the
    result (status ``failed`` and the reason), scores already on disk are collected."""
    result, run_dir = prepared.result, prepared.run_dir
    if run_dir is None:
        return result
    spec = result.spec
    pending = []
    for task in tasks:
        embed_dir = _embed_dir(run_dir, task)
        if force and embed_dir is not None:
            shutil.rmtree(embed_dir)
            embed_dir = None
        if not _is_scored(embed_dir, task):
            pending.append(task)
    try:
        if pending:
            _embed(spec, prepared.weights, pending, run_dir)
            _predict(spec, pending, run_dir, settings, prepared.key)
    except (RuntimeError, ValueError) as error:
        result.status, result.reason = "failed", str(error).splitlines()[0]
        tqdm.write(f"[{spec.label}] {error}")
    for task in tasks:
        embed_dir = _embed_dir(run_dir, task)
        if not _is_scored(embed_dir, task):
            continue
        try:
            entry, items, resampled = score_entry(task, embed_dir, settings.seed)
        except (intervals.DecompositionError, ScoreUnavailable) as error:
            result.status, result.reason = "failed", f"{task.name}: {error}"
            tqdm.write(f"[{spec.label}] {result.reason}")
            continue
        result.scores[task.name] = entry
        result.items[task.name], result.resampled[task.name] = items.key, resampled
        if task.localization:
            errors = json.loads((embed_dir / doa_probe.SCORES_NAME).read_text())["errors_deg"]
            result.errors[task.name] = list(errors.values())
    return result


def _embed(
    spec: ModelSpec, weights: Path | str | None, tasks: list[TaskInfo], run_dir: Path
) -> None:
    staging = run_dir / "tasks"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    for task in tasks:
        (staging / task.name).symlink_to(task.path.resolve(), target_is_directory=True)
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


def _predict(
    spec: ModelSpec, tasks: list[TaskInfo], run_dir: Path, settings: Settings, key: str
) -> None:
    dirs = {task.name: _embed_dir(run_dir, task) for task in tasks}
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
    for task in tasks:
        if task.localization:
            tqdm.write(f"[{spec.label}] localization probe on {task.name}")
            doa_probe.score_task(
                dirs[task.name], settings.grid, settings.grid_points, settings.seed, key
            )
        elif task.seld:
            tqdm.write(f"[{spec.label}] SELD probe on {task.name}")
            seld_probe.score_task(
                dirs[task.name], task.path, settings.grid, settings.grid_points, settings.seed, key
            )


# --- the whole evaluation -------------------------------------------------------------------


def summarize(
    results: list[ModelResult],
    tasks: list[TaskInfo],
    settings: Settings,
    references: scoring.References | None,
) -> dict:
    """The ``summary.json`` content (see :mod:`natheear_tasks.evaluation.report`)."""
    scores = {r.spec.label: r.scores for r in results}
    s_m = None
    if references is not None:
        metrics = {t.name: t.metric for t in tasks}
        primary = {
            label: {t: e["score"] for t, e in by_task.items()} for label, by_task in scores.items()
        }
        s_m = scoring.s_m(references, metrics, primary)
        s_m["source"] = references.source
        resampled, unpaired = paired_resamples(results, list(s_m["references"]))
        per_model = scoring.s_m_resampled(references, metrics, list(s_m["references"]), resampled)
        for label, entry in s_m["models"].items():
            values = per_model.get(label)
            usable = values is not None and entry["s_m"] is not None
            entry["ci95"] = intervals.percentile_interval(values) if usable else None
            entry["resamples"] = int(np.isfinite(values).sum()) if usable else 0
        s_m["unpaired"] = unpaired
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "models": [
            {
                "label": r.spec.label,
                "module": r.spec.module,
                "model": r.spec.model,
                "options": r.spec.options,
                "status": r.status,
                "reason": r.reason,
            }
            for r in results
        ],
        "tasks": [t.describe() for t in tasks],
        "scores": scores,
        "s_m": s_m,
        "settings": {
            **settings.as_dict(),
            "resamples": intervals.RESAMPLES,
            "ci_level": intervals.LEVEL,
        },
        "environment": determinism.environment(),
    }


def paired_resamples(
    results: list[ModelResult], tasks: list[str]
) -> tuple[dict[str, dict[str, np.ndarray]], list[str]]:
    """``{label: {task: resampled scores}}`` for the tasks every scored model was tested on
    with the same items (so their resamples are the same clips), and the tasks where the
    models' test items differ (a task directory changed between runs): left out."""
    unpaired = sorted(
        task for task in tasks if len({r.items[task] for r in results if task in r.items}) > 1
    )
    resampled = {
        r.spec.label: {t: v for t, v in r.resampled.items() if t not in unpaired} for r in results
    }
    return resampled, unpaired


def write_report(summary: dict, results: list[ModelResult], out: Path) -> list[Path]:
    """Write ``summary.json``, ``summary.md`` and the PNG plots into ``out``."""
    atomic_write_json(out / "summary.json", summary, indent=2)
    atomic_write_bytes(out / "summary.md", report.markdown_table(summary).encode())
    written = [
        out / "summary.json",
        out / "summary.md",
        report.plot_scores(summary, out / "scores.png"),
    ]
    errors: dict[str, dict[str, list[float]]] = {}
    for result in results:
        for task, values in result.errors.items():
            errors.setdefault(task, {})[result.spec.label] = values
    if errors:
        written.append(report.plot_doa_errors(errors, out / "doa_errors.png"))
    return written


def _evaluate_job(job: tuple[int, Prepared, list[TaskInfo], Settings, bool]) -> tuple:
    """:func:`evaluate_model` in a worker process: ``(index, result)``."""
    index, *arguments = job
    return index, evaluate_model(*arguments)


def evaluate(
    specs: list[ModelSpec],
    tasks: list[TaskInfo],
    out: Path,
    settings: Settings,
    references: scoring.References | None = None,
    force: bool = False,
    jobs: int = 1,
) -> tuple[dict, list[ModelResult]]:
    """Evaluate every model on every task, then write the report into ``out``; ``jobs``
    models at a time, each in a process of its own (the scores do not depend on ``jobs``:
    every probe is seeded by its own names and trained with one thread).

    Raises:
        UsageError: a task lacks a model's sample rate (checked before any work).
    """
    for note in check_sample_rates(specs, tasks):
        tqdm.write(f"note: {note}")
    out.mkdir(parents=True, exist_ok=True)
    prepared = [prepare_model(spec, out.resolve(), settings, force) for spec in specs]
    if jobs <= 1:
        results = [
            evaluate_model(p, tasks, settings, force)
            for p in tqdm(prepared, desc="models", unit="model")
        ]
    else:
        work = [(i, p, tasks, settings, force) for i, p in enumerate(prepared)]
        workers = min(jobs, len(work))
        done = dict(run_jobs(_evaluate_job, work, workers, desc="models", unit="model"))
        results = [done[i] for i in range(len(prepared))]
    summary = summarize(results, tasks, settings, references)
    write_report(summary, results, out)
    return summary, results


def exit_code(results: list[ModelResult]) -> int:
    """1 if a required model is unavailable or any model failed, else 0."""
    bad = [
        r
        for r in results
        if r.status == "failed" or (r.status == "unavailable" and not r.spec.optional)
    ]
    return 1 if bad else 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``evaluate`` subcommand."""
    parser = subparsers.add_parser(
        "evaluate",
        help="embed task directories with HEAR modules, train the downstream probes, report",
        description=(
            "Evaluate HEAR modules on HEAR / Nat-HEAR task directories: embeddings through "
            "heareval's runner, classification and event tasks through heareval's predictions "
            "runner, localization tasks through an MLP direction probe (mean and median DoA "
            "error in degrees), SELD tasks through a multi-ACCDOA frame probe (SELD score, "
            "ER20, F20, LE_CD, LR_CD), and s(m) given --references. Writes OUT/summary.json, "
            "OUT/summary.md and OUT/*.png. Several models: repeat --model (and --module, "
            "--label, --model-options once or once per model), or pass --models FILE."
        ),
    )
    parser.add_argument("--module", action="append", help="HEAR module (default hear_gram)")
    parser.add_argument(
        "--model",
        action="append",
        help="weights: checkpoint folder, file, or Hub reference org/name; 'random' for "
        "untrained seeded weights (hear_gram); 'none' for none",
    )
    parser.add_argument("--label", action="append", help="name of the model in the report")
    parser.add_argument("--model-options", action="append", help="JSON object passed to load_model")
    parser.add_argument(
        "--models", help="JSON list of {label, module, model, options, optional} (instead)"
    )
    parser.add_argument("--tasks-dir", required=True, help="folder of task directories")
    parser.add_argument("--task", action="append", help="only this task (repeatable)")
    parser.add_argument("--out", required=True, help="results folder")
    parser.add_argument(
        "--references", help="JSON or CSV with a baseline and a best score per task, for s(m)"
    )
    parser.add_argument("--grid", choices=GRID_NAMES, default="default", help="probe grid")
    parser.add_argument(
        "--grid-points", type=int, default=8, help="probe grid points searched (default 8)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=determinism.DEFAULT_SEED,
        help="base seed of the probes (one per task, model, fold and grid point) and of the "
        "bootstrap intervals (default %(default)s, heareval's)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="models evaluated at once, each in a process of its own; the scores are the same "
        "for any number (default %(default)s)",
    )
    parser.add_argument("--force", action="store_true", help="recompute tasks already scored")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``evaluate``; prints the results table. Exit 0 ok, 1 a model failed, 2 bad input."""
    return run_command(lambda: _run(args), (UsageError, scoring.ReferenceError), stopped=None)


def _run(args: argparse.Namespace) -> int:
    if args.grid_points < 1:
        raise UsageError("--grid-points must be at least 1")
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    specs = specs_from_args(args)
    tasks = find_tasks(Path(args.tasks_dir), args.task)
    references = scoring.load_references(args.references) if args.references else None
    if references is not None:
        check_references(references, specs, tasks)
    settings = Settings(args.grid, args.grid_points, args.seed)
    out = Path(args.out)
    summary, results = evaluate(specs, tasks, out, settings, references, args.force, args.jobs)
    print(report.markdown_table(summary))
    print(f"results: {out / 'summary.md'}, {out / 'summary.json'}, {out}/*.png")
    return exit_code(results)

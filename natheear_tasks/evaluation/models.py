"""The models of an ``evaluate`` run: their specs (command line or ``--models`` file), the
sample rate each will take, their weights on disk (Hub references downloaded), and the run
folder that records which weights and probe settings made its scores."""

from __future__ import annotations

import argparse
import hashlib
import importlib
import inspect
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hear_gram.checkpoint import CONFIG_NAME
from natheear_tasks.evaluation import determinism
from natheear_tasks.evaluation.discovery import TaskInfo
from natheear_tasks.evaluation.errors import ModelUnavailable, UsageError
from natheear_tasks.evaluation.heareval_embed import RANDOM
from natheear_tasks.tasks.taskdir import atomic_write_json

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_HUB_REF = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


@dataclass
class ModelSpec:
    """One model to evaluate: a HEAR module, its weights (or none) and load options."""

    label: str
    module: str
    model: str | None = None
    options: dict = field(default_factory=dict)
    optional: bool = False


@dataclass
class Settings:
    """Probe settings shared by heareval's predictions runner, the localization probe and
    the SELD probe; ``seed`` also seeds the bootstrap."""

    grid: str = "default"
    grid_points: int = 8
    seed: int = determinism.DEFAULT_SEED
    protocol: str = "natheear"  # or "listen-eval-kit" (natheear_tasks.evaluation.kit_protocol)

    def as_dict(self) -> dict:
        """The settings; the protocol only when it is not the default, so that runs recorded
        before it existed keep their fingerprint."""
        found = {"grid": self.grid, "grid_points": self.grid_points, "seed": self.seed}
        return found if self.protocol == "natheear" else {**found, "protocol": self.protocol}


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


@dataclass
class Prepared:
    """A model ready to run: its weights on disk (or ``"random"``), its run folder and the
    key that seeds its probes (:func:`~natheear_tasks.evaluation.determinism.model_key`)."""

    result: ModelResult
    weights: Path | str | None = None
    run_dir: Path | None = None
    key: str = ""


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
    """Raise :class:`UsageError` for a label that cannot name a folder or is used twice."""
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

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
import json
import shutil
from pathlib import Path

from tqdm import tqdm

from natheear_tasks import locks
from natheear_tasks.evaluation import (
    determinism,
    doa_probe,
    intervals,
    kit_protocol,
    report,
    scoring,
)
from natheear_tasks.evaluation.discovery import TaskInfo, find_tasks
from natheear_tasks.evaluation.errors import ScoreUnavailable, UsageError
from natheear_tasks.evaluation.models import (
    ModelResult,
    ModelSpec,
    Prepared,
    Settings,
    check_sample_rates,
    prepare_model,
    specs_from_args,
)
from natheear_tasks.evaluation.runs import embed, embed_dir_of, is_scored, predict
from natheear_tasks.evaluation.task_scores import score_entry
from natheear_tasks.exits import RESUMABLE, run_command
from natheear_tasks.pool import run_jobs

GRID_NAMES = tuple(doa_probe.GRIDS)


def check_references(
    refs: scoring.References, specs: list[ModelSpec], tasks: list[TaskInfo]
) -> None:
    """Check a references file against the tasks and models before any work starts."""
    no_scores: dict[str, dict[str, float]] = {s.label: {} for s in specs}
    for task in tasks:
        scoring.resolve_reference(refs, task.name, task.metric, no_scores)


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
        embed_dir = embed_dir_of(run_dir, task)
        if force and embed_dir is not None:
            shutil.rmtree(embed_dir)
            embed_dir = None
        if not is_scored(embed_dir, task):
            pending.append(task)
    try:
        if pending:
            embed(spec, prepared.weights, pending, run_dir)
            predict(spec, pending, run_dir, settings, prepared.key)
    except (RuntimeError, ValueError, OSError) as error:  # OSError: its log or output
        result.status, result.reason = "failed", str(error).splitlines()[0]
        tqdm.write(f"[{spec.label}] {error}")
    for task in tasks:
        embed_dir = embed_dir_of(run_dir, task)
        if not is_scored(embed_dir, task):
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
    summary = report.summarize(results, tasks, settings, references)
    report.write_report(summary, results, out)
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
    parser.add_argument(
        "--protocol",
        choices=kit_protocol.PROTOCOLS,
        default=kit_protocol.OURS,
        help="how localization and SELD probes are trained and scored: natheear (default: "
        "multi-ACCDOA with ADPIT on label frames, deterministic, with intervals) or "
        "listen-eval-kit (as the GRAM authors' kit: single ACCDOA per embedding step, MSE, "
        "norm > 0.5, their metrics), to set scores beside the paper's",
    )
    parser.add_argument("--force", action="store_true", help="recompute tasks already scored")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``evaluate``; prints the results table. Exit 0 ok, 1 a model failed, 2 bad input."""
    return run_command(lambda: _run(args), (UsageError, scoring.ReferenceError), RESUMABLE)


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
    settings = Settings(args.grid, args.grid_points, args.seed, args.protocol)
    out = Path(args.out)
    created = not out.exists()
    try:
        with locks.hold(out / ".evaluate.lock", str(out), remove=True):
            summary, results = evaluate(
                specs, tasks, out, settings, references, args.force, args.jobs
            )
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # refused before any work: leave no empty results folder behind
    print(report.markdown_table(summary))
    print(f"results: {out / 'summary.md'}, {out / 'summary.json'}, {out}/*.png")
    return exit_code(results)

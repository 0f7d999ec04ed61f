"""The evaluation report: ``summary.json`` (scores, intervals, s(m), settings, machine), its
Markdown table and the PNG plots.

Summary layout (written by :mod:`natheear_tasks.evaluation.evaluate`)::

    {"models": [{"label", "module", "model", "options", "status": "ok" | "unavailable" |
                 "failed", "reason"}],
     "tasks": [{"name", "embedding_type", "prediction_type", "metric", "higher_is_better"}],
     "scores": {label: {task: {"score", "ci95": [low, high], "ci95_method", "items", "std",
                               "mean"?, "mean_ci95"?, "median"?, "median_ci95"?,
                               "ER20"?, "ER20_ci95"?, "F20"?, ... "LR_CD_ci95"?}}},
     "s_m": null | {"references", "skipped", "unpaired",
                    "models": {label: {"s_m", "ci95", "resamples", ...}}},
     "settings": {...}, "environment": {...}}

A value with its interval prints as ``value ± half-width`` when the interval is symmetric
about the value (its two arms differ by at most a fifth of the half-width), else as
``value [low, high]``.
"""

from __future__ import annotations

import io
import math
import time
from pathlib import Path

import numpy as np

from natheear_tasks.evaluation import determinism, intervals, scoring
from natheear_tasks.evaluation.discovery import TaskInfo
from natheear_tasks.evaluation.models import ModelResult, Settings
from natheear_tasks.tasks.taskdir import atomic_write_bytes, atomic_write_json

SYMMETRY = 0.2
METRIC_NAMES = {
    "mean_doa_error_deg": "DoA error, mean / median",
    "median_doa_error_deg": "DoA error, mean / median (primary)",
    "top1_acc": "accuracy",
    "event_onset_200ms_fms": "onset F (200 ms)",
    "segment_1s_er": "segment error rate (1 s)",
    "seld_score": "SELD score",
}
# A SELD task's cell: its SELD score, then these (name, higher is better, digits, unit).
SELD_PARTS = (
    ("ER20", False, 2, ""),
    ("F20", True, 2, ""),
    ("LE_CD", False, 1, "°"),
    ("LR_CD", True, 2, ""),
)


def _arrow(higher_is_better: bool) -> str:
    return "↑" if higher_is_better else "↓"


def metric_label(task: dict) -> str:
    """The metric column of a task: its name and an arrow for the better direction (a SELD
    task: the SELD score, then ER20 / F20 / LE_CD / LR_CD, each with its arrow)."""
    label = f"{METRIC_NAMES.get(task['metric'], task['metric'])} {_arrow(task['higher_is_better'])}"
    if task["metric"] == "seld_score":
        label += " (" + " / ".join(f"{n} {_arrow(up)}" for n, up, _, _ in SELD_PARTS) + ")"
    return label


def format_interval(value: float, ci: list[float] | None, digits: int, unit: str = "") -> str:
    """``0.873 ± 0.021``, ``0.973 [0.920, 1.000]`` (asymmetric) or ``0.873`` (no interval)."""
    text = f"{value:.{digits}f}{unit}"
    if ci is None or not all(math.isfinite(x) for x in ci):
        return text
    low, high = ci
    half = (high - low) / 2
    if abs((high - value) - (value - low)) <= SYMMETRY * half:
        return f"{text} ± {half:.{digits}f}"
    return f"{text} [{low:.{digits}f}, {high:.{digits}f}]"


def format_score(task: dict, entry: dict | None) -> str:
    """One table cell: ``0.873 ± 0.021``, ``0.973 [0.920, 1.000]``; for DoA errors
    ``23.4° ± 2.0 / 18.1° [15.2, 22.9]`` (mean / median); for SELD tasks ``0.612 ± 0.020
    (0.81 ± 0.05 / 0.20 ± 0.04 / 45.3° ± 3.1 / 0.52 ± 0.06)`` (SELD score (ER20 / F20 /
    LE_CD / LR_CD))."""
    if entry is None:
        return "n/a"
    if task["metric"].endswith("doa_error_deg"):
        mean = format_interval(entry["mean"], entry.get("mean_ci95"), 1, "°")
        return f"{mean} / {format_interval(entry['median'], entry.get('median_ci95'), 1, '°')}"
    score = format_interval(entry["score"], entry.get("ci95"), 3)
    if task["metric"] == "seld_score":
        parts = [
            format_interval(entry[name], entry.get(f"{name}_ci95"), digits, unit)
            for name, _, digits, unit in SELD_PARTS
        ]
        score += " (" + " / ".join(parts) + ")"
    return score


def _cell(summary: dict, model: dict, task: dict) -> str:
    if model["status"] == "unavailable":
        return "unavailable"
    entry = summary["scores"].get(model["label"], {}).get(task["name"])
    if entry is None and model["status"] == "failed":
        return "failed"
    return format_score(task, entry)


def markdown_table(summary: dict) -> str:
    """The results table (tasks as rows, models as columns, s(m) last) and its notes."""
    models, tasks = summary["models"], summary["tasks"]
    header = ["task", "metric"] + [m["label"] for m in models]
    rows = [[t["name"], metric_label(t)] + [_cell(summary, m, t) for m in models] for t in tasks]
    s_m = summary.get("s_m")
    if s_m is not None:
        cells = []
        for m in models:
            model = s_m["models"].get(m["label"], {})
            value = model.get("s_m")
            cells.append(
                "n/a" if value is None else f"**{format_interval(value, model.get('ci95'), 1)}**"
            )
        rows.append([f"**s(m)** ({len(s_m['references'])} tasks)", "% ↑"] + cells)
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(["---"] * 2 + ["---:"] * len(models)) + " |",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    notes = [
        f"- {m['label']}: {m['status']} — {m['reason']}" for m in models if m["status"] != "ok"
    ]
    methods = {
        e.get("ci95_method") for by_task in summary["scores"].values() for e in by_task.values()
    }
    if methods - {None}:
        resamples = summary.get("settings", {}).get("resamples", "?")
        notes.append(
            "- ± half-width or [low, high]: 95 % confidence interval; "
            + "; ".join(
                INTERVAL_NOTES[m].format(resamples=resamples) for m in sorted(methods - {None})
            )
        )
    if s_m is None:
        notes.append("- s(m): not computed (pass --references FILE with a baseline and a best)")
    else:
        notes += [f"- s(m) leaves out {task}: {why}" for task, why in s_m["skipped"].items()]
        notes.append(
            "- s(m) interval: s(m) of each bootstrap resample, the same test items for every "
            "model (paired)"
        )
        if s_m.get("unpaired"):
            notes.append(
                "- s(m) has no interval: the models were tested on different items of "
                + ", ".join(s_m["unpaired"])
            )
        for m in models:
            missing = s_m["models"].get(m["label"], {}).get("missing")
            if m["status"] == "ok" and missing:
                notes.append(f"- s(m) of {m['label']}: no score on {', '.join(missing)}")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


INTERVAL_NOTES = {
    "bootstrap-clips": "bootstrap over test clips ({resamples} resamples)",
    "bootstrap-files": "event and SELD tasks: bootstrap over test files ({resamples} resamples)",
    "t-folds": "k-fold tasks: Student-t over the fold scores",
}


def _subplots(count: int):
    """A grid of up to three panels a row for ``count`` panels (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, count)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax in list(axes.flat)[count:]:
        ax.axis("off")
    return fig, axes


def label_panel(ax, title: str, xlabel: str, ylabel: str) -> None:
    """Title, axis labels, grid and legend of one panel, in the reports' sizes."""
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def save_png(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` as a PNG (atomically) and close it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _axis_label(task: dict) -> str:
    """The name of the score a task's bar shows (the primary one)."""
    if task["metric"] == "seld_score":
        return f"{METRIC_NAMES['seld_score']} {_arrow(task['higher_is_better'])}"
    return metric_label(task).replace(", mean / median", ", mean")


def plot_scores(summary: dict, path: Path) -> Path:
    """One bar chart per task (a bar per model with a score and its 95 % interval), as a
    PNG."""
    tasks = summary["tasks"]
    labels = [m["label"] for m in summary["models"]]
    fig, axes = _subplots(len(tasks))
    colors = [f"C{i}" for i in range(len(labels))]
    for ax, task in zip(axes.flat, tasks, strict=False):
        values, below, above = [], [], []
        for label in labels:
            entry = summary["scores"].get(label, {}).get(task["name"])
            value = math.nan if entry is None else entry["score"]
            ci = None if entry is None else entry.get("ci95")
            usable = ci is not None and all(math.isfinite(x) for x in ci)
            values.append(value)
            below.append(max(0.0, value - ci[0]) if usable else 0.0)
            above.append(max(0.0, ci[1] - value) if usable else 0.0)
        ax.bar(range(len(labels)), values, yerr=[below, above], color=colors, capsize=3)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_title(task["name"], fontsize=9)
        ax.set_ylabel(_axis_label(task), fontsize=8)
        for x, value in enumerate(values):
            if math.isnan(value):
                ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)


def plot_doa_errors(errors: dict[str, dict[str, list[float]]], path: Path) -> Path:
    """Cumulative distribution of per-file DoA errors, one panel per localization task.

    Args:
        errors: ``{task: {model label: [errors in degrees]}}``.
    """
    fig, axes = _subplots(len(errors))
    for ax, (task, by_model) in zip(axes.flat, errors.items(), strict=False):
        for label, values in by_model.items():
            values = sorted(values)
            fraction = [(i + 1) / len(values) for i in range(len(values))]
            ax.step(values, fraction, where="post", label=label)
        ax.set_xlim(0, 180)
        ax.set_ylim(0, 1)
        label_panel(ax, task, "DoA error (degrees)", "fraction of test files")
    fig.tight_layout()
    return save_png(fig, path)


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
    atomic_write_bytes(out / "summary.md", markdown_table(summary).encode())
    written = [
        out / "summary.json",
        out / "summary.md",
        plot_scores(summary, out / "scores.png"),
    ]
    errors: dict[str, dict[str, list[float]]] = {}
    for result in results:
        for task, values in result.errors.items():
            errors.setdefault(task, {})[result.spec.label] = values
    if errors:
        written.append(plot_doa_errors(errors, out / "doa_errors.png"))
    return written

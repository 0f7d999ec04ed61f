"""95 % confidence intervals of task scores: per-item statistics, metrics over them, bootstrap.

A task's test result is reduced to one row of statistics per test item (a clip of a scene
or localization task, a file of an event task) such that the task's metric is a function
of the rows and of how many times each row counts::

    METRICS[metric](stats (N, K), counts (B, N)) -> scores (B,)

Counting every row once gives the score of the test set. A bootstrap resample draws N
items with replacement and counts each as often as it was drawn; the interval is the
2.5th and 97.5th percentile of the metric over :data:`RESAMPLES` resamples (percentile
bootstrap). The resamples are drawn from a seed derived from the task's name, over items
in a fixed (fold, name) order, so every model of a task is resampled with the same items
(paired), which lets s(m) carry an interval too (:func:`natheear_tasks.evaluation.scoring.
s_m_resampled`). k-fold tasks resample within each fold; their reported ``ci95`` is the
spread over folds instead (:func:`fold_interval`).

==========================  ==================================  ==========================
metric                      statistics per item                 metric of the counted rows
==========================  ==================================  ==========================
top1_acc, pitch_acc         1 if argmax prediction = target     fraction
chroma_acc                  the same modulo 12                  fraction
mAP, aucroc, d_prime        prediction and target vectors       heareval's function
event_onset_*_fms           sed_eval's Ntp, Nsys, Nref per file F-measure of the sums
segment_1s_er               sed_eval's Nref, S, D, I per file   (S + D + I) / Nref of sums
mean_doa_error_deg          the clip's DoA error                mean
median_doa_error_deg        the clip's DoA error                lower median (as torch)
seld_score, ER20, F20,      the file's SELD counts (per class   the DCASE metric of the
LE_CD, LR_CD                TP, FP, FN, ...; S, D, I)           sums (NaN without a
                                                                reference event)
==========================  ==================================  ==========================

A new kind of task plugs in by adding its metric to :data:`METRICS` and reading its probe's
output into a :class:`TaskScores` (the reported values, an :class:`ItemStats` per metric,
the fold scores); :func:`with_intervals` then checks the decomposition against the
reported values and adds the ``ci95`` fields, and s(m) takes the resamples.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from natheear_tasks.evaluation.seld_metrics import SeldCounts, seld_scores

RESAMPLES = 1000
LEVEL = 0.95
FOLD_MEAN_TOLERANCE = 1e-6


def weighted_sums(stats: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``(B, K)`` sums of the rows of ``stats (N, K)`` counted ``counts (B, N)`` times.

    ``np.einsum`` without ``optimize`` runs numpy's own single-threaded loops, not BLAS,
    so the sums do not depend on the thread count."""
    return np.einsum("bn,nk->bk", counts.astype(np.float64), stats.astype(np.float64))


def fraction(stats: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The counted mean of column 0 (accuracy from 0/1 rows, mean DoA error)."""
    return weighted_sums(stats[:, :1], counts)[:, 0] / counts.sum(axis=1)


def lower_median(stats: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The counted median of column 0, the lower middle value for an even count (as
    ``torch.median``)."""
    order = np.argsort(stats[:, 0], kind="stable")
    values = stats[order, 0]
    cumulative = np.cumsum(counts[:, order], axis=1)
    position = (counts.sum(axis=1) - 1) // 2  # 0-based rank of the lower median
    return values[(cumulative > position[:, None]).argmax(axis=1)]


def _per_resample(function: Callable[[np.ndarray], float]) -> Callable:
    """A metric computed from the counted rows themselves, one resample at a time."""

    def metric(stats: np.ndarray, counts: np.ndarray) -> np.ndarray:
        rows = np.arange(len(stats))
        out = np.empty(len(counts))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn warns on resamples without a class
            for b, count in enumerate(counts):
                out[b] = function(stats[np.repeat(rows, count)])
        return out

    return metric


def _heareval_scene(name: str) -> Callable[[np.ndarray], float]:
    """heareval's score ``name`` of rows ``[prediction | target]`` (mAP, aucroc, d_prime)."""

    def score(rows: np.ndarray) -> float:
        from heareval.score import available_scores

        half = rows.shape[1] // 2
        labels = {str(i): i for i in range(half)}
        prediction = rows[:, :half].astype(np.float32)
        return float(available_scores[name](label_to_idx=labels)(prediction, rows[:, half:]))

    return score


def f_measure_of_sums(stats: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """sed_eval's overall F-measure from counted per-file ``(Ntp, Nsys, Nref)``."""
    from sed_eval import metric

    out = []
    for ntp, nsys, nref in weighted_sums(stats, counts):
        precision = metric.precision(Ntp=ntp, Nsys=nsys)
        out.append(metric.f_measure(precision=precision, recall=metric.recall(Ntp=ntp, Nref=nref)))
    return np.asarray(out, dtype=np.float64)


def error_rate_of_sums(stats: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """sed_eval's overall error rate from counted per-file ``(Nref, S, D, I)``."""
    from sed_eval import metric

    out = []
    for nref, s, d, i in weighted_sums(stats, counts):
        out.append(
            metric.error_rate(
                substitution_rate_value=metric.substitution_rate(Nref=nref, Nsubstitutions=s),
                deletion_rate_value=metric.deletion_rate(Nref=nref, Ndeletions=d),
                insertion_rate_value=metric.insertion_rate(Nref=nref, Ninsertions=i),
            )
        )
    return np.asarray(out, dtype=np.float64)


def _seld(score: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A SELD metric (``score``: a :class:`~natheear_tasks.evaluation.seld_metrics.
    SeldScores` field) of counted per-file :meth:`SeldCounts.vector` rows; NaN for a
    resample without a reference event, where the metrics are undefined."""

    def metric(stats: np.ndarray, counts: np.ndarray) -> np.ndarray:
        out = np.full(len(counts), np.nan)
        for b, row in enumerate(weighted_sums(stats, counts)):
            total = SeldCounts.from_vector(row)
            if total.n_ref.sum() > 0:
                out[b] = getattr(seld_scores(total), score)
        return out

    return metric


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "top1_acc": fraction,
    "pitch_acc": fraction,
    "chroma_acc": fraction,
    "mAP": _per_resample(_heareval_scene("mAP")),
    "aucroc": _per_resample(_heareval_scene("aucroc")),
    "d_prime": _per_resample(_heareval_scene("d_prime")),
    "event_onset_200ms_fms": f_measure_of_sums,
    "event_onset_50ms_fms": f_measure_of_sums,
    "event_onset_offset_50ms_20perc_fms": f_measure_of_sums,
    "segment_1s_er": error_rate_of_sums,
    "mean_doa_error_deg": fraction,
    "median_doa_error_deg": lower_median,
    "seld_score": _seld("seld"),
    "ER20": _seld("er20"),
    "F20": _seld("f20"),
    "LE_CD": _seld("le_cd"),
    "LR_CD": _seld("lr_cd"),
}
# The sed_eval counts each event metric sums over files (``overall`` of its metric class).
EVENT_COUNTS = {
    "event_onset_200ms_fms": ("Ntp", "Nsys", "Nref"),
    "event_onset_50ms_fms": ("Ntp", "Nsys", "Nref"),
    "event_onset_offset_50ms_20perc_fms": ("Ntp", "Nsys", "Nref"),
    "segment_1s_er": ("Nref", "S", "D", "I"),
}


@dataclass
class ItemStats:
    """One model's per-item statistics on one task, and how they make its score.

    Attributes:
        metric: the task's primary metric, a key of :data:`METRICS`.
        names: item names, one per row (unique within a fold).
        stats: ``(N, K)`` statistics.
        folds: the test fold of each item (one name for a single test split).
        fold_mean: the score is the mean of per-fold scores (heareval's k-fold), not the
            metric of all items pooled (the localization probe's).
    """

    metric: str
    names: list[str]
    stats: np.ndarray
    folds: list[str]
    fold_mean: bool = False

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"no per-item metric {self.metric!r}; known: {sorted(METRICS)}")
        self.stats = np.asarray(self.stats, dtype=np.float64).reshape(len(self.names), -1)
        if len(self.folds) != len(self.names):
            raise ValueError(f"{len(self.folds)} folds for {len(self.names)} items")
        order = sorted(range(len(self.names)), key=lambda i: (self.folds[i], self.names[i]))
        self.names = [self.names[i] for i in order]
        self.folds = [self.folds[i] for i in order]
        self.stats = self.stats[order]

    @property
    def key(self) -> tuple:
        """What must match for two models to be resampled together."""
        return tuple(zip(self.folds, self.names, strict=True))

    def scores(self, counts: np.ndarray) -> np.ndarray:
        """The score of each row of ``counts (B, N)``."""
        metric = METRICS[self.metric]
        if not self.fold_mean:
            return metric(self.stats, counts)
        folds = np.asarray(self.folds)
        return np.mean(
            [metric(self.stats[folds == f], counts[:, folds == f]) for f in sorted(set(folds))],
            axis=0,
        )

    def value(self) -> float:
        """The score of the test set (every item counted once)."""
        return float(self.scores(np.ones((1, len(self.names)), dtype=np.int64))[0])


def resample_counts(folds: list[str], seed: int, resamples: int = RESAMPLES) -> np.ndarray:
    """``(resamples, N)`` bootstrap counts, drawn within each fold (items in ``folds``'
    order; :class:`ItemStats` keeps them sorted by fold, then name)."""
    rng = np.random.default_rng(seed)
    folds_array = np.asarray(folds)
    counts = np.zeros((resamples, len(folds)), dtype=np.int32)
    for fold in sorted(set(folds)):
        where = np.flatnonzero(folds_array == fold)
        uniform = np.full(len(where), 1 / len(where))
        counts[:, where] = rng.multinomial(len(where), uniform, resamples)
    return counts


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> list[float] | None:
    """``[low, high]``: the central ``level`` of the finite resampled scores (None if none)."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return None
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return [float(low), float(high)]


def fold_interval(fold_scores: list[float], center: float, level: float = LEVEL) -> list[float]:
    """``center ± t * sd / sqrt(k)``: the Student-t interval of the mean of ``k`` fold scores
    (``sd`` with ``k - 1`` degrees of freedom, as heareval's ``test_score_std``)."""
    from scipy import stats

    k = len(fold_scores)
    if k < 2:
        raise ValueError(f"a fold interval needs at least 2 folds, got {k}")
    half = stats.t.ppf(0.5 + level / 2, k - 1) * float(np.std(fold_scores, ddof=1)) / math.sqrt(k)
    return [center - half, center + half]


@dataclass
class TaskScores:
    """A probe's result on one task, before its intervals.

    Attributes:
        entry: the summary fields the probe reports (``score`` = the primary metric's value,
            and any others, e.g. ``mean`` and ``median``).
        values: per metric, the value the probe reported (the primary metric among them).
        items: per metric, the per-item statistics that must give that value.
        fold_scores: per metric, the score of each test fold (k-fold tasks).
        fields: metric -> entry field whose interval goes into ``<field>_ci95``.
        unit: what an item is (``clips``, ``files``), for ``ci95_method``.
    """

    entry: dict
    values: dict[str, float]
    items: dict[str, ItemStats]
    fold_scores: dict[str, list[float]]
    fields: dict[str, str] = field(default_factory=dict)
    unit: str = "clips"


class DecompositionError(RuntimeError):
    """Per-item statistics that do not give the score the probe reported."""


def check_decomposition(items: ItemStats, reported: float, where: str) -> None:
    """Raise :class:`DecompositionError` unless ``items`` give ``reported`` (or both NaN)."""
    value = items.value()
    if math.isnan(reported) and math.isnan(value):
        return
    if not math.isclose(value, reported, rel_tol=1e-5, abs_tol=1e-9):
        raise DecompositionError(
            f"{where}: the per-item statistics give {items.metric} {value!r} where the probe "
            f"reported {reported!r}; no confidence interval can be given for it"
        )


def with_intervals(
    scores: TaskScores, metric: str, seed: int, resamples: int = RESAMPLES
) -> tuple[dict, ItemStats, np.ndarray]:
    """The summary entry with its intervals, the primary metric's items and resampled scores.

    Every metric's statistics are checked against the reported value; the bootstrap counts
    are drawn once from ``seed`` (derive it from the task, so that every model is resampled
    alike) and shared by the metrics. ``ci95`` is the percentile interval, or for a k-fold
    task (items in more than one fold) the Student-t interval over the fold scores.
    """
    for name, items in scores.items.items():
        check_decomposition(items, scores.values[name], name)
    primary = scores.items[metric]
    counts = resample_counts(primary.folds, seed, resamples)
    resampled = {name: items.scores(counts) for name, items in scores.items.items()}
    kfold = len(set(primary.folds)) > 1
    entry = dict(scores.entry)
    for name in scores.items:
        if kfold:
            ci = fold_interval(scores.fold_scores[name], scores.values[name])
        else:
            ci = percentile_interval(resampled[name])
        if name == metric:
            entry["ci95"] = ci
        if name in scores.fields:
            entry[f"{scores.fields[name]}_ci95"] = ci
    entry["ci95_method"] = "t-folds" if kfold else f"bootstrap-{scores.unit}"
    entry["items"] = len(primary.names)
    return entry, primary, resampled[metric]


# --- per-item statistics of heareval's test outputs -------------------------------------


def scene_statistics(metric: str, outputs: dict) -> tuple[list[str], np.ndarray]:
    """Names and statistics of a scene task's test outputs (``heareval_predict``'s
    ``<fold>.test-outputs.json``: files, predictions and one-hot or multi-hot targets)."""
    prediction = np.asarray(outputs["prediction"], dtype=np.float32)
    target = np.asarray(outputs["target"], dtype=np.float32)
    if metric in ("top1_acc", "pitch_acc", "chroma_acc"):
        predicted, true = prediction.argmax(axis=1), target.argmax(axis=1)
        if metric == "chroma_acc":
            predicted, true = predicted % 12, true % 12
        stats = (predicted == true).astype(np.float64)[:, None]
    elif metric in ("mAP", "aucroc", "d_prime"):
        stats = np.concatenate([prediction, target], axis=1).astype(np.float64)
    else:
        raise ValueError(f"{metric!r} is not a scene metric")
    return list(outputs["files"]), stats


def event_statistics(metric: str, outputs: dict, labels: list[str]) -> tuple[list[str], np.ndarray]:
    """Names and sed_eval counts per file of an event task's test outputs: each file
    evaluated alone with heareval's parameters for ``metric``, as heareval's score
    evaluates file after file and sums the counts."""
    from heareval.score import available_scores

    if metric not in EVENT_COUNTS:
        raise ValueError(f"{metric!r} is not an event metric")
    scorer = available_scores[metric](label_to_idx={label: i for i, label in enumerate(labels)})
    predicted, targets = outputs["predicted_events"], outputs["target_events"]
    reference = scorer.sed_eval_event_container(targets)
    estimated = scorer.sed_eval_event_container(predicted)
    names, rows = sorted(predicted), []
    for name in names:
        counter = scorer.score_class(event_label_list=list(scorer.label_to_idx), **scorer.params)
        counter.evaluate(
            reference_event_list=reference.filter(filename=name),
            estimated_event_list=estimated.filter(filename=name),
        )
        rows.append([counter.overall[key] for key in EVENT_COUNTS[metric]])
    return names, np.asarray(rows, dtype=np.float64).reshape(len(names), -1)

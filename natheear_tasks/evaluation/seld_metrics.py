"""The DCASE 2022-2023 task 3 SELD metrics: ER20, F20, LE_CD, LR_CD and the SELD score.

Written from the definitions of Mesaros et al. 2019 ("Joint measurement of localization
and detection of sound events"), Politis et al. 2020 ("Overview and evaluation of sound
event localization and detection in DCASE 2019") and the challenge baseline's evaluation
(``SELDMetrics`` of the DCASE 2022 and 2023 task 3 baselines, ``cls_compute_seld_results``),
whose numbers and decisions these reproduce (``bench/seld_official_check.py`` compares them
with that code on random and tie cases).

Definitions. Label frames are grouped into 1-s segments (``frames_per_segment``, 10 for
100-ms frames). In each segment, for each class ``c``:

- ``n_ref`` and ``n_pred``: the largest number of reference (predicted) rows of ``c`` in
  one frame of the segment (0 when ``c`` is absent).
- Tracks: in every frame where both sides have ``c``, reference and predicted directions
  are paired by the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) on their
  angular distance. The reference row of rank ``k`` in its frame (rows in file order) is
  reference track ``k`` of the segment; a track's error is the mean distance over the
  frames it was paired in.
- Both present, some track paired: each paired track adds 1 to ``DE_TP`` and its error to
  the localization error sum; it is a true positive (TP) when its error is at most the
  threshold (20 degrees), else a spatial false positive (FP_spatial). ``n_pred - n_ref``
  more predicted tracks are false positives (FP); ``n_ref - n_pred`` more reference
  tracks are false negatives (FN).
- Reference only: ``n_ref`` FN. Prediction only: ``n_pred`` FP.
- ``N_ref += n_ref``.

In each segment, over all classes, ``loc_FP = FP + FP_spatial`` and ``loc_FN = FN``; the
segment adds ``S = min(loc_FP, loc_FN)``, ``D = max(0, loc_FN - loc_FP)`` and
``I = max(0, loc_FP - loc_FN)``. Over the whole evaluation (all files, all segments), with
``eps`` the float64 machine epsilon as in the official code:

- ``ER20 = (S + D + I) / (sum_c N_ref + eps)`` (one value, also with macro averaging);
- macro (default): ``F20 = mean_c TP / (eps + TP + FP_spatial + (FP + FN) / 2)``,
  ``LE_CD = mean_c localization error sum / (DE_TP + eps)`` (180 for a class with no
  paired track), ``LR_CD = mean_c DE_TP / (eps + DE_TP + FN)``, and the SELD score the
  mean over classes of ``mean(ER20, 1 - F20_c, LE_CD_c / 180, 1 - LR_CD_c)``;
- micro: the same ratios of the counts summed over classes;
- lower SELD is better.

Decisions taken exactly as the official code takes them, so that borderline cases score
the same: the angle of two directions is its spherical formula
``arccos(clip(sin e1 sin e2 + cos e1 cos e2 cos|a1 - a2|, -1, 1))`` on the degrees turned
to radians as it turns them (a direction exactly 20 degrees off lands on the same side of
the threshold); Cartesian outputs (the 2023 baseline's ``frame,class,source,x,y,z,dist``)
are turned into azimuth and elevation with its ``arctan2`` formulas first; rows keep their
file order within a frame, so the Hungarian algorithm sees the same cost matrix and breaks
ties the same way, and repeated (frame, class, source) rows (the 2023 baseline writes
source 0 on every row) are separate tracks as there; a track's distances are summed in
frame order before the division.

Quirks of the official code, followed: a class present on both sides of a segment but in
no common frame adds ``n_pred`` (not ``n_ref``) FN and no FP; a spatial false positive is
an insertion in ER20 but weighs 1 in F20; reference tracks are ranks within a frame, not
the ``source`` column; a class without reference events counts F20 0, LE_CD 180, LR_CD 0
in the macro averages. Segments: with no explicit length (``num_frames=None``, as for CSV
files), a file is scored on ``ceil(L / frames_per_segment)`` segments, ``L`` its last
reference frame (so when ``L`` is a multiple of the segment its own frame is not scored,
and a reference of frame 0 alone has no segment); pass the recording's frame count to
score every frame of it. The per-class localization error sums are added file by file
(the official code keeps one running sum across files, in the order the directory lists
them): totals may differ from it in the last bits only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
from scipy.optimize import linear_sum_assignment

from natheear_tasks.formats.dcase_frames import FrameRow

FRAMES_PER_SEGMENT = 10
DOA_THRESHOLD_DEG = 20.0
MAX_LE_DEG = 180.0
EPS = np.finfo(np.float64).eps


@dataclass
class SeldCounts:
    """Counts accumulated over segments and files; per-class arrays of shape ``(C,)``."""

    tp: np.ndarray
    fp: np.ndarray
    fp_spatial: np.ndarray
    fn: np.ndarray
    n_ref: np.ndarray
    le_sum: np.ndarray  # sum over paired tracks of their mean angular error, degrees
    substitutions: int
    deletions: int
    insertions: int

    @classmethod
    def zeros(cls, num_classes: int) -> SeldCounts:
        """No segment counted yet."""
        tp, fp, fp_spatial, fn, n_ref = np.zeros((5, num_classes), dtype=np.int64)
        return cls(tp, fp, fp_spatial, fn, n_ref, np.zeros(num_classes), 0, 0, 0)

    @classmethod
    def total(cls, counts: Sequence[SeldCounts], num_classes: int) -> SeldCounts:
        """The sum of ``counts`` (files, folds), zeros when there are none."""
        total = cls.zeros(num_classes)
        for c in counts:
            total = total + c
        return total

    @property
    def num_classes(self) -> int:
        return len(self.tp)

    @property
    def paired(self) -> np.ndarray:
        """Paired tracks per class (DE_TP): TP + FP_spatial."""
        return self.tp + self.fp_spatial

    def vector(self) -> np.ndarray:
        """The counts as one float64 row ``(6 C + 3,)``: ``tp, fp, fp_spatial, fn, n_ref,
        le_sum`` per class, then ``S, D, I``. Counts add as rows do, so the counts of a
        bootstrap resample of files are a weighted sum of their rows."""
        per_class = [self.tp, self.fp, self.fp_spatial, self.fn, self.n_ref, self.le_sum]
        totals = [self.substitutions, self.deletions, self.insertions]
        return np.concatenate([np.asarray(a, dtype=np.float64) for a in per_class] + [totals])

    @classmethod
    def from_vector(cls, row: np.ndarray) -> SeldCounts:
        """The inverse of :meth:`vector` (integer counts rounded back to integers)."""
        row = np.asarray(row, dtype=np.float64)
        num_classes, extra = divmod(len(row) - 3, 6)
        if extra or num_classes < 1:
            raise ValueError(f"a counts row has 6 C + 3 values, got {len(row)}")
        parts = row[: 6 * num_classes].reshape(6, num_classes)
        tp, fp, fp_spatial, fn, n_ref = np.rint(parts[:5]).astype(np.int64)
        s, d, i = (int(round(v)) for v in row[-3:])
        return cls(tp, fp, fp_spatial, fn, n_ref, parts[5].copy(), s, d, i)

    def __add__(self, other: SeldCounts) -> SeldCounts:
        if other.num_classes != self.num_classes:
            raise ValueError(f"counts of {self.num_classes} and {other.num_classes} classes")
        return SeldCounts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


@dataclass(frozen=True)
class SeldScores:
    """Averaged scores (F20 and LR_CD fractions, LE_CD degrees) and per-class values (the
    per-class arrays hold the classes' values whatever the averaging)."""

    er20: float
    f20: float
    le_cd: float
    lr_cd: float
    seld: float
    class_f20: np.ndarray
    class_le_cd: np.ndarray
    class_lr_cd: np.ndarray
    class_seld: np.ndarray


def angular_distance(
    az1: np.ndarray, el1: np.ndarray, az2: np.ndarray, el2: np.ndarray
) -> np.ndarray:
    """Degrees between directions given in degrees, elementwise, with the official code's
    formula and operations (its ``distance_between_spherical_coordinates_rad`` on its
    radians), so that equal inputs give its bits."""
    az1, el1 = az1 * np.pi / 180.0, el1 * np.pi / 180.0
    az2, el2 = az2 * np.pi / 180.0, el2 * np.pi / 180.0
    cos = np.sin(el1) * np.sin(el2) + np.cos(el1) * np.cos(el2) * np.cos(np.abs(az1 - az2))
    return np.arccos(np.clip(cos, -1, 1)) * 180 / np.pi


def scored_segments(
    reference: Sequence[FrameRow],
    num_frames: int | None = None,
    frames_per_segment: int = FRAMES_PER_SEGMENT,
) -> int:
    """Number of 1-s segments a file is scored on: ``ceil(num_frames / F)``, or with no
    length the DCASE convention ``ceil(L / F)``, ``L`` the last reference frame (0 for a
    reference without rows)."""
    if num_frames is None:
        last = max((r.frame for r in reference), default=0)
        return math.ceil(last / frames_per_segment)
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    return math.ceil(num_frames / frames_per_segment)


@dataclass(frozen=True)
class _Table:
    """Rows within the scored frames, ordered by (frame, class), file order within."""

    frame: np.ndarray  # (N,) int64
    cls: np.ndarray  # (N,) int64
    azimuth: np.ndarray  # (N,) degrees
    elevation: np.ndarray
    rank: np.ndarray  # (N,) position within its (frame, class) cell

    @classmethod
    def of(cls, rows: Sequence[FrameRow], frames: int, num_classes: int) -> _Table:
        frame = np.array([r.frame for r in rows], dtype=np.int64)
        classes = np.array([r.cls for r in rows], dtype=np.int64)
        if len(rows) and (classes.min() < 0 or classes.max() >= num_classes):
            bad = sorted({int(c) for c in classes if not 0 <= c < num_classes})
            raise ValueError(f"class indices {bad} outside [0, {num_classes})")
        keep = np.flatnonzero(frame < frames)
        order = keep[np.lexsort((keep, classes[keep], frame[keep]))]
        frame, classes = frame[order], classes[order]
        key = frame * num_classes + classes
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else key
        rank = np.arange(len(key)) - np.repeat(starts, np.diff(np.r_[starts, len(key)]))
        angles = np.array([(r.azimuth, r.elevation) for r in rows], dtype=np.float64)
        angles = angles.reshape(-1, 2)[order]
        return cls(frame, classes, angles[:, 0], angles[:, 1], rank)

    def counts(self, frames: int, num_classes: int) -> np.ndarray:
        """``(frames, C)`` number of rows per frame and class."""
        out = np.zeros((frames, num_classes), dtype=np.int64)
        np.add.at(out, (self.frame, self.cls), 1)
        return out


def _pair_distances(
    ref: _Table, pred: _Table, num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The paired (frame, class) cells' matches: per match its cell key, reference rank
    and distance, from the Hungarian algorithm on the official cost matrix of each cell
    (one reference row: its nearest prediction)."""
    ref_key = ref.frame * num_classes + ref.cls
    pred_key = pred.frame * num_classes + pred.cls
    common = np.intersect1d(ref_key, pred_key)
    r0, r1 = np.searchsorted(ref_key, common), np.searchsorted(ref_key, common, side="right")
    p0, p1 = np.searchsorted(pred_key, common), np.searchsorted(pred_key, common, side="right")
    one = r1 - r0 == 1
    lengths = (p1 - p0)[one]
    starts = np.cumsum(lengths) - lengths
    pred_rows = np.arange(lengths.sum()) - np.repeat(starts - p0[one], lengths)
    ref_rows = np.repeat(r0[one], lengths)
    near = angular_distance(
        ref.azimuth[ref_rows], ref.elevation[ref_rows],
        pred.azimuth[pred_rows], pred.elevation[pred_rows],
    )  # fmt: skip
    dist = [np.minimum.reduceat(near, starts) if len(starts) else near]
    cell = [common[one]]
    rank = [np.zeros(len(starts), dtype=np.int64)]
    for i in np.flatnonzero(~one):
        gt = np.arange(r0[i], r1[i])
        pr = np.arange(p0[i], p1[i])
        # the pairs in the official order (every reference for each prediction)
        g, p = np.tile(gt, len(pr)), np.repeat(pr, len(gt))
        cost = np.zeros((len(gt), len(pr)))
        cost[g - r0[i], p - p0[i]] = angular_distance(
            ref.azimuth[g], ref.elevation[g], pred.azimuth[p], pred.elevation[p]
        )
        rows, cols = linear_sum_assignment(cost)
        dist.append(cost[rows, cols])
        cell.append(np.full(len(rows), common[i]))
        rank.append(rows.astype(np.int64))
    return tuple(np.concatenate(x) for x in (cell, rank, dist))


def _track_errors(
    cell: np.ndarray,
    rank: np.ndarray,
    dist: np.ndarray,
    num_classes: int,
    frames_per_segment: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per paired track (segment, class, reference rank): its key ``(segment, class)``, its
    mean distance (summed in frame order, then divided, as the official code) and the
    position at which the official code meets it (first paired frame, then rank)."""
    frame, cls = cell // num_classes, cell % num_classes
    segment = frame // frames_per_segment
    order = np.lexsort((frame, rank, cls, segment))
    segment, cls, rank, frame, dist = (a[order] for a in (segment, cls, rank, frame, dist))
    track = np.r_[True, (segment[1:] != segment[:-1]) | (cls[1:] != cls[:-1])
                  | (rank[1:] != rank[:-1])] if len(order) else np.zeros(0, bool)  # fmt: skip
    starts = np.flatnonzero(track)
    sizes = np.diff(np.r_[starts, len(order)])
    position = np.arange(len(order)) - np.repeat(starts, sizes)
    group = np.repeat(np.arange(len(starts)), sizes)
    total = np.zeros(len(starts))
    for step in range(int(sizes.max(initial=0))):  # one addition per track per step: in order
        at = position == step
        total[group[at]] += dist[at]
    mean = total / sizes
    first = frame[starts]
    return np.stack([segment[starts], cls[starts]]), mean, np.stack([first, rank[starts]])


def count_file(
    reference: Sequence[FrameRow],
    prediction: Sequence[FrameRow],
    num_classes: int,
    num_frames: int | None = None,
    threshold: float = DOA_THRESHOLD_DEG,
    frames_per_segment: int = FRAMES_PER_SEGMENT,
) -> SeldCounts:
    """SELD counts of one recording (see the module docstring).

    Args:
        reference: frame-list rows in file order
            (:func:`natheear_tasks.formats.dcase_frames.read_output_csv`).
        prediction: the system's rows, likewise.
        num_classes: ``C``; every class index must be in ``[0, C)``.
        num_frames: the recording's length in label frames; no row may lie beyond it.
            None: the DCASE convention (:func:`scored_segments`), rows beyond the scored
            segments are left out.
        threshold: the largest track error in degrees of a true positive.
        frames_per_segment: label frames in a 1-s segment.
    """
    if num_frames is not None:
        late = [r.frame for r in (*reference, *prediction) if r.frame >= num_frames]
        if late:
            raise ValueError(f"rows at frames up to {max(late)}, beyond num_frames={num_frames}")
    segments = scored_segments(reference, num_frames, frames_per_segment)
    frames = segments * frames_per_segment
    ref = _Table.of(reference, frames, num_classes)
    pred = _Table.of(prediction, frames, num_classes)
    shape = (segments, frames_per_segment, num_classes)
    n_ref = ref.counts(frames, num_classes).reshape(shape).max(axis=1, initial=0)
    n_pred = pred.counts(frames, num_classes).reshape(shape).max(axis=1, initial=0)

    cell, rank, dist = _pair_distances(ref, pred, num_classes)
    (seg, cls), error, (first, order_rank) = _track_errors(
        cell, rank, dist, num_classes, frames_per_segment
    )
    tracks = np.zeros((segments, num_classes), dtype=np.int64)
    tp = np.zeros((segments, num_classes), dtype=np.int64)
    np.add.at(tracks, (seg, cls), 1)
    np.add.at(tp, (seg, cls), error <= threshold)
    fp_spatial = tracks - tp

    has_ref, has_pred, has_pair = n_ref > 0, n_pred > 0, tracks > 0
    fn = np.where(has_pair, np.maximum(n_ref - n_pred, 0), 0)
    fn += np.where(has_ref & has_pred & ~has_pair, n_pred, 0)  # the official quirk: n_pred
    fn += np.where(has_ref & ~has_pred, n_ref, 0)
    fp = np.where(has_pair, np.maximum(n_pred - n_ref, 0), 0)
    fp += np.where(has_pred & ~has_ref, n_pred, 0)

    le_sum = np.zeros(num_classes)
    met = np.lexsort((order_rank, first, seg))  # the order the official code adds them
    for c in range(num_classes):
        values = error[met][cls[met] == c]
        le_sum[c] = np.cumsum(values)[-1] if len(values) else 0.0

    loc_fp, loc_fn = (fp + fp_spatial).sum(axis=1), fn.sum(axis=1)
    return SeldCounts(
        tp=tp.sum(axis=0),
        fp=fp.sum(axis=0),
        fp_spatial=fp_spatial.sum(axis=0),
        fn=fn.sum(axis=0),
        n_ref=n_ref.sum(axis=0),
        le_sum=le_sum,
        substitutions=int(np.minimum(loc_fp, loc_fn).sum()),
        deletions=int(np.maximum(loc_fn - loc_fp, 0).sum()),
        insertions=int(np.maximum(loc_fp - loc_fn, 0).sum()),
    )


def _seld(er: float | np.ndarray, f, le, lr) -> np.ndarray:
    """The official early-stopping metric: ``np.mean([ER, 1 - F, LE / 180, 1 - LR], 0)``."""
    return np.mean([er, 1 - f, le / MAX_LE_DEG, 1 - lr], 0)


def seld_scores(counts: SeldCounts, average: str = "macro") -> SeldScores:
    """ER20, F20, LE_CD, LR_CD and the SELD score of accumulated counts, computed as the
    official ``compute_seld_scores`` computes them (``eps`` in the denominators), macro- or
    micro-averaged. With no reference event ER20 is 0, as there."""
    c = counts
    er = (c.substitutions + c.deletions + c.insertions) / (c.n_ref.sum() + EPS)
    tp, fp, fp_sp, fn = (np.asarray(a, dtype=np.float64) for a in (c.tp, c.fp, c.fp_spatial, c.fn))
    de_tp = tp + fp_sp
    f = tp / (EPS + tp + fp_sp + 0.5 * (fp + fn))
    le = c.le_sum / (de_tp + EPS)
    le[de_tp == 0] = MAX_LE_DEG
    lr = de_tp / (EPS + de_tp + fn)
    per_class = _seld(np.repeat(er, c.num_classes), f, le, lr)
    if average == "macro":
        values = (float(f.mean()), float(le.mean()), float(lr.mean()), float(per_class.mean()))
    elif average == "micro":
        f_all = tp.sum() / (EPS + tp.sum() + fp_sp.sum() + 0.5 * (fp.sum() + fn.sum()))
        le_all = c.le_sum.sum() / float(de_tp.sum() + EPS) if de_tp.sum() else MAX_LE_DEG
        lr_all = de_tp.sum() / (EPS + de_tp.sum() + fn.sum())
        values = (f_all, le_all, lr_all, float(_seld(er, f_all, le_all, lr_all)))
    else:
        raise ValueError(f"average must be 'macro' or 'micro', got {average!r}")
    f_avg, le_avg, lr_avg, seld = (float(v) for v in values)
    return SeldScores(float(er), f_avg, le_avg, lr_avg, seld, f, le, lr, per_class)

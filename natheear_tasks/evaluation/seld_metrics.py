"""The DCASE 2022-2023 task 3 SELD metrics: ER20, F20, LE_CD, LR_CD and the SELD score.

Written from the definitions of Mesaros et al. 2019 ("Joint measurement of localization
and detection of sound events"), Politis et al. 2020 ("Overview and evaluation of sound
event localization and detection in DCASE 2019") and the challenge baseline's evaluation
(``SELDMetrics`` of the DCASE 2022 and 2023 task 3 baselines, macro averaging), whose
numbers these match, quirks included, so that a challenge submission scores the same here.

Definitions. Frames are 100 ms; 10 frames make a 1-s segment. In each segment, for each
class ``c``:

- ``n_ref`` and ``n_pred``: the largest number of simultaneous reference (predicted)
  directions of ``c`` in one frame of the segment (0 when ``c`` is absent).
- Tracks: in every frame where both sides have ``c``, reference and predicted directions
  are paired by the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) on
  their angular distance (the angle between their unit vectors). The reference direction
  of rank ``k`` in its frame (rows ordered by source index) is reference track ``k`` of
  the segment; a track's error is the mean distance over the frames it was paired in.
- Both present, some track paired: each paired track adds 1 to ``DE_TP`` and its error to
  the localization error sum; it is a true positive (TP) when its error is at most 20
  degrees, else a spatial false positive (FP_spatial). ``n_pred - n_ref`` more predicted
  tracks are false positives (FP); ``n_ref - n_pred`` more reference tracks are false
  negatives (FN).
- Reference only: ``n_ref`` FN. Prediction only: ``n_pred`` FP.
- ``N_ref += n_ref``.

In each segment, over all classes, ``loc_FP = FP + FP_spatial`` and ``loc_FN = FN``; the
segment adds ``S = min(loc_FP, loc_FN)``, ``D = max(0, loc_FN - loc_FP)`` and
``I = max(0, loc_FP - loc_FN)``. Over the whole evaluation (all files, all segments):

- ``ER20 = (S + D + I) / sum_c N_ref`` (one value for all classes, also with macro
  averaging);
- ``F20 = mean_c TP / (TP + FP_spatial + (FP + FN) / 2)``;
- ``LE_CD = mean_c (localization error sum / DE_TP)``, 180 for a class with no paired track;
- ``LR_CD = mean_c DE_TP / (DE_TP + FN)``;
- ``SELD = mean(ER20, 1 - F20, LE_CD / 180, 1 - LR_CD)``; lower is better.

Quirks of the official code, followed so the numbers agree:

- A class present on both sides of a segment but in no common frame adds ``n_pred`` (not
  ``n_ref``) FN and no FP.
- A spatial false positive counts as one FP in the error rate (a wrong direction of the
  right class is an insertion, not a substitution), but with weight 1 in F20.
- Reference tracks are ranks within a frame, not the ``source`` column: two events of a
  class one after the other in a segment make one track.
- A class without a single reference event in the evaluation has F20 0, LE_CD 180 and
  LR_CD 0, and still counts in the macro averages.
- Segments: with no explicit length (``num_frames=None``, as for CSV files), a file is
  scored on ``ceil(L / 10)`` segments, ``L`` the index of its last reference frame, so
  predictions after the segment of the last reference event are not scored, and when
  ``L`` is a multiple of 10 its own frame is not scored either (a reference of frame 0
  alone has no segment). Pass the recording's frame count as ``num_frames`` to score every
  frame of it.

Where the official code divides by ``x + eps`` this code divides by ``x`` and returns the
official's value for ``x = 0`` (F20 0, LE_CD 180, LR_CD 0), so a perfect system scores
exactly 1 rather than 1 - 1e-16. Within a frame and class the official code orders rows as
they are in the file, this code by source index: the same for files written sorted (as
:func:`natheear_tasks.formats.dcase_frames.format_frame_csv` writes them); it only matters for a
frame with two reference events of one class listed out of source order.
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
    """Macro-averaged scores (F20 and LR_CD fractions, LE_CD degrees) and per-class values."""

    er20: float
    f20: float
    le_cd: float
    lr_cd: float
    seld: float
    class_f20: np.ndarray
    class_le_cd: np.ndarray
    class_lr_cd: np.ndarray
    class_seld: np.ndarray


def angular_distance(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Degrees between unit vectors ``u (..., 3)`` and ``v (..., 3)``, broadcast.

    ``atan2(|u x v|, u . v)``: the angle ``arccos(u . v)`` of the DCASE code, without its
    rounding near 0 (identical directions give exactly 0, not ~1e-6 degrees).
    """
    u, v = np.broadcast_arrays(u, v)
    sine = np.linalg.norm(np.cross(u, v), axis=-1)
    return np.degrees(np.arctan2(sine, np.sum(u * v, axis=-1)))


def unit_vectors(azimuth: np.ndarray, elevation: np.ndarray) -> np.ndarray:
    """``(N, 3)`` directions ``[x, y, z]`` (x forward, y left, z up) of angles in degrees,
    as :func:`natheear_tasks.formats.dcase_frames.direction_xyz`, batched."""
    az, el = np.radians(azimuth), np.radians(elevation)
    return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)


def scored_segments(reference: Sequence[FrameRow], num_frames: int | None = None) -> int:
    """Number of 1-s segments a file is scored on: ``ceil(num_frames / 10)``, or with no
    length the DCASE convention ``ceil(L / 10)``, ``L`` the last reference frame (0 for a
    reference without rows)."""
    if num_frames is None:
        last = max((r.frame for r in reference), default=0)
        return math.ceil(last / FRAMES_PER_SEGMENT)
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    return math.ceil(num_frames / FRAMES_PER_SEGMENT)


@dataclass(frozen=True)
class _Table:
    """Rows within the scored frames, sorted by (frame, class, source)."""

    frame: np.ndarray  # (N,) int64
    cls: np.ndarray  # (N,) int64
    xyz: np.ndarray  # (N, 3)

    @classmethod
    def of(cls, rows: Sequence[FrameRow], frames: int, num_classes: int) -> _Table:
        frame = np.array([r.frame for r in rows], dtype=np.int64)
        classes = np.array([r.cls for r in rows], dtype=np.int64)
        source = np.array([r.source for r in rows], dtype=np.int64)
        if len(rows) and (classes.min() < 0 or classes.max() >= num_classes):
            bad = sorted({int(c) for c in classes if not 0 <= c < num_classes})
            raise ValueError(f"class indices {bad} outside [0, {num_classes})")
        keep = frame < frames
        order = np.lexsort((source[keep], classes[keep], frame[keep]))
        azimuth = np.array([r.azimuth for r in rows], dtype=np.float64)[keep][order]
        elevation = np.array([r.elevation for r in rows], dtype=np.float64)[keep][order]
        return cls(frame[keep][order], classes[keep][order], unit_vectors(azimuth, elevation))

    def counts(self, frames: int, num_classes: int) -> np.ndarray:
        """``(frames, C)`` number of directions per frame and class."""
        out = np.zeros((frames, num_classes), dtype=np.int64)
        np.add.at(out, (self.frame, self.cls), 1)
        return out


def _paired_tracks(
    ref: _Table, pred: _Table, segments: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per segment, class and reference track: the summed distance and the number of frames
    it was paired in, each ``(segments, C, K)``, ``K`` the most simultaneous references."""
    ref_key = ref.frame * num_classes + ref.cls
    pred_key = pred.frame * num_classes + pred.cls
    common = np.intersect1d(ref_key, pred_key)
    r0, r1 = np.searchsorted(ref_key, common), np.searchsorted(ref_key, common, side="right")
    p0, p1 = np.searchsorted(pred_key, common), np.searchsorted(pred_key, common, side="right")
    one = r1 - r0 == 1
    # one reference direction (the usual case): the assignment pairs it with the nearest
    # prediction, found for all such cells at once
    lengths = (p1 - p0)[one]
    starts = np.cumsum(lengths) - lengths
    pred_rows = np.arange(lengths.sum()) - np.repeat(starts - p0[one], lengths)
    near = angular_distance(ref.xyz[np.repeat(r0[one], lengths)], pred.xyz[pred_rows])
    dist = [np.minimum.reduceat(near, starts) if len(starts) else near]
    cell = [common[one]]
    rank = [np.zeros(len(starts), dtype=np.int64)]
    for i in np.flatnonzero(~one):
        cost = angular_distance(ref.xyz[r0[i] : r1[i], None], pred.xyz[None, p0[i] : p1[i]])
        rows, cols = linear_sum_assignment(cost)
        dist.append(cost[rows, cols])
        cell.append(np.full(len(rows), common[i]))
        rank.append(rows.astype(np.int64))
    dist_all, cell_all, rank_all = (np.concatenate(x) for x in (dist, cell, rank))
    depth = int(rank_all.max()) + 1 if len(rank_all) else 1
    index = (cell_all // num_classes // FRAMES_PER_SEGMENT, cell_all % num_classes, rank_all)
    total = np.zeros((segments, num_classes, depth))
    frames = np.zeros((segments, num_classes, depth), dtype=np.int64)
    np.add.at(total, index, dist_all)
    np.add.at(frames, index, 1)
    return total, frames


def count_file(
    reference: Sequence[FrameRow],
    prediction: Sequence[FrameRow],
    num_classes: int,
    num_frames: int | None = None,
    threshold: float = DOA_THRESHOLD_DEG,
) -> SeldCounts:
    """SELD counts of one recording (see the module docstring).

    Args:
        reference, prediction: frame-list rows
            (:func:`natheear_tasks.formats.dcase_frames.read_frame_csv`).
        num_classes: ``C``; every class index must be in ``[0, C)``.
        num_frames: the recording's length in 100-ms frames; no row may lie beyond it. None:
            the DCASE convention (:func:`scored_segments`), rows beyond the scored segments
            are left out.
        threshold: the largest track error in degrees of a true positive.
    """
    if num_frames is not None:
        late = [r.frame for r in (*reference, *prediction) if r.frame >= num_frames]
        if late:
            raise ValueError(f"rows at frames up to {max(late)}, beyond num_frames={num_frames}")
    segments = scored_segments(reference, num_frames)
    frames = segments * FRAMES_PER_SEGMENT
    ref = _Table.of(reference, frames, num_classes)
    pred = _Table.of(prediction, frames, num_classes)
    shape = (segments, FRAMES_PER_SEGMENT, num_classes)
    n_ref = ref.counts(frames, num_classes).reshape(shape).max(axis=1, initial=0)
    n_pred = pred.counts(frames, num_classes).reshape(shape).max(axis=1, initial=0)

    total, paired_frames = _paired_tracks(ref, pred, segments, num_classes)
    paired = paired_frames > 0
    error = np.divide(total, paired_frames, out=np.zeros_like(total), where=paired)
    tracks = paired.sum(axis=-1)  # (segments, C)
    tp = (paired & (error <= threshold)).sum(axis=-1)
    fp_spatial = tracks - tp

    has_ref, has_pred, has_pair = n_ref > 0, n_pred > 0, tracks > 0
    fn = np.where(has_pair, np.maximum(n_ref - n_pred, 0), 0)
    fn += np.where(has_ref & has_pred & ~has_pair, n_pred, 0)  # the official quirk: n_pred
    fn += np.where(has_ref & ~has_pred, n_ref, 0)
    fp = np.where(has_pair, np.maximum(n_pred - n_ref, 0), 0)
    fp += np.where(has_pred & ~has_ref, n_pred, 0)

    loc_fp, loc_fn = (fp + fp_spatial).sum(axis=1), fn.sum(axis=1)
    return SeldCounts(
        tp=tp.sum(axis=0),
        fp=fp.sum(axis=0),
        fp_spatial=fp_spatial.sum(axis=0),
        fn=fn.sum(axis=0),
        n_ref=n_ref.sum(axis=0),
        le_sum=error.sum(axis=(0, 2)),
        substitutions=int(np.minimum(loc_fp, loc_fn).sum()),
        deletions=int(np.maximum(loc_fn - loc_fp, 0).sum()),
        insertions=int(np.maximum(loc_fp - loc_fn, 0).sum()),
    )


def _ratio(num: np.ndarray, den: np.ndarray, empty: float) -> np.ndarray:
    """``num / den``, ``empty`` where ``den`` is 0."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.full_like(num, empty), where=den > 0)


def seld_scores(counts: SeldCounts) -> SeldScores:
    """ER20, F20, LE_CD, LR_CD and the SELD score of accumulated counts, macro-averaged.

    Raises:
        ValueError: no reference event was counted (the error rate has no denominator).
    """
    n_ref = int(counts.n_ref.sum())
    if n_ref == 0:
        raise ValueError("no reference event in the scored segments: ER20 is undefined")
    er = (counts.substitutions + counts.deletions + counts.insertions) / n_ref
    f = _ratio(counts.tp, counts.tp + counts.fp_spatial + (counts.fp + counts.fn) / 2, 0.0)
    le = _ratio(counts.le_sum, counts.paired, MAX_LE_DEG)
    lr = _ratio(counts.paired, counts.paired + counts.fn, 0.0)
    seld = (er + (1 - f) + le / MAX_LE_DEG + (1 - lr)) / 4
    return SeldScores(
        er20=er,
        f20=float(f.mean()),
        le_cd=float(le.mean()),
        lr_cd=float(lr.mean()),
        seld=float(seld.mean()),
        class_f20=f,
        class_le_cd=le,
        class_lr_cd=lr,
        class_seld=seld,
    )

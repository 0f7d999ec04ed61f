"""natheear-tasks seld-score: the DCASE SELD metrics of system outputs against reference
metadata, both folders of frame-list CSVs (``frame,class,source,azimuth,elevation``, a
sixth column the distance; or the DCASE 2023 baseline's ``frame,class,source,x,y,z,dist``).

Scored as the official DCASE evaluation scores them (:mod:`natheear_tasks.evaluation.
seld_metrics`): files are matched by stem and only references with a prediction are scored
(``--score-missing`` scores the others as all missed), rows keep their file order, each file
is scored on the segments up to its last reference frame; rows left out are counted in the
notes. A prediction without a reference is an error. Only the ``*.csv`` files (``.CSV``
too) directly inside each folder are read. The number of classes is ``--num-classes``,
else the largest class index seen on either side + 1 (at most 1000).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from natheear_tasks.evaluation.seld_metrics import (
    DOA_THRESHOLD_DEG,
    FRAMES_PER_SEGMENT,
    SeldCounts,
    SeldScores,
    count_file,
    scored_segments,
    seld_scores,
)
from natheear_tasks.exits import ALL_OR_NOTHING, run_command
from natheear_tasks.formats.dcase_frames import (
    MAX_CLASSES,
    DcaseFormatError,
    FrameRow,
    read_output_csv,
)
from natheear_tasks.tasks.taskdir import TaskError, atomic_write_json

COMMAND = Path("seld-score")  # the name heading the list of problems
FROM_OPTION = "--num-classes"
FROM_DATA = "largest class index + 1"


@dataclass(frozen=True)
class SeldReport:
    """Scores of a pair of folders, with what was scored and what was not."""

    scores: SeldScores
    counts: SeldCounts
    classes_from: str  # FROM_OPTION or FROM_DATA
    files: int
    segments: int
    missing_predictions: list[str]
    notes: list[str]

    def to_json(self) -> dict:
        """``ER20``, ``F20``, ``LE_CD``, ``LR_CD``, ``SELD`` (F20 and LR_CD fractions, LE_CD
        degrees), the counts, and the per-class values."""
        s, c = self.scores, self.counts
        classes = [
            {
                "class": k,
                "F20": float(s.class_f20[k]),
                "LE_CD": float(s.class_le_cd[k]),
                "LR_CD": float(s.class_lr_cd[k]),
                "SELD": float(s.class_seld[k]),
                "N_ref": int(c.n_ref[k]),
                "TP": int(c.tp[k]),
                "FP": int(c.fp[k]),
                "FP_spatial": int(c.fp_spatial[k]),
                "FN": int(c.fn[k]),
            }
            for k in range(c.num_classes)
        ]
        return {
            "ER20": s.er20,
            "F20": s.f20,
            "LE_CD": s.le_cd,
            "LR_CD": s.lr_cd,
            "SELD": s.seld,
            "S": c.substitutions,
            "D": c.deletions,
            "I": c.insertions,
            "N_ref": int(c.n_ref.sum()),
            "num_classes": c.num_classes,
            "num_classes_from": self.classes_from,
            "files": self.files,
            "segments": self.segments,
            "missing_predictions": self.missing_predictions,
            "classes": classes,
            "notes": self.notes,
            "metrics": "DCASE 2022-2023 task 3 SELD metrics, macro over classes, 20-degree "
            "threshold, 1-s segments",
        }

    def table(self) -> str:
        """The overall scores and one line per class, as printed."""
        s, c = self.scores, self.counts
        lines = [
            f"{'':>8} {'ER20':>6} {'F20':>6} {'LE_CD':>7} {'LR_CD':>6} {'SELD':>6}"
            f" {'N_ref':>6} {'TP':>6} {'FP':>6} {'FP_sp':>6} {'FN':>6}",
            f"{'all':>8} {s.er20:6.3f} {s.f20:6.1%} {s.le_cd:7.1f} {s.lr_cd:6.1%} {s.seld:6.3f}"
            f" {c.n_ref.sum():6d} {c.tp.sum():6d} {c.fp.sum():6d} {c.fp_spatial.sum():6d}"
            f" {c.fn.sum():6d}",
        ]
        for k in range(c.num_classes):
            lines.append(
                f"{f'class {k}':>8} {'':>6} {s.class_f20[k]:6.1%} {s.class_le_cd[k]:7.1f}"
                f" {s.class_lr_cd[k]:6.1%} {s.class_seld[k]:6.3f} {c.n_ref[k]:6d} {c.tp[k]:6d}"
                f" {c.fp[k]:6d} {c.fp_spatial[k]:6d} {c.fn[k]:6d}"
            )
        return "\n".join(lines)


def _csv_files(folder: Path, role: str, problems: list[str]) -> dict[str, Path]:
    """``stem -> path`` of the ``*.csv`` files directly in ``folder``."""
    if not folder.is_dir():
        problems.append(f"{role} folder {folder} does not exist or is not a folder")
        return {}
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() != ".csv" or not path.is_file():
            continue
        if path.stem in files:
            problems.append(f"{files[path.stem]} and {path.name}: one stem twice (a .csv and a "
                            f"{path.suffix}); keep one")  # fmt: skip
        files[path.stem] = path
    if not files:
        subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir())
        hint = (
            f" (it has folders {', '.join(subfolders[:5])}: pass one of them)" if subfolders else ""
        )
        problems.append(f"{role} folder {folder} holds no .csv file{hint}")
    return files


def _read(path: Path, num_classes: int | None, problems: list[str]) -> list[FrameRow]:
    try:
        rows = read_output_csv(path, num_classes)
    except DcaseFormatError as error:
        problems.extend(f"{path}: {p}" for p in error.problems)
        return []
    if rows and all(
        r.distance is not None and max(abs(r.azimuth), abs(r.elevation), r.distance) <= 1
        for r in rows
    ):
        problems.append(
            f"{path}: every row has 6 columns with azimuth, elevation and distance in "
            "[-1, 1]: this looks like the DCASE 2022 Cartesian output "
            "(frame,class,source,x,y,z), which is not read; write azimuth and elevation in "
            "degrees (frame,class,source,azimuth,elevation)"
        )
    return rows


def score_folders(
    ref_dir: str | Path,
    pred_dir: str | Path,
    num_classes: int | None = None,
    threshold: float = DOA_THRESHOLD_DEG,
    average: str = "macro",
    score_missing: bool = False,
    frames_per_segment: int = FRAMES_PER_SEGMENT,
) -> SeldReport:
    """Score the reference CSVs of ``ref_dir`` that have a namesake in ``pred_dir`` (all of
    them with ``score_missing``, the others as all missed).

    Raises:
        TaskError: every problem found (missing folders, bad rows, predictions without a
            reference, class indices out of range, no reference event scored).
    """
    ref_dir, pred_dir = Path(ref_dir), Path(pred_dir)
    problems: list[str] = []
    if num_classes is not None and not 1 <= num_classes <= MAX_CLASSES:
        problems.append(f"--num-classes must be in [1, {MAX_CLASSES}], got {num_classes}")
        num_classes = None
    if not 0 < threshold <= 180:
        problems.append(f"--doa-threshold must be in (0, 180] degrees, got {threshold}")
    if not 1 <= frames_per_segment <= 1000:
        problems.append(f"--label-frames-1s must be in [1, 1000], got {frames_per_segment}")
    ref_files = _csv_files(ref_dir, "reference", problems)
    pred_files = _csv_files(pred_dir, "prediction", problems)
    problems.extend(
        f"{pred_files[stem]}: no reference {stem}.csv in {ref_dir}"
        for stem in sorted(set(pred_files) - set(ref_files))
    )
    references = {stem: _read(path, num_classes, problems) for stem, path in ref_files.items()}
    predictions = {
        stem: _read(path, num_classes, problems)
        for stem, path in pred_files.items()
        if stem in ref_files
    }
    if problems:
        raise TaskError(COMMAND, problems)

    classes_from = FROM_OPTION if num_classes is not None else FROM_DATA
    if num_classes is None:
        seen = [r.cls for rows in (*references.values(), *predictions.values()) for r in rows]
        if not seen:
            raise TaskError(COMMAND, ["no row in any reference or prediction file"])
        num_classes = max(seen) + 1
    missing = sorted(set(references) - set(predictions))
    total = SeldCounts.zeros(num_classes)
    segments = 0
    unscored_ref = unscored_pred = 0
    for stem, reference in references.items():
        if stem not in predictions and not score_missing:
            continue
        prediction = predictions.get(stem, [])
        file_segments = scored_segments(reference, None, frames_per_segment)
        scored_end = file_segments * frames_per_segment
        unscored_ref += sum(r.frame >= scored_end for r in reference)
        unscored_pred += sum(r.frame >= scored_end for r in prediction)
        segments += file_segments
        total = total + count_file(
            reference, prediction, num_classes, None, threshold, frames_per_segment
        )
    if total.n_ref.sum() == 0:
        hint = "a file is scored up to the 1-s segment of its last reference frame, as in DCASE"
        raise TaskError(COMMAND, [f"no reference event in the scored segments ({hint})"])
    scores = seld_scores(total, average)

    notes = []
    if missing:
        how = "scored as all missed" if score_missing else "not scored (as in DCASE)"
        notes.append(
            f"{len(missing)} reference file(s) without a prediction, {how}: "
            + ", ".join(missing[:10])
            + (" ..." if len(missing) > 10 else "")
        )
    absent = [k for k in range(num_classes) if total.n_ref[k] == 0]
    if absent:
        notes.append(
            f"class(es) {absent} have no reference event: each counts F20 0, LE_CD 180 and "
            "LR_CD 0 in the macro averages, as in the DCASE evaluation"
        )
    if unscored_ref or unscored_pred:
        notes.append(
            f"{unscored_ref} reference and {unscored_pred} prediction row(s) lie beyond the "
            "1-s segments scored (the DCASE evaluation scores a file up to the segment of its "
            "last reference frame, and not that frame when its index is a multiple of 10)"
        )
    return SeldReport(scores, total, classes_from, len(references), segments, missing, notes)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``seld-score`` subcommand."""
    parser = subparsers.add_parser(
        "seld-score",
        help="DCASE SELD metrics (ER20, F20, LE_CD, LR_CD, SELD score) of output CSVs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ref", required=True, metavar="DIR", help="reference metadata CSVs")
    parser.add_argument("--pred", required=True, metavar="DIR", help="system output CSVs")
    parser.add_argument("--json", metavar="FILE", help="also write the scores as JSON")
    parser.add_argument(
        "--num-classes",
        type=int,
        metavar="N",
        help=f"number of classes, at most {MAX_CLASSES} (default: the largest class index "
        "seen + 1)",
    )
    parser.add_argument(
        "--doa-threshold",
        type=float,
        default=DOA_THRESHOLD_DEG,
        metavar="DEG",
        help="largest track error of a true positive (default %(default)s)",
    )
    parser.add_argument(
        "--average", choices=("macro", "micro"), default="macro", help="class averaging"
    )
    parser.add_argument(
        "--label-frames-1s",
        type=int,
        default=FRAMES_PER_SEGMENT,
        metavar="N",
        help="label frames a second, a 1-s segment (default %(default)s: 100-ms frames)",
    )
    parser.add_argument(
        "--score-missing",
        action="store_true",
        help="score references without a prediction as all missed (DCASE skips them)",
    )
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``seld-score``: exit 0 scored, 2 bad input (every problem listed)."""
    return run_command(lambda: _score(args), (TaskError,), ALL_OR_NOTHING)


def _score(args: argparse.Namespace) -> int:
    if args.json and Path(args.json).is_dir():
        raise TaskError(COMMAND, [f"--json {args.json} is a folder; name a file to write"])
    report = score_folders(
        args.ref, args.pred, args.num_classes, args.doa_threshold, args.average,
        args.score_missing, args.label_frames_1s,
    )  # fmt: skip
    c = report.counts
    print(
        f"seld-score: {report.files} reference file(s), {report.segments} 1-s segments, "
        f"{c.num_classes} classes ({report.classes_from}), "
        f"S {c.substitutions} D {c.deletions} I {c.insertions} of N_ref {c.n_ref.sum()}"
    )
    print(report.table())
    for note in report.notes:
        print(f"note: {note}")
    if args.json:
        atomic_write_json(Path(args.json), report.to_json(), indent=2)
        print(f"wrote {args.json}")
    return 0

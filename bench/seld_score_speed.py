"""Speed of ``natheear-tasks seld-score`` on a STARSS23-sized evaluation (not a test; prints
its figures).

Writes random reference CSVs (13 classes, events of 1-10 s at random directions, up to
three at a time, sometimes two of a class) and predictions (the references with direction
noise, dropped and shifted frames, wrong classes and insertions) into a temporary folder,
then times reading and scoring them with ``score_folders``.

    python bench/seld_score_speed.py [--files 80] [--minutes 3] [--seed 0]

Prints the rows, the wall time of reading + scoring and of the metrics alone, and the
scores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from natheear_tasks.evaluation.seld_metrics import SeldCounts, count_file
from natheear_tasks.evaluation.seld_score import score_folders
from natheear_tasks.formats.dcase_frames import FrameRow, format_frame_csv, read_frame_csv

CLASSES = 13


def _wrap(azimuth: float) -> float:
    return (azimuth + 180) % 360 - 180


def _reference(rng: np.random.Generator, frames: int) -> list[FrameRow]:
    rows, sources = [], {}
    for _ in range(max(1, frames // 40)):
        cls, start, length = (
            int(rng.integers(CLASSES)),
            int(rng.integers(frames)),
            int(rng.integers(10, 100)),
        )
        azimuth, elevation, speed = rng.uniform(-180, 180), rng.uniform(-45, 45), rng.uniform(-2, 2)
        for f in range(start, min(frames, start + length)):
            source = sources.get((f, cls), 0)
            sources[(f, cls)] = source + 1
            rows.append(FrameRow(f, cls, source, _wrap(azimuth + speed * (f - start)), elevation))
    return rows


def _prediction(rng: np.random.Generator, reference: list[FrameRow]) -> list[FrameRow]:
    rows = {}
    for r in reference:
        if rng.random() < 0.2:
            continue
        cls = r.cls if rng.random() > 0.05 else int(rng.integers(CLASSES))
        frame = max(0, r.frame + int(rng.integers(-1, 2)))
        azimuth = _wrap(r.azimuth + rng.normal(0, 15))
        elevation = float(np.clip(r.elevation + rng.normal(0, 10), -90, 90))
        source = r.source
        while (frame, cls, source) in rows:  # a shifted or relabelled row meets another
            source += 1
        rows[(frame, cls, source)] = FrameRow(frame, cls, source, azimuth, elevation)
    return list(rows.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=80)
    parser.add_argument("--minutes", type=float, default=3.0, help="length of each recording")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    frames = round(args.minutes * 600)
    with tempfile.TemporaryDirectory() as work:
        ref, pred = Path(work, "ref"), Path(work, "pred")
        ref.mkdir()
        pred.mkdir()
        rows = 0
        for i in range(args.files):
            reference = _reference(rng, frames)
            prediction = _prediction(rng, reference)
            rows += len(reference) + len(prediction)
            (ref / f"fold4_room{i:03d}.csv").write_text(format_frame_csv(reference))
            (pred / f"fold4_room{i:03d}.csv").write_text(format_frame_csv(prediction))
        started = time.perf_counter()
        report = score_folders(ref, pred, num_classes=CLASSES)
        seconds = time.perf_counter() - started
        pairs = [(read_frame_csv(r), read_frame_csv(pred / r.name)) for r in ref.iterdir()]
    started = time.perf_counter()
    sum((count_file(r, p, CLASSES) for r, p in pairs), SeldCounts.zeros(CLASSES))
    metrics_seconds = time.perf_counter() - started
    s = report.scores
    print(
        f"files {args.files}  minutes each {args.minutes}  rows {rows}  segments {report.segments}"
    )
    print(f"read + score {seconds:.2f} s  ({rows / seconds:,.0f} rows/s)")
    print(f"of which the metrics (count_file) {metrics_seconds:.2f} s")
    print(f"ER20 {s.er20:.3f}  F20 {s.f20:.3f}  LE_CD {s.le_cd:.1f}  LR_CD {s.lr_cd:.3f}", end="")
    print(f"  SELD {s.seld:.3f}")


if __name__ == "__main__":
    main()

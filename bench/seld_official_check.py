"""natheear-tasks' SELD metrics against the official DCASE 2023 task 3 evaluation code, on
random and borderline cases (not a test: it needs a copy of that code).

    git clone https://github.com/sharathadavanne/seld-dcase2023 /tmp/seld-dcase2023
    python bench/seld_official_check.py --official /tmp/seld-dcase2023 [--cases 200]

The official ``SELD_evaluation_metrics.py`` and ``cls_feature_class.py`` are imported from
``--official`` as they are (their unused imports -- IPython, librosa, matplotlib, ... -- are
stubbed when missing, and ``np.float``, gone from NumPy 1.24, is given back), and run the
way its ``cls_compute_seld_results`` runs them: load each CSV with
``load_output_format_file``, turn Cartesian predictions into angles
(``convert_output_format_cartesian_to_polar``), cut 1-s blocks up to the last reference
frame (``segment_labels``), ``update_seld_scores`` file by file, ``compute_seld_scores``.
Cases: random files on a coarse grid of directions (Hungarian ties between collinear
directions 10 degrees apart, exact 20-degree gaps), rows in random order within frames,
repeated (frame, class, source) rows, 7-column Cartesian outputs with source 0 on every row
(as the 2023 baseline writes them), classes without events. Prints the largest difference
of each score over the cases; exit code 1 when a score differs by more than 1e-12.
"""

from __future__ import annotations

import argparse
import importlib
import math
import random
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from natheear_tasks.evaluation.seld_score import score_folders  # noqa: E402

STUBBED = ("IPython", "librosa", "matplotlib", "matplotlib.pyplot", "joblib", "sklearn")
TOLERANCE = 1e-12


def load_official(folder: Path) -> tuple[types.ModuleType, types.ModuleType]:
    """The official metrics and feature-class modules, imported from ``folder``."""
    for name in STUBBED:
        try:
            importlib.import_module(name)
        except ImportError:
            stub = types.ModuleType(name)
            stub.embed = stub.preprocessing = None
            stub.get_ipython = lambda: None
            stub.switch_backend = lambda *args: None
            sys.modules[name] = stub
    if not hasattr(np, "float"):
        np.float = float  # the official module reads np.finfo(np.float) at import
    sys.path.insert(0, str(folder))
    return importlib.import_module("SELD_evaluation_metrics"), importlib.import_module(
        "cls_feature_class"
    )


def official_scores(metrics, features, ref_dir: Path, pred_dir: Path, classes: int) -> tuple:
    """``ER, F, LE, LR, SELD`` as ``ComputeSELDResults.get_SELD_Results`` computes them."""
    blocks = types.SimpleNamespace(_nb_label_frames_1s=10)
    fc = features.FeatureClass
    evaluation = metrics.SELDMetrics(nb_classes=classes, doa_threshold=20, average="macro")
    for pred_file in sorted(p.name for p in pred_dir.iterdir()):
        gt = fc.load_output_format_file(None, str(ref_dir / pred_file))
        last = max(gt)
        ref_labels = fc.segment_labels(blocks, gt, last)
        pred = fc.load_output_format_file(None, str(pred_dir / pred_file))
        if any(len(v) == 5 for rows in pred.values() for v in rows):  # x, y, z outputs
            pred = fc.convert_output_format_cartesian_to_polar(None, pred)
        evaluation.update_seld_scores(fc.segment_labels(blocks, pred, last), ref_labels)
    return evaluation.compute_seld_scores()[:5]


def write_case(rng: random.Random, folder: Path, classes: int) -> None:
    """One reference and one prediction folder of 1-3 files."""
    grid = [float(a) for a in range(-180, 180, 10)]
    (folder / "ref").mkdir()
    (folder / "pred").mkdir()
    for index in range(rng.randint(1, 3)):
        cartesian = rng.random() < 0.3
        for side in ("ref", "pred"):
            lines = []
            frames = rng.randint(12, 60)
            for frame in range(frames):
                for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
                    cls = rng.randrange(classes)
                    az = (
                        rng.choice(grid)
                        if side == "ref" or rng.random() < 0.6
                        else rng.uniform(-180, 180)
                    )
                    el = rng.choice([0.0, 0.0, 20.0, -20.0, 45.0])
                    source = 0 if side == "pred" else rng.randrange(2)
                    if side == "pred" and cartesian:
                        a, e = math.radians(az), math.radians(el)
                        x, y, z = math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)
                        lines.append(f"{frame},{cls},{source},{x!r},{y!r},{z!r},0")
                    else:
                        lines.append(f"{frame},{cls},{source},{az!r},{el!r}")
            if side == "ref" and not lines:
                lines.append(f"{frames},0,0,0.0,0.0")
            rng.shuffle(lines)
            lines.sort(key=lambda line: int(line.split(",")[0]))  # frames in order
            (folder / side / f"file{index}.csv").write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="see the module docstring for what is compared",
    )
    parser.add_argument("--official", type=Path, required=True, help="seld-dcase2023 checkout")
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    metrics, features = load_official(args.official)
    rng = random.Random(args.seed)
    names = ("ER20", "F20", "LE_CD", "LR_CD", "SELD")
    worst = dict.fromkeys(names, 0.0)
    compared = 0
    for _ in range(args.cases):
        classes = rng.randint(1, 4)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            write_case(rng, folder, classes)
            try:
                ours = score_folders(folder / "ref", folder / "pred", classes).scores
            except ValueError:
                continue  # no reference event in the scored segments: refused by seld-score
            theirs = official_scores(metrics, features, folder / "ref", folder / "pred", classes)
        values = (ours.er20, ours.f20, ours.le_cd, ours.lr_cd, ours.seld)
        for name, a, b in zip(names, values, theirs, strict=True):
            worst[name] = max(worst[name], abs(float(a) - float(b)))
        compared += 1
    print(f"{compared} cases compared with the official DCASE 2023 evaluation code")
    for name in names:
        print(f"  {name:6} largest difference {worst[name]:.3g}")
    return 0 if max(worst.values()) <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())

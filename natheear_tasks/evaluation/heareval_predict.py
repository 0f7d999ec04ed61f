"""heareval's predictions runner, fixed at run time for Python 3.11, torch >= 2.6 and
PyTorch Lightning 1.9, made reproducible, and made to keep its per-clip test outputs.

Usage (heareval's ``python -m heareval.predictions.runner`` arguments, plus two)::

    python -m natheear_tasks.evaluation.heareval_predict EMBEDDINGS/TASK [...] \
        [--grid-points 8] [--grid default] [--seed 42] [--model-key KEY]

What is applied in this process before heareval's own command runs (nothing in
site-packages is edited):

* **Checkpoint loading under torch >= 2.6.** ``torch.load`` defaults to ``weights_only=True``
  there, and the runner's Lightning checkpoints hold the probe's hyper-parameters, which
  name classes and functions (``torch.nn.BatchNorm1d``, ``torch.nn.init.xavier_uniform_``,
  ``torch.optim.Adam``, ...). Exactly those (every non-literal value of heareval's
  hyper-parameter grids) are added to torch's safe globals, so loading stays
  ``weights_only=True``; nothing else becomes unpicklable.
  ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is not needed.
* **Event tasks under Lightning >= 1.6** (hear-eval-kit issue 432). Before testing, heareval
  sets ``trainer.fit_loop.current_epoch`` to the best validation epoch so that the event
  post-processing chosen at that epoch is used; that attribute no longer feeds
  ``trainer.current_epoch``, so the test step looked up the wrong epoch (``KeyError``). The
  wrapper sets ``trainer.fit_loop.epoch_progress.current.completed``, which does.
* **Reproducible probes.** heareval seeds once per task (42) and trains its grid points one
  after the other from the same random stream, with as many intra-op threads as torch
  has. Here the grid points are still chosen as heareval chooses them (a shuffle after
  seeding with ``--seed``), but every probe is trained from its own seed, derived from
  the task, the model (``--model-key``), the test fold and the grid point
  (:func:`natheear_tasks.evaluation.determinism.probe_seed`), with
  :data:`~natheear_tasks.evaluation.determinism.PROBE_THREADS` intra-op thread(s), so the
  same embeddings give the same scores whatever the thread count.
* **Per-clip test outputs.** heareval keeps only aggregate scores (and a pickle). After each
  test fold, ``<fold>.test-outputs.json`` is written beside the embeddings: for scene tasks
  each test file's predicted probabilities and target vector, for event tasks the
  predicted events (after the chosen post-processing) and the target events per file; the
  confidence intervals are computed from them (:mod:`natheear_tasks.evaluation.intervals`).
"""

from __future__ import annotations

import argparse
import functools
import inspect
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from natheear_tasks.evaluation import determinism
from natheear_tasks.evaluation.heareval_embed import read_file_order, run_click
from natheear_tasks.evaluation.probe_training import fold_name
from natheear_tasks.tasks.taskdir import atomic_write_json

PRIMITIVES = (str, int, float, bool, type(None))
TEST_OUTPUTS_SUFFIX = ".test-outputs.json"
# What the seeding wrappers use; set by seed_probes.
_SEEDING = {"seed": determinism.DEFAULT_SEED, "model": ""}


def grid_globals(grids: Iterable[dict]) -> list[Callable]:
    """The classes and functions among the values of hyper-parameter grids, each once."""
    found: dict[int, Callable] = {}
    for grid in grids:
        for values in grid.values():
            for value in values:
                if not isinstance(value, PRIMITIVES):
                    found[id(value)] = value
    return list(found.values())


def allow_checkpoint_globals() -> list[Callable]:
    """Add the globals heareval's Lightning checkpoints name to torch's safe globals."""
    import torch
    from heareval.predictions import task_predictions as tp

    grids = [tp.PARAM_GRID, tp.FAST_PARAM_GRID, tp.FASTER_PARAM_GRID]
    grids += list(tp.TASK_SPECIFIC_PARAM_GRID.values())
    allowed = grid_globals(grids)
    torch.serialization.add_safe_globals(allowed)
    return allowed


def fix_test_epoch() -> None:
    """Make heareval's test step see the best validation epoch (Lightning >= 1.6)."""
    from heareval.predictions import task_predictions as tp

    original = tp.task_predictions_test
    if getattr(original, "natheear_fixed", False):
        return

    @functools.wraps(original)
    def task_predictions_test(*args, **kwargs):
        grid_point = kwargs["grid_point"] if "grid_point" in kwargs else args[1]
        grid_point.trainer.fit_loop.epoch_progress.current.completed = grid_point.epoch
        return original(*args, **kwargs)

    task_predictions_test.natheear_fixed = True
    tp.task_predictions_test = task_predictions_test


def seed_probes(seed: int, model: str) -> None:
    """Choose grid points after seeding with ``seed`` and train each probe from
    :func:`~natheear_tasks.evaluation.determinism.probe_seed` (idempotent; the latest
    ``seed`` and ``model`` apply). An empty ``model`` stands for the embeddings folder's
    name (heareval's ``<module>-<options>``)."""
    from heareval.predictions import task_predictions as tp
    from pytorch_lightning import seed_everything

    _SEEDING.update(seed=seed, model=model)
    original = tp.task_predictions_train
    if getattr(original, "natheear_fixed", False):
        return
    signature = inspect.signature(original)

    def seed_grid_choice(_seed: int | None = None, workers: bool = False) -> int:
        return seed_everything(_SEEDING["seed"], workers=workers)

    @functools.wraps(original)
    def task_predictions_train(*args, **kwargs):
        bound = signature.bind(*args, **kwargs).arguments
        path = Path(bound["embedding_path"])
        seed_everything(
            determinism.probe_seed(
                _SEEDING["seed"],
                path.name,
                _SEEDING["model"] or path.parent.name,
                fold_name(bound["data_splits"]),
                bound["conf"],
            ),
            workers=False,
        )
        return original(*args, **kwargs)

    task_predictions_train.natheear_fixed = True
    tp.seed_everything = seed_grid_choice
    tp.task_predictions_train = task_predictions_train


def test_outputs(embedding_path: Path, test_splits: list[str], outputs: dict) -> dict:
    """The JSON of one test fold's outputs (``predictor.test_predictions`` of heareval).

    Scene tasks: ``{"kind": "scene", "files", "prediction", "target"}`` (a row per file, in
    the order heareval stacked them); event tasks: ``{"kind": "event", "predicted_events",
    "target_events"}`` (events per file, times in ms).
    """
    if "predicted_events" in outputs:
        return {
            "kind": "event",
            "predicted_events": {
                file: [{**e, "start": float(e["start"]), "end": float(e["end"])} for e in events]
                for file, events in outputs["predicted_events"].items()
            },
            "target_events": outputs["target_events"],
        }
    files = [f for split in test_splits for f in read_file_order(embedding_path, split)]
    prediction, target = outputs["prediction"].tolist(), outputs["target"].tolist()
    if len(files) != len(prediction):
        raise RuntimeError(
            f"{embedding_path}: {len(prediction)} test predictions for {len(files)} files in "
            f"{[s + '.filenames.json' for s in test_splits]}"
        )
    return {"kind": "scene", "files": files, "prediction": prediction, "target": target}


def record_test_outputs() -> None:
    """Write ``<fold>.test-outputs.json`` after each test fold (idempotent)."""
    from heareval.predictions import task_predictions as tp

    original = tp.task_predictions_test
    if getattr(original, "natheear_records", False):
        return
    signature = inspect.signature(original)

    @functools.wraps(original)
    def task_predictions_test(*args, **kwargs):
        results = original(*args, **kwargs)
        bound = signature.bind(*args, **kwargs).arguments
        path, splits = Path(bound["embedding_path"]), bound["data_splits"]
        outputs = test_outputs(path, splits["test"], bound["grid_point"].predictor.test_predictions)
        atomic_write_json(path / f"{fold_name(splits)}{TEST_OUTPUTS_SUFFIX}", outputs)
        return results

    task_predictions_test.natheear_records = True
    tp.task_predictions_test = task_predictions_test


def apply_fixes(seed: int = determinism.DEFAULT_SEED, model: str = "") -> None:
    """Apply every fix to the heareval imported in this process (idempotent)."""
    allow_checkpoint_globals()
    fix_test_epoch()
    record_test_outputs()
    seed_probes(seed, model)


def main(argv: list[str] | None = None) -> int:
    """Run heareval's predictions runner with the fixes above; its exit code."""
    import torch

    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--seed", type=int, default=determinism.DEFAULT_SEED)
    parser.add_argument("--model-key", default="")
    ours, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    apply_fixes(ours.seed, ours.model_key)
    torch.set_num_threads(determinism.PROBE_THREADS)
    from heareval.predictions.runner import runner

    return run_click(runner, rest, "python -m natheear_tasks.evaluation.heareval_predict")


if __name__ == "__main__":
    sys.exit(main())

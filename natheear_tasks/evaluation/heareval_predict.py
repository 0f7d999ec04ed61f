"""heareval's predictions runner, fixed at run time for Python 3.11, torch >= 2.6 and
PyTorch Lightning 1.9.

Usage (the same arguments as ``python -m heareval.predictions.runner``)::

    python -m natheear_tasks.evaluation.heareval_predict EMBEDDINGS/TASK [...] [--grid-points 8]

Two fixes are applied in this process before heareval's own command runs; nothing in
site-packages is edited:

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
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable

PRIMITIVES = (str, int, float, bool, type(None))


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


def apply_fixes() -> None:
    """Apply both fixes to the heareval imported in this process (idempotent)."""
    allow_checkpoint_globals()
    fix_test_epoch()


def main(argv: list[str] | None = None) -> int:
    apply_fixes()
    from heareval.predictions.runner import runner

    try:
        runner.main(args=argv, prog_name="python -m natheear_tasks.evaluation.heareval_predict")
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

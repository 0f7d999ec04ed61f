"""Training of the evaluation's own probes (localization and SELD): heareval's early-stopped
loop and grid search, for any model, loss and validation score.

* **One probe** (:func:`fit`): from its seed, the model is built and trained with the grid
  point's ``optim`` and ``lr`` on shuffled batches of ``batch_size`` training examples (a
  batch of one is skipped: BatchNorm cannot train on it) for at most ``max_epochs`` epochs.
  Every ``check_val_every_n_epoch`` epochs, and after the last, the validation score is
  computed (lower is better); ``patience`` checks without a lower score stop the training,
  and the weights of the lowest score are kept.
* **The search** (:func:`search`): every grid point is trained on the first data split and
  the one with the lowest validation score is retrained on the other splits, each probe
  from its own :func:`~natheear_tasks.evaluation.determinism.probe_seed` (the task, the
  model, the test fold and the grid point).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from natheear_tasks.evaluation import determinism


@dataclass
class FitResult:
    """A trained probe (in eval mode) and its validation record."""

    model: nn.Module
    conf: dict
    validation: float
    epoch: int


def predict(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    """``model``'s outputs of ``(N, D)`` inputs, in eval mode, ``batch_size`` rows at a time."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def fit(
    build: Callable[[], nn.Module],
    x: Tensor,
    loss: Callable[[Tensor, Tensor], Tensor],
    validation: Callable[[nn.Module], float],
    conf: dict,
    seed: int,
) -> FitResult:
    """Train one probe with early stopping (module docstring), from ``seed``.

    Args:
        build: makes the untrained model (called after seeding).
        x: ``(N, D)`` training inputs.
        loss: ``loss(output, index)``, the loss of the model's output for the training
            examples ``index``.
        validation: the validation score of the model (lower is better).
        conf: the grid point.
        seed: the probe's seed.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
        return _train(model, x, loss, validation, conf)


def _train(
    model: nn.Module,
    x: Tensor,
    loss: Callable[[Tensor, Tensor], Tensor],
    validation: Callable[[nn.Module], float],
    conf: dict,
) -> FitResult:
    optimizer = conf["optim"](model.parameters(), lr=conf["lr"])
    batch, every = conf["batch_size"], conf["check_val_every_n_epoch"]
    best, best_state, best_epoch, checks_without_gain = math.inf, None, -1, 0
    for epoch in range(conf["max_epochs"]):
        model.train()
        order = torch.randperm(len(x))
        for start in range(0, len(order), batch):
            index = order[start : start + batch]
            if len(index) < 2:
                continue  # BatchNorm cannot train on a batch of one
            value = loss(model(x[index]), index)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
        if (epoch + 1) % every and epoch + 1 != conf["max_epochs"]:
            continue
        score = validation(model)
        if score < best:
            best, best_epoch, checks_without_gain = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            checks_without_gain += 1
            if checks_without_gain >= conf["patience"]:
                break
    model.load_state_dict(best_state)
    return FitResult(model.eval(), conf, best, best_epoch)


def search(
    plan: list[dict[str, list[str]]],
    confs: list[dict],
    fit_split: Callable[[dict[str, list[str]], dict, int], FitResult],
    seed: int,
    task: str,
    model: str,
) -> list[FitResult]:
    """The probe of every data split of ``plan`` (module docstring), in plan order.

    Args:
        plan: the data splits (``train``, ``valid``, ``test`` split names).
        confs: the grid points to search.
        fit_split: ``fit_split(data_split, conf, probe_seed)`` trains one probe.
        seed, task, model: what the probes' seeds derive from, with the test fold and the
            grid point.
    """

    def fit_seeded(p: dict[str, list[str]], conf: dict) -> FitResult:
        return fit_split(p, conf, determinism.probe_seed(seed, task, model, fold_name(p), conf))

    results = [fit_seeded(plan[0], conf) for conf in confs]
    best = min(results, key=lambda r: r.validation)
    return [best] + [fit_seeded(p, best.conf) for p in plan[1:]]


def fold_name(data_split: dict[str, list[str]]) -> str:
    """heareval's name of a data split's test fold(s): ``"test"``, ``"fold01"``."""
    return "|".join(data_split["test"])

"""heareval's embeddings runner, started with three run-time fixes (nothing in site-packages
is edited).

Usage (the same arguments as ``python -m heareval.embeddings.runner``)::

    python -m natheear_tasks.evaluation.heareval_embed MODULE --model PATH --tasks-dir TASKS \
        --embeddings-dir EMBEDDINGS [--task NAME] [--model-options JSON]

* **A GPU seen only by torch is no error.** heareval's runner refuses to import when torch
  sees a GPU and TensorFlow does not (the usual case with ``tensorflow-cpu``). That guard
  matters only for TensorFlow models, which then run on the CPU; torch models such as
  hear_gram's use the GPU either way. The runner is imported with the guard answered
  "available" in that one case, saying so on stderr.
* **``--model random``** (untrained, seeded weights, as hear_gram's ``load_model`` takes
  them) passes heareval's check that ``--model`` is an existing path.
* **The row order of each split is recorded.** heareval stacks a split's embeddings into
  ``<split>.embeddings.npy`` in a shuffled file order and keeps only the labels, so the
  predictions of its test step cannot be told apart by file. The wrapper writes that order
  to ``<split>.filenames.json`` beside them (the same shuffle, replayed from a copy of
  heareval's generator), which the per-clip confidence intervals need.
"""

from __future__ import annotations

import functools
import json
import os
import random
import sys
from pathlib import Path
from types import ModuleType

import click

from natheear_tasks.tasks.taskdir import atomic_write_json

FILE_ORDER_SUFFIX = ".filenames.json"
RANDOM = "random"


def import_runner() -> ModuleType:
    """Import ``heareval.embeddings.runner``, passing its torch-GPU-without-TensorFlow check."""
    import tensorflow as tf
    import torch

    if "heareval.embeddings.runner" in sys.modules:
        return sys.modules["heareval.embeddings.runner"]
    if not (torch.cuda.is_available() and not tf.config.list_physical_devices("GPU")):
        import heareval.embeddings.runner as runner

        return runner
    print(
        "natheear_tasks.evaluation.heareval_embed: torch sees a GPU and TensorFlow does not "
        "(tensorflow-cpu); torch models run on the GPU, TensorFlow models on the CPU",
        file=sys.stderr,
    )
    original = tf.test.is_gpu_available
    tf.test.is_gpu_available = lambda *args, **kwargs: True
    try:
        import heareval.embeddings.runner as runner
    finally:
        tf.test.is_gpu_available = original
    return runner


class ModelReference(click.ParamType):
    """heareval's ``--model`` path check, letting ``random`` through when no such file exists."""

    name = "path"

    def __init__(self, path_type: click.ParamType) -> None:
        self.path_type = path_type

    def convert(self, value: str, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if value == RANDOM and not os.path.exists(value):
            return value
        return self.path_type.convert(value, param, ctx)


def accept_random_model(command: click.Command) -> None:
    """Make ``command``'s ``--model`` option accept ``random`` (idempotent)."""
    for param in command.params:
        if param.name == "model" and not isinstance(param.type, ModelReference):
            param.type = ModelReference(param.type)


def file_order(rng: random.Random, files: list[str]) -> list[str]:
    """The order ``rng.shuffle`` would put ``files`` in, leaving ``rng`` untouched."""
    shadow = random.Random()
    shadow.setstate(rng.getstate())
    order = list(files)
    shadow.shuffle(order)
    return order


def record_file_order() -> None:
    """Write ``<split>.filenames.json`` (the row order of ``<split>.embeddings.npy``) next to
    heareval's stacked embeddings (idempotent)."""
    from heareval.embeddings import task_embeddings as te

    original = te.memmap_embeddings
    if getattr(original, "natheear_fixed", False):
        return

    @functools.wraps(original)
    def memmap_embeddings(
        outdir: Path,
        prng: random.Random,
        metadata: dict,
        split_name: str,
        embed_task_dir: Path,
        split_data: dict,
    ) -> None:
        order = file_order(prng, list(split_data))
        original(outdir, prng, metadata, split_name, embed_task_dir, split_data)
        atomic_write_json(embed_task_dir / f"{split_name}{FILE_ORDER_SUFFIX}", order)

    memmap_embeddings.natheear_fixed = True
    te.memmap_embeddings = memmap_embeddings


def read_file_order(embed_task_dir: Path, split: str) -> list[str]:
    """The file of each row of ``<split>.embeddings.npy``, as :func:`record_file_order` wrote."""
    path = embed_task_dir / f"{split}{FILE_ORDER_SUFFIX}"
    if not path.is_file():
        raise RuntimeError(
            f"{path} is missing: embed through natheear_tasks.evaluation.heareval_embed "
            "(which records each split's row order), not heareval's runner directly"
        )
    return json.loads(path.read_text())


def run_click(command: click.Command, args: list[str] | None, prog_name: str) -> int:
    """Run a click command (one of heareval's runners) and return its exit code: click
    ends with ``SystemExit``, whose code is kept when it is a number and is 1 otherwise."""
    try:
        command(args=args, prog_name=prog_name)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run heareval's embeddings runner with the fixes above; its exit code."""
    runner = import_runner().runner
    accept_random_model(runner)
    record_file_order()
    return run_click(runner, argv, "python -m natheear_tasks.evaluation.heareval_embed")


if __name__ == "__main__":
    sys.exit(main())

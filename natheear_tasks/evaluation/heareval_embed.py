"""heareval's embeddings runner, started so that a GPU seen only by torch is no error.

Usage (the same arguments as ``python -m heareval.embeddings.runner``)::

    python -m natheear_tasks.evaluation.heareval_embed MODULE --model PATH --tasks-dir TASKS \
        --embeddings-dir EMBEDDINGS [--task NAME] [--model-options JSON]

heareval's runner refuses to import when torch sees a GPU and TensorFlow does not (the
usual case with ``tensorflow-cpu``). That guard matters only for TensorFlow models, which
then run on the CPU; torch models such as hear_gram's use the GPU either way. This wrapper
imports the runner with the guard answered "available" in that one case, says so on
stderr, and otherwise runs heareval's command unchanged.
"""

from __future__ import annotations

import sys
from types import ModuleType


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


def main(argv: list[str] | None = None) -> int:
    runner = import_runner().runner
    try:
        runner.main(args=argv, prog_name="python -m natheear_tasks.evaluation.heareval_embed")
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

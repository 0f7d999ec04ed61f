"""Run the GRAM authors' evaluation kit (listen-eval-kit) on task folders this package writes.

In WORK it writes a synthetic DCASE dataset (``natheear-tasks seld-synth``) and turns it into
a SELD and a localization task (``seld``), and a HEAR task of tones into Nat-HEAR binaural
classification and localization tasks (``convert``, ``localize``). Then the kit's own
embeddings runner embeds each task with a ``hear_gram`` module (untrained weights), the kit's
predictions runner trains and scores its probes, and the kit's test scores are printed.

    python scripts/kit_interop.py KIT WORK

KIT is a checkout of https://github.com/labhamlet/listen-eval-kit. The kit imports IPython,
which this package does not need: it is installed into WORK/kit-deps when missing. The kit
(pytorch-lightning 1.9) reloads the probe checkpoints it has just written with ``torch.load``,
which torch >= 2.6 refuses by default, so its runs get ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``.

Exit codes: 0 the kit read and scored every task, 1 a step failed (its log is named), 2 bad
usage (WORK not empty, or in use by another run), 130 / 143 interrupted (the running step
is stopped first).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from hear_tasks import write_task  # noqa: E402

from natheear_tasks import children, locks  # noqa: E402

RATE = 16000
MODEL_OPTIONS = json.dumps({"model_file_path": "random", "sample_rate": RATE})
# (task folder, hear_gram module, the kit's --localization value; "" for its default route)
TASKS = [
    ("seld/toy-seld", "hear_gram.gram_ambisonics", ""),
    ("seld/toy-localization", "hear_gram.gram_ambisonics", "cartesian-regression"),
    ("natheear/tones-binaural", "hear_gram.gram_binaural", ""),
    ("natheear/tones-localization-binaural", "hear_gram.gram_binaural", "cartesian-regression"),
]


class StepFailed(Exception):
    """A command of the check ended with a non-zero exit code."""


class WorkNotEmpty(Exception):
    """The work folder holds files already."""


def step(command: list[str], log: Path, env: dict[str, str], cwd: Path) -> None:
    """Run ``command`` with its output in ``log``; raise :class:`StepFailed` if it fails."""
    with log.open("w") as sink:
        code = children.run(command, stdout=sink, stderr=sink, env=env, cwd=cwd)
    if code:
        raise StepFailed(f"`{' '.join(command)}` exited with {code}; its output: {log}")


def write_tasks(work: Path, env: dict[str, str]) -> None:
    """The SELD, localization and Nat-HEAR task folders, as ``natheear-tasks`` writes them."""
    tasks = [sys.executable, "-m", "natheear_tasks"]
    step([*tasks, "seld-synth", "toy", "--layout", "frames", "--files", "6", "--seconds", "10",
          "--sample-rate", str(RATE), "--classes", "alarm", "speech"],
         work / "seld-synth.log", env, work)  # fmt: skip
    step([*tasks, "seld", "toy", "seld", "--layout", "frames", "--sample-rates", str(RATE),
          "--classes", "alarm,speech", "--tasks", "seld", "localization"],
         work / "seld.log", env, work)  # fmt: skip
    hear = write_task(work / "hear", "tones", "scene", files_per_split=8, seconds=2.0)
    for command in ("convert", "localize"):
        step([*tasks, command, str(hear), "natheear", "--format", "binaural", "--bank-size", "6"],
             work / f"{command}.log", env, work)  # fmt: skip


def kit_scores(work: Path, task: str, module: str, localization: str, env: dict[str, str],
               grid: str) -> dict[str, float]:  # fmt: skip
    """Embed ``task`` with the kit's runner, train and score its probes; the test scores."""
    name = Path(task).name
    step([sys.executable, "-m", "heareval.embeddings.runner", module, "--tasks-dir",
          str(work / Path(task).parent), "--task", name, "--embeddings-dir", "embeddings",
          "--model-options", MODEL_OPTIONS], work / f"{name}.embed.log", env, work)  # fmt: skip
    (embedded,) = (work / "embeddings").glob(f"{module}-*/{name}")
    predict = [sys.executable, "-m", "heareval.predictions.runner", str(embedded),
               "--grid-points", "1", "--grid", grid]  # fmt: skip
    if localization:
        predict += ["--localization", localization]
    step(predict, work / f"{name}.predict.log", env, work)
    suffix = "-localization" if localization else ""
    test = json.loads((embedded / f"test.predicted-scores{suffix}.json").read_text())["test"]
    return {k: v for k, v in test.items() if k.startswith("test_")}


def check(kit: Path, work: Path, grid: str) -> None:
    """Write the tasks into ``work`` (empty or new), have the kit score them, print the
    scores; raises :class:`StepFailed` or :class:`WorkNotEmpty`."""
    if work.exists() and any(work.iterdir()):
        raise WorkNotEmpty(f"{work} is not empty; name a new folder")
    work.mkdir(parents=True, exist_ok=True)
    deps = work / "kit-deps"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NATHEEAR_CACHE": str(work / "cache"),
           "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",
           "PYTHONPATH": os.pathsep.join([str(kit), str(deps), str(ROOT)])}  # fmt: skip
    probe = [sys.executable, "-c", "import IPython"]
    if children.run(probe, env=env, stderr=subprocess.DEVNULL) != 0:
        step([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(deps),
              "ipython"], work / "pip.log", env, work)  # fmt: skip
    write_tasks(work, env)
    print(f"listen-eval-kit {kit}, grid {grid}, untrained hear_gram weights, {RATE} Hz")
    for task, module, localization in TASKS:
        scores = kit_scores(work, task, module, localization, env, grid)
        shown = ", ".join(f"{k.removeprefix('test_')} {v:.3f}" for k, v in scores.items())
        print(f"{task} ({module}{', ' + localization if localization else ''}): {shown}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kit", type=Path, help="a checkout of labhamlet/listen-eval-kit")
    parser.add_argument("work", type=Path, help="an empty or new folder for tasks and logs")
    parser.add_argument("--grid", default="faster", choices=["default", "fast", "faster"],
                        help="the kit's probe grid (default %(default)s)")  # fmt: skip
    args = parser.parse_args(argv)
    kit, work = args.kit.resolve(), args.work.resolve()
    if not (kit / "heareval" / "predictions" / "runner.py").is_file():
        print(f"error: {kit} is not a checkout of listen-eval-kit (no heareval/predictions/"
              "runner.py); get one with: git clone https://github.com/labhamlet/listen-eval-kit",
              file=sys.stderr)  # fmt: skip
        return 2
    children.handle_termination()
    try:
        with locks.hold(locks.beside(work), str(work), remove=True):
            check(kit, work, args.grid)
    except (WorkNotEmpty, locks.OutputInUse) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except StepFailed as failure:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except children.Terminated:
        return 143
    return 0


if __name__ == "__main__":
    sys.exit(main())

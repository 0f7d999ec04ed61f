"""Export a pretraining run's encoder as a hear_gram checkpoint folder.

    python -m training.export runs/gb exported/gram-binaural
    python -m training.export runs/gb exported/gb-100k --step 100000
    hear-validator hear_gram -m exported/gram-binaural
    python -m training.export runs/cat exported/cat-binaural     # CAT: the student
    python -m training.export runs/cat exported/cat-ema --teacher  # or its EMA teacher

The folder (``config.json`` + ``model.safetensors``, encoder only) is written through
:func:`hear_gram.checkpoint.save_checkpoint` and loads with ``hear_gram.load_model`` (use
the module of the run's variant: ``hear_gram.gram_ambisonics`` for GRAM-Ambisonics,
``hear_gram.cat_binaural`` for CAT-Binaural, ...).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hear_gram.checkpoint import load_state_strict, read_weights, save_checkpoint
from hear_gram.errors import CheckpointError
from hear_gram.variants import create_encoder, get_variant
from training import checkpointing
from training import config as configuration
from training.families import family_of

PREFIX = "encoder."
TEACHER_PREFIX = "teacher."


def find_checkpoint(run: Path, step: int | None) -> Path:
    """The run's latest checkpoint, or the one of ``step``.

    Raises:
        FileNotFoundError: no such run or checkpoint (the message lists what exists).
    """
    if not run.is_dir():
        raise FileNotFoundError(f"run folder {run} does not exist")
    if step is None:
        found = checkpointing.latest(run)
        if found is None:
            raise FileNotFoundError(f"{run} holds no checkpoint yet")
        return found
    path = checkpointing.checkpoint_dir(run) / checkpointing.step_name(step)
    if not (path / checkpointing.STATE).is_file():
        have = sorted(p.name for p in checkpointing.checkpoint_dir(run).glob("step-*"))
        raise FileNotFoundError(f"{run} has no checkpoint of step {step}; it has {have}")
    return path


def export(
    run: Path,
    out: Path,
    step: int | None = None,
    overwrite: bool = False,
    teacher: bool = False,
) -> Path:
    """Write the encoder of ``run``'s checkpoint to ``out`` (with ``teacher``, a CAT run's
    EMA teacher instead of its student); returns ``out``."""
    path = find_checkpoint(Path(run), step)
    state = checkpointing.read_state(path)
    cfg = configuration.from_dict(state["config"])
    args = family_of(cfg).encoder_args()
    weights = read_weights(path / checkpointing.WEIGHTS)
    prefix = TEACHER_PREFIX if teacher else PREFIX
    if teacher and not any(k.startswith(prefix) for k in weights):
        raise CheckpointError(f"{path} has no EMA teacher (only CAT runs have one)")
    encoder = create_encoder(get_variant(cfg.model.variant)["architecture"], args)
    encoder_weights = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
    load_state_strict(encoder, encoder_weights, f"{path} (encoder)")
    metadata = {
        "trained_with": "hear-gram training (python -m training.pretrain)",
        "run": str(run),
        "step": int(state["step"]),
        "weights": "EMA teacher" if teacher else "encoder",
        "training_config": state["config"],
    }
    return save_checkpoint(out, encoder, cfg.model.variant, args, metadata, overwrite=overwrite)


def main(argv: list[str] | None = None) -> int:
    """``python -m training.export RUN OUT``: export a run's encoder; the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m training.export",
        description="Export the encoder of a pretraining run as a hear_gram checkpoint folder.",
    )
    parser.add_argument("run", type=Path, help="run folder (--out of training.pretrain)")
    parser.add_argument("out", type=Path, help="checkpoint folder to write")
    parser.add_argument("--step", type=int, help="export this step's checkpoint (default: latest)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    parser.add_argument(
        "--teacher", action="store_true", help="CAT runs: export the EMA teacher, not the student"
    )
    args = parser.parse_args(argv)
    try:
        folder = export(args.run, args.out, args.step, args.overwrite, args.teacher)
    except (FileNotFoundError, FileExistsError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

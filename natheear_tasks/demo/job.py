"""``natheear-tasks demo`` (``make demo``): the whole pipeline on a fresh machine, offline.

Stages (each resumes or is skipped when its output is already there, so a second run only
redoes what is missing)::

    1 synthesize   OUT/hear/synth_{speech_commands,env_scenes,env_events}   (mono, 16 kHz)
    2 RIR banks    OUT/rirs/binaural-32k (also the training scenes), OUT/rirs/ambisonics-16k
    3 Nat-HEAR     OUT/tasks/: the three tasks binaural, speech commands as binaural and as
                   Ambisonics localization tasks
    4 pretrain     a small GRAM-Binaural with training.pretrain on the synthetic clips in
                   simulated rooms; exported to OUT/models/gram-trained; the same
                   architecture untrained (seeded initialisation) to OUT/models/gram-untrained
    5 evaluate     trained, untrained, the log-mel baseline and the released GRAM-Binaural
                   weights (when they can be downloaded) on every task of OUT/tasks;
                   s(m) with the log-mel baseline as baseline and the perfect score as best

and prints the results table (OUT/results/summary.md). ``training`` is not installed with
the package: the demo runs from a source checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from natheear_tasks.demo import synth
from natheear_tasks.evaluation import evaluate, report, scoring
from natheear_tasks.evaluation.evaluate import PACKAGE_ROOT, ModelSpec, Settings

RELEASED = "labhamlet/gramt-binaural"
RATE = synth.SAMPLE_RATE
TRAIN_RATE = 32000
VARIANT = "gram-binaural"
# A small GRAM-Binaural: ViT blocks of width 64 (0.2 M encoder parameters), trained on
# 2-s crops of the synthetic clips placed in simulated rooms with noise.
TRAINING = {
    "model": {
        "variant": VARIANT,
        "embed_dim": 64,
        "depth": 4,
        "num_heads": 4,
        "mlp_ratio": 2.0,
        "decoder_dim": 64,
        "decoder_depth": 2,
        "decoder_windows": [2, 5, 25, 0],
        "decoder_mlp_ratio": 2.0,
        "mask_ratio": 0.8,
    },
    "data": {"clip_seconds": 2.0, "loudness_dbfs": -14.0, "num_workers": 1},
    "scenes": {"snr_db": [5.0, 40.0], "clean_ratio": 0.25},
    "optim": {
        "lr": 1.0e-3,
        "min_lr": 1.0e-4,
        "warmup_steps": 50,
        "betas": [0.9, 0.95],
        "weight_decay": 0.01,
        "grad_clip": 5.0,
    },
    "train": {
        "batch_clips": 4,
        "crops_per_clip": 4,
        "accum_steps": 1,
        "seed": 0,
        "precision": "fp32",
        "compile": False,
        "device": "auto",
        "log_every": 25,
        "checkpoint_every": 100,
        "keep_checkpoints": 1,
        "tensorboard": False,
    },
}
NOISE_CLASSES = ("rain", "wind", "engine")
# (synthetic task, format, as a localization task). The binaural set is what the binaural
# GRAMs are made for; the Ambisonics localization task is a control: the binaural models
# and the log-mel baseline hear only its omnidirectional W channel.
NATHEEAR_TASKS = (
    ("speech_commands", "binaural", False),
    ("env_scenes", "binaural", False),
    ("env_events", "binaural", False),
    ("speech_commands", "binaural", True),
    ("speech_commands", "ambisonics", True),
)


class DemoError(RuntimeError):
    """A stage that failed; the message says which and where its log is."""


@contextmanager
def stage(number: int, title: str) -> Iterator[None]:
    """Print a stage's header, then its wall time when it ends."""
    print(f"\n== {number}/5 {title}", flush=True)
    started = time.time()
    yield
    print(f"   ({time.time() - started:.0f} s)", flush=True)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p
    )
    return env


def _python(args: list[str], what: str) -> None:
    code = subprocess.run([sys.executable, *args], env=_env(), cwd=PACKAGE_ROOT).returncode
    if code:
        raise DemoError(f"{what} failed (exit {code}); see its output above")


def make_banks(out: Path, workers: int, counts: dict[str, int]) -> str:
    """Simulate the binaural (32 kHz) and Ambisonics (16 kHz) RIR banks (resumable)."""
    from natheear_tasks.simulation.hrtf import KEMAR, load_hrtf
    from natheear_tasks.simulation.rirs import build_bank

    binaural = build_bank(
        out / "binaural-32k", "binaural", TRAIN_RATE, counts["binaural"], seed=0,
        hrtf=load_hrtf(KEMAR), workers=workers,
    )  # fmt: skip
    ambisonics = build_bank(
        out / "ambisonics-16k", "ambisonics", RATE, counts["ambisonics"], seed=0, workers=workers
    )
    return f"{len(binaural)} binaural and {len(ambisonics)} Ambisonics scenes"


def make_tasks(hear: Path, banks: Path, out: Path, workers: int) -> str:
    """Convert the synthetic tasks into the Nat-HEAR tasks of :data:`NATHEEAR_TASKS`."""
    from natheear_tasks.tasks.convert import Options, prepare, run

    bank_of = {"binaural": banks / "binaural-32k", "ambisonics": banks / "ambisonics-16k"}
    made = []
    for source, fmt, localization in NATHEEAR_TASKS:
        options = Options(
            format=fmt, workers=workers, rirs=str(bank_of[fmt]), localization=localization
        )
        summary = run(prepare(hear / f"synth_{source}", out, options))
        if not summary.complete:
            raise DemoError(f"conversion of synth_{source} to {fmt} did not complete")
        made.append(summary.task.name)
    return f"{len(made)} tasks in {out}"


def _training_config(run_dir: Path, clips: Path, noise: Path, bank: Path, steps: int) -> Path:
    config = json.loads(json.dumps(TRAINING))
    config["data"]["train"] = str(clips)
    config["scenes"]["rirs"] = str(bank)
    config["scenes"]["noise"] = str(noise)
    config["train"]["steps"] = steps
    path = run_dir.parent / "demo-training.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
    return path


def _manifest(path: Path, files: list[Path]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{f.resolve()}\n" for f in files))
    return path


def pretrain(out: Path, hear: Path, bank: Path, steps: int) -> str:
    """Train the small GRAM, export it, and write the untrained twin (resumable)."""
    trained, untrained = out / "models" / "gram-trained", out / "models" / "gram-untrained"
    if not (PACKAGE_ROOT / "training" / "pretrain.py").is_file():
        raise DemoError(
            f"the demo trains with the `training` package of the source checkout, which is not "
            f"beside {PACKAGE_ROOT / 'natheear_tasks'}; run it from a checkout (`make demo`)"
        )
    if not trained.is_dir():
        run_dir = out / "train" / "run"
        train_clips = sorted(hear.glob(f"synth_*/{RATE}/train/*.wav"))
        noise = [c for c in train_clips if c.name.split("_")[0] in NOISE_CLASSES]
        clips = _manifest(out / "train" / "clips.txt", train_clips)
        noises = _manifest(out / "train" / "noise.txt", noise)
        config = _training_config(run_dir, clips, noises, bank, steps)
        resume = ["--resume"] if run_dir.exists() else []
        _python(
            ["-m", "training.pretrain", "--config", str(config), "--out", str(run_dir), *resume],
            "pretraining",
        )
        _python(["-m", "training.export", str(run_dir), str(trained)], "export")
    if not untrained.is_dir():
        write_untrained(trained, untrained)
    return f"models in {out / 'models'}"


def write_untrained(trained: Path, out: Path) -> Path:
    """The trained model's architecture with its seeded random initialisation."""
    from hear_gram.checkpoint import save_checkpoint
    from hear_gram.variants import create_encoder

    config = json.loads((trained / "config.json").read_text())
    args = config["encoder"]
    encoder = create_encoder(config["architecture"], args, seed=0)
    metadata = {
        "weights": "untrained: seeded random initialisation (seed 0)",
        "twin_of": str(trained),
    }
    return save_checkpoint(out, encoder, config["variant"], args, metadata)


def models(out: Path, released: str | None) -> list[ModelSpec]:
    """The compared models; the released weights are optional (offline machines)."""
    options = {"sample_rate": RATE}
    specs = [
        ModelSpec("gram-trained", "hear_gram", str(out / "models" / "gram-trained"), options),
        ModelSpec("gram-untrained", "hear_gram", str(out / "models" / "gram-untrained"), options),
        ModelSpec("logmel", "natheear_tasks.baselines.logmel", None, options),
    ]
    if released:
        specs.append(ModelSpec("gram-released", "hear_gram", released, options, optional=True))
    return specs


def run_demo(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    hear, banks, tasks = out / "hear", out / "rirs", out / "tasks"
    started = time.time()
    with stage(1, "synthesize HEAR tasks (espeak-ng, flite, sox, ALSA recordings)"):
        made = synth.synthesize(hear, scale=args.scale)
        print(f"   {len(made)} tasks in {hear}")
    with stage(2, "simulate RIR banks"):
        counts = {"binaural": args.bank_size, "ambisonics": args.bank_size}
        print(f"   {make_banks(banks, args.workers, counts)} in {banks}")
    with stage(3, "Nat-HEAR tasks (binaural; binaural and Ambisonics localization)"):
        print(f"   {make_tasks(hear, banks, tasks, args.workers)}")
    with stage(4, f"pretrain a small GRAM-Binaural ({args.train_steps} steps)"):
        print(f"   {pretrain(out, hear, banks / 'binaural-32k', args.train_steps)}")
    with stage(5, "evaluate (heareval embeddings and predictions, localization probe)"):
        references = out / "references.json"
        references.write_text(json.dumps({"baseline": "logmel", "best": "perfect"}) + "\n")
        summary, results = evaluate.evaluate(
            models(out, None if args.no_released else args.released),
            evaluate.find_tasks(tasks),
            out / "results",
            Settings(args.grid, args.grid_points),
            scoring.load_references(references),
        )
    print(f"\n{report.markdown_table(summary)}")
    print(
        f"total {(time.time() - started) / 60:.1f} min; table, JSON and plots in {out / 'results'}"
    )
    failed = [r.spec.label for r in results if r.status == "failed"]
    if failed:
        print(f"error: evaluation failed for {failed}", file=sys.stderr)
        return 1
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo",
        help="the main job end to end on synthetic tasks (make demo)",
        description="The whole pipeline, offline: synthesizes HEAR tasks, converts them to "
        "Nat-HEAR, pretrains a small GRAM and evaluates it side by side with its untrained "
        "twin, a log-mel baseline and the released weights (when downloadable); prints the "
        "results table. Stages whose output exists are skipped or resumed.",
    )
    parser.add_argument("--out", default="work/demo", help="work folder (default work/demo)")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="task size factor (default %(default)s)"
    )
    parser.add_argument(
        "--bank-size", type=int, default=96, help="scenes per RIR bank (default %(default)s)"
    )
    parser.add_argument(
        "--train-steps", type=int, default=1200, help="pretraining steps (default %(default)s)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="processes for RIRs and conversion (default %(default)s)",
    )
    parser.add_argument(
        "--grid",
        choices=evaluate.GRID_NAMES,
        default="fast",
        help="probe grid (default %(default)s)",
    )
    parser.add_argument(
        "--grid-points", type=int, default=2, help="probe grid points (default %(default)s)"
    )
    parser.add_argument(
        "--released", default=RELEASED, help="released weights (default %(default)s)"
    )
    parser.add_argument("--no-released", action="store_true", help="skip the released weights")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the demo: exit 0 ok, 1 a stage failed, 2 bad options or missing tools."""
    if not 0 < args.scale <= 20 or args.bank_size < 1 or args.train_steps < 1:
        print(
            "error: --scale must be in (0, 20], --bank-size and --train-steps positive",
            file=sys.stderr,
        )
        return 2
    try:
        return run_demo(args)
    except synth.MissingTools as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (DemoError, synth.SynthError, evaluate.UsageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

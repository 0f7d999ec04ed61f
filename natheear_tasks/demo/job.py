"""``natheear-tasks demo`` (``make demo``): the whole pipeline on a fresh machine, offline.

Stages (each resumes or is skipped when its output is already there, so a second run only
redoes what is missing)::

    1 synthesize   OUT/hear/synth_{speech_commands,env_scenes,env_events}   (mono, 16 kHz)
    2 RIR banks    OUT/rirs/binaural-32k-{train,valid,test}: each split's clips go into
                   rooms, positions and directions of their own (the training bank is also
                   the pretraining scenes)
    3 Nat-HEAR     OUT/tasks/: the three tasks binaural, speech commands and the
                   environmental scenes as binaural localization tasks
    4 pretrain     a small GRAM-Binaural (training/configs/demo.yaml) with training.pretrain
                   on the synthetic training clips in the training rooms; exported to
                   OUT/models/gram-trained, its checkpoints along the way to
                   OUT/models/curve/, and its initial weights (the untrained twin) to
                   OUT/models/gram-untrained
    5 evaluate     trained, untrained, the log-mel baseline and the released GRAM-Binaural
                   weights (when they can be downloaded) on every task of OUT/tasks;
                   s(m) with the log-mel baseline as baseline and the perfect score as
                   best; the checkpoints on the localization tasks, drawn as the learning
                   curve OUT/results/learning_curve.png

and prints the results table (OUT/results/summary.md). ``training`` is not installed with
the package: the demo runs from a source checkout (it refuses at once elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from natheear_tasks import children
from natheear_tasks.demo import curve, synth
from natheear_tasks.evaluation import evaluate, report, scoring
from natheear_tasks.evaluation.discovery import TaskInfo, find_tasks
from natheear_tasks.evaluation.errors import UsageError
from natheear_tasks.evaluation.models import ModelSpec, Settings
from natheear_tasks.evaluation.runs import PACKAGE_ROOT
from natheear_tasks.exits import run_command
from natheear_tasks.formats import published
from natheear_tasks.paths import name_problem

RELEASED = "labhamlet/gramt-binaural"
RATE = synth.SAMPLE_RATE
BANK_RATE = 32000  # GRAM's rate: the training bank is also the pretraining scenes
CONFIG = Path("training") / "configs" / "demo.yaml"  # in the checkout, PACKAGE_ROOT
CURVE_POINTS = 2  # checkpoints on the learning curve besides step 0 (the time budget)
NOISE_CLASSES = ("rain", "wind", "engine")
# (synthetic task, format, as a localization task): the binaural models' home ground.
NATHEEAR_TASKS = (
    ("speech_commands", "binaural", False),
    ("env_scenes", "binaural", False),
    ("env_events", "binaural", False),
    ("speech_commands", "binaural", True),
    ("env_scenes", "binaural", True),
)
# Lighter than natheear's default simulation, for time: the room tails are ray traced with
# 2000 rays and the RIRs end after 1 s (by then even the most reverberant rooms, RT60
# 1.5 s, have decayed by 40 dB), which halves the convolutions of conversion and
# pretraining.
SIMULATION = {"n_rays": 2000, "max_seconds": 1.0}


class DemoError(RuntimeError):
    """A stage that failed; the message says which and where its log is."""


class NotACheckout(DemoError):
    """The ``training`` package is not beside ``natheear_tasks`` (an installed package)."""


def check_checkout(root: Path) -> None:
    """Raise :class:`NotACheckout` unless ``root`` is a source checkout with ``training/``."""
    if not (root / "training" / "pretrain.py").is_file():
        raise NotACheckout(
            f"the demo trains with the `training` package of the source checkout, which is not "
            f"beside {root / 'natheear_tasks'}; run it from a checkout (`make demo`)"
        )


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
    code = children.run([sys.executable, *args], env=_env(), cwd=PACKAGE_ROOT)
    if code:
        raise DemoError(f"{what} failed (exit {code}); see its output above")


def bank_path(banks: Path, fmt: str, split: str) -> Path:
    """The RIR bank of ``split``'s scenes in ``fmt``."""
    return banks / f"{fmt}-{BANK_RATE // 1000}k-{split}"


def make_banks(out: Path, workers: int, sizes: dict[str, int]) -> str:
    """Simulate one RIR bank per format and split (resumable): each split's clips are placed
    in rooms, positions and directions of its own, so that no probe can recognise a test
    scene from training."""
    from natheear_tasks.simulation.hrtf import KEMAR, load_hrtf
    from natheear_tasks.simulation.rirs import SimulationSettings, build_bank

    hrtf = load_hrtf(KEMAR)
    made = []
    for fmt in sorted({fmt for _, fmt, _ in NATHEEAR_TASKS}):
        counts = []
        for seed, split in enumerate(synth.SPLITS):
            bank = build_bank(
                bank_path(out, fmt, split), fmt, BANK_RATE, sizes[split], seed=seed,
                hrtf=hrtf if fmt == "binaural" else None, settings=SimulationSettings(**SIMULATION),
                workers=workers,
            )  # fmt: skip
            counts.append(f"{len(bank)} {split}")
        made.append(f"{fmt}: " + ", ".join(counts))
    return "; ".join(made) + " scenes"


def split_view(source: Path, split: str, out: Path) -> Path:
    """``source`` (a HEAR task) cut down to one split, with hard links to its wavs."""
    from natheear_tasks.tasks.taskdir import METADATA, VOCABULARY, atomic_write_json

    metadata = json.loads((source / METADATA).read_text())
    metadata["splits"] = [split]
    labels = json.loads((source / f"{split}.json").read_text())
    bad = {name: why for name in labels if (why := name_problem(name, single=True))}
    if bad:
        raise DemoError(f"{source / f'{split}.json'} names files outside {split}/: {bad}")
    if out.exists():
        shutil.rmtree(out)
    folder = out / str(RATE) / split
    folder.mkdir(parents=True)
    for name in labels:
        os.link(source / str(RATE) / split / name, folder / name)
    atomic_write_json(out / f"{split}.json", labels)
    shutil.copyfile(source / VOCABULARY, out / VOCABULARY)
    atomic_write_json(out / METADATA, metadata, indent=2)
    return out


def convert_by_split(
    source: Path, fmt: str, localization: bool, banks: Path, out: Path, workers: int
) -> Path:
    """Convert ``source`` split by split, each through its own RIR bank, into one task."""
    from natheear_tasks.tasks.convert import SCENES_FILE, Options, prepare, run
    from natheear_tasks.tasks.taskdir import METADATA, VOCABULARY, atomic_write_json

    name = f"{source.name}-localization-{fmt}" if localization else f"{source.name}-{fmt}"
    final = out / name
    if final.exists():
        return final
    work = out.parent / "parts" / name
    parts = {}
    for split in synth.SPLITS:
        options = Options(
            format=fmt, workers=workers, rirs=str(bank_path(banks, fmt, split)),
            localization=localization, name=name,
        )  # fmt: skip
        view = split_view(source, split, work / "views" / split)
        summary = run(prepare(view, work / split, options))
        if not summary.complete:
            raise DemoError(f"conversion of {source.name} ({split}) to {fmt} did not complete")
        parts[split] = summary.task
    partial = out / f".{name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    metadata = json.loads((parts["test"] / METADATA).read_text())
    metadata["splits"] = list(synth.SPLITS)
    metadata["natheear"]["rir_bank"] = {
        split: json.loads((part / METADATA).read_text())["natheear"]["rir_bank"]
        for split, part in parts.items()
    }
    metadata["natheear"]["scenes"] = "disjoint: each split through its own RIR bank"
    scenes = b""
    for split, part in parts.items():
        shutil.move(part / str(RATE) / split, partial / str(RATE) / split)
        shutil.copyfile(part / f"{split}.json", partial / f"{split}.json")
        scenes += (part / SCENES_FILE).read_bytes()
    (partial / SCENES_FILE).write_bytes(scenes)
    shutil.copyfile(parts["test"] / VOCABULARY, partial / VOCABULARY)
    atomic_write_json(partial / METADATA, metadata, indent=2)
    os.rename(partial, final)
    shutil.rmtree(work)
    return final


def make_tasks(hear: Path, banks: Path, out: Path, workers: int) -> str:
    """Convert the synthetic tasks into the Nat-HEAR tasks of :data:`NATHEEAR_TASKS`."""
    made = [
        convert_by_split(hear / f"synth_{source}", fmt, localization, banks, out, workers)
        for source, fmt, localization in NATHEEAR_TASKS
    ]
    return f"{len(made)} tasks in {out}"


def _manifest(path: Path, files: list[Path]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{f.resolve()}\n" for f in files))
    return path


def curve_steps(steps: int) -> tuple[int, list[int]]:
    """The checkpoint interval of a run of ``steps`` and the steps it keeps for the
    learning curve (every interval, and the last step)."""
    every = max(1, steps // CURVE_POINTS)
    return every, sorted({*range(every, steps, every), steps})


def pretrain(out: Path, hear: Path, bank: Path, steps: int) -> str:
    """Train the small GRAM, export it and its checkpoints, and write the untrained twin
    (resumable)."""
    models_dir = out / "models"
    trained, run_dir = models_dir / "gram-trained", out / "train" / "run"
    every, kept = curve_steps(steps)
    if not trained.is_dir():
        train_clips = sorted(hear.glob(f"synth_*/{RATE}/train/*.wav"))
        noise = [c for c in train_clips if c.name.split("_")[0] in NOISE_CLASSES]
        settings = {
            "data.train": str(_manifest(out / "train" / "clips.txt", train_clips)),
            "scenes.noise": str(_manifest(out / "train" / "noise.txt", noise)),
            "scenes.rirs": str(bank),
            "train.steps": steps,
            "train.checkpoint_every": every,
        }
        command = ["-m", "training.pretrain", "--config", str(PACKAGE_ROOT / CONFIG)]
        command += ["--out", str(run_dir), *(["--resume"] if run_dir.exists() else [])]
        for key, value in settings.items():
            command += ["--set", f"{key}={json.dumps(value)}"]  # JSON is YAML
        _python(command, "pretraining")
    for step in kept[:-1]:
        folder = curve_model(out, step)
        if not folder.is_dir():
            _python(["-m", "training.export", str(run_dir), str(folder), "--step", str(step)],
                    f"export of step {step}")  # fmt: skip
    if not trained.is_dir():
        _python(["-m", "training.export", str(run_dir), str(trained)], "export")
    if not (models_dir / "gram-untrained").is_dir():
        write_untrained(trained, models_dir / "gram-untrained")
    return f"models in {models_dir}; learning-curve checkpoints at steps {kept[:-1]}"


def curve_model(out: Path, step: int) -> Path:
    """Where the checkpoint of ``step`` is exported for the learning curve."""
    return out / "models" / "curve" / f"step-{step:06d}"


def write_untrained(trained: Path, out: Path) -> Path:
    """The trained model's untrained twin: its architecture with the initial weights of its
    pretraining run (the same seeded initialisation)."""
    from hear_gram.checkpoint import save_checkpoint
    from hear_gram.variants import create_encoder

    config = json.loads((trained / "config.json").read_text())
    args = config["encoder"]
    seed = config["metadata"]["training_config"]["train"]["seed"]
    encoder = create_encoder(config["architecture"], args, seed=seed)
    metadata = {
        "weights": f"untrained: the initial weights of the pretraining run (seed {seed})",
        "twin_of": str(trained),
    }
    return save_checkpoint(out, encoder, config["variant"], args, metadata)


def variant_module(model: Path) -> str:
    """The HEAR module of a hear_gram checkpoint folder's variant (``hear_gram.<variant>``)."""
    variant = json.loads((model / "config.json").read_text())["variant"]
    return "hear_gram." + variant.replace("-", "_")


def models(out: Path, released: str | None) -> list[ModelSpec]:
    """The compared models; the released weights are optional (offline machines)."""
    options = {"sample_rate": RATE}
    trained, untrained = out / "models" / "gram-trained", out / "models" / "gram-untrained"
    specs = [
        ModelSpec("gram-trained", variant_module(trained), str(trained), options),
        ModelSpec("gram-untrained", variant_module(untrained), str(untrained), options),
        ModelSpec("logmel", "natheear_tasks.baselines.logmel", None, options),
    ]
    if released:
        specs.append(
            ModelSpec("gram-released", "hear_gram.gram_binaural", released, options, optional=True)
        )
    return specs


def constant_guess_errors(task: TaskInfo) -> list[float]:
    """Per-clip DoA errors of the best constant guess: the mean training direction."""
    import torch

    from natheear_tasks.evaluation import doa_probe

    def directions(split: str) -> torch.Tensor:
        labels = json.loads((task.path / f"{split}.json").read_text())
        return torch.tensor([published.direction_of(labels[n]) for n in sorted(labels)])

    test = directions("test")
    guess = directions("train").mean(dim=0, keepdim=True).expand_as(test)
    return doa_probe.doa_error_deg(guess, test).tolist()


def learning_curve(
    out: Path,
    steps: int,
    tasks: list[TaskInfo],
    settings: Settings,
    main: list,
    workers: int,
) -> Path:
    """Evaluate the kept checkpoints on the localization tasks and draw the learning curve
    (step 0: the untrained twin, the last step: the trained model)."""
    localization = [t for t in tasks if t.localization]
    options = {"sample_rate": RATE}
    at_step = {0: "gram-untrained", steps: "gram-trained"}
    specs = []
    for step in curve_steps(steps)[1][:-1]:
        folder = curve_model(out, step)
        at_step[step] = f"gram-step-{step}"
        specs.append(ModelSpec(at_step[step], variant_module(folder), str(folder), options))
    _, results = evaluate.evaluate(
        specs, localization, out / "results" / "curve", settings, jobs=workers
    )
    failed = [r.spec.label for r in results if r.status != "ok"]
    if failed:
        raise DemoError(f"the learning-curve evaluation failed for {failed}")
    errors = {r.spec.label: r.errors for r in [*main, *results]}
    curves = {
        t.name: {step: errors[label][t.name] for step, label in sorted(at_step.items())}
        for t in localization
    }
    references = {
        t.name: {
            "log-mel (mono)": errors["logmel"][t.name],
            "best constant direction": constant_guess_errors(t),
        }
        for t in localization
    }
    return curve.plot(curves, references, out / "results" / "learning_curve.png")


def run_demo(args: argparse.Namespace) -> int:
    """Run (or resume) the main job's five stages into ``args.out``; prints the results table."""
    check_checkout(PACKAGE_ROOT)
    out = Path(args.out).resolve()
    hear, banks, tasks = out / "hear", out / "rirs", out / "tasks"
    started = time.time()
    with stage(1, "synthesize HEAR tasks (espeak-ng, flite, sox, ALSA recordings)"):
        made = synth.synthesize(hear, scale=args.scale)
        print(f"   {len(made)} tasks in {hear}")
    with stage(2, "simulate RIR banks (one per split)"):
        sizes = {"train": args.bank_size, "valid": max(1, args.bank_size // 2)}
        sizes["test"] = args.bank_size
        print(f"   {make_banks(banks, args.workers, sizes)} in {banks}")
    with stage(3, "Nat-HEAR tasks (binaural; binaural localization)"):
        print(f"   {make_tasks(hear, banks, tasks, args.workers)}")
    with stage(4, f"pretrain a small GRAM-Binaural ({args.train_steps} steps)"):
        print(f"   {pretrain(out, hear, bank_path(banks, 'binaural', 'train'), args.train_steps)}")
    with stage(5, "evaluate (heareval embeddings and predictions, localization probe)"):
        references = out / "references.json"
        references.write_text(json.dumps({"baseline": "logmel", "best": "perfect"}) + "\n")
        settings = Settings(args.grid, args.grid_points)
        found = find_tasks(tasks)
        summary, results = evaluate.evaluate(
            models(out, None if args.no_released else args.released),
            found,
            out / "results",
            settings,
            scoring.load_references(references),
            jobs=args.workers,
        )
        failed = [r.spec.label for r in results if r.status == "failed"]
        if not failed:
            plot = learning_curve(out, args.train_steps, found, settings, results, args.workers)
            print(f"   {plot}")
    print(f"\n{report.markdown_table(summary)}")
    print(
        f"total {(time.time() - started) / 60:.1f} min; table, JSON and plots in {out / 'results'}"
    )
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
        "--bank-size",
        type=int,
        default=200,
        help="scenes of the training and the test RIR banks; the validation bank has half "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--train-steps", type=int, default=2000, help="pretraining steps (default %(default)s)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="processes for RIRs, conversion and evaluation (default %(default)s)",
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
    """Run the demo: exit 0 ok, 1 a stage failed, 2 bad options, missing tools or no
    checkout."""
    if not 0 < args.scale <= 20 or min(args.bank_size, args.train_steps, args.workers) < 1:
        print(
            "error: --scale must be in (0, 20], --bank-size, --train-steps and --workers positive",
            file=sys.stderr,
        )
        return 2
    failures = (DemoError, synth.SynthError, UsageError)
    try:
        return run_command(lambda: run_demo(args), (synth.MissingTools, NotACheckout))
    except failures as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

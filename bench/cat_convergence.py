"""CAT convergence with and without representation regularization (not a test; prints its
figures and writes a PNG).

At toy scale, on synthetic naturalistic scenes, on this machine's CPU:

1. Data: synthetic clips and coloured noise (``training.synthetic``), and two binaural RIR
   banks simulated by ``natheear_tasks`` (KEMAR HRTFs in random shoebox rooms): one mixes
   the pretraining scenes, the other the probe task.
2. A small Nat-HEAR task: ``natheear_tasks.demo.synth``'s speech commands (ten words spoken by
   espeak-ng and flite voices, 1-s clips), each placed in a scene of the probe bank with
   coloured noise at 5-40 dB SNR through ``natheear_tasks.simulation.mix.mix_scene`` (the code that
   converts HEAR tasks), labelled with its word and its source direction. The probes train
   on the task's train speakers in the first three quarters of the bank's scenes and are
   tested on its valid and test speakers in the last quarter (voices, rooms and directions
   never seen in training).
3. Pretraining through ``training.pretrain`` with the same data, batch and steps for each:
   GRAM-Binaural; CAT-Binaural; CAT-Binaural regularized toward that trained GRAM
   (``--rr-targets hear_gram.gram_binaural:<its export>``). The Transformers have the same
   width, depth and heads; CAT adds its convolutional stem.
4. At step 0 (the seeded initial encoder) and at every checkpoint, the frozen encoder embeds
   the probe task through hear_gram's 2-s chunk aggregation, and our own linear probes
   (scikit-learn; not the evaluation package's MLP probes, which search a hyper-parameter
   grid per checkpoint) score it: logistic regression on the mean of the step embeddings
   (the scene embedding) -> top-1 accuracy; ridge regression from the mean of the chunks'
   CLS tokens to the unit direction vector -> mean direction-of-arrival error in degrees.

    python bench/cat_convergence.py [--steps 600] [--eval-every 100] [--work DIR]
                                    [--png results/cat_convergence.png]

Prints one table (model, step, accuracy, DoA error, loss) and the wall time of each phase.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hear_gram import features as feat  # noqa: E402
from hear_gram.checkpoint import load_encoder  # noqa: E402
from hear_gram.chunking import iter_chunks  # noqa: E402
from natheear_tasks.demo import synth  # noqa: E402
from natheear_tasks.simulation.hrtf import load_kemar  # noqa: E402
from natheear_tasks.simulation.mix import mix_scene  # noqa: E402
from natheear_tasks.simulation.rirbank import collate_scenes, direction_vector  # noqa: E402
from natheear_tasks.simulation.rirs import SimulationSettings, build_bank  # noqa: E402
from training import config as configuration  # noqa: E402
from training import pretrain  # noqa: E402
from training.export import export  # noqa: E402
from training.families import family_of  # noqa: E402
from training.synthetic import coloured_noise, write_noise, write_shards  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SNR_DB = (5.0, 40.0)
# Shorter RIRs and fewer rays than natheear's defaults: the bench simulates ~90 scenes.
SIMULATION = SimulationSettings(n_rays=2000, max_seconds=1.0)


def model_overrides(width: int, depth: int, heads: int) -> list[str]:
    """The same Transformer for every model, and the toy decoders."""
    return [
        f"model.embed_dim={width}",
        f"model.depth={depth}",
        f"model.num_heads={heads}",
        "model.mlp_ratio=2.0",
        f"model.decoder_dim={width}",
        "model.decoder_depth=2",
        "model.decoder_windows=[2,5,25,0]",
        "cat.stem_dims=[16,32]",
        "cat.stem_depths=[1,1]",
        f"cat.decoder_dim={width}",
        "cat.decoder_depth=2",
        "cat.decoder_groups=8",
    ]


def run_overrides(work: Path, args: argparse.Namespace) -> list[str]:
    """Data, scenes and loop settings shared by every run."""
    return [
        f"data.train={work / 'clips'}",
        "data.clip_seconds=4.0",
        "data.num_workers=0",
        f"scenes.rirs={work / 'rirs-train'}",
        f"scenes.noise={work / 'noise'}",
        "scenes.clean_ratio=0.1",
        "optim.lr=1e-3",
        "optim.min_lr=1e-4",
        "optim.warmup_steps=20",
        f"train.steps={args.steps}",
        f"train.batch_clips={args.batch_clips}",
        f"train.crops_per_clip={args.crops}",
        f"train.checkpoint_every={args.eval_every}",
        "train.keep_checkpoints=0",
        f"train.log_every={args.eval_every}",
        "train.tensorboard=false",
        f"train.seed={args.seed}",
        "cat.ema_start=0.99",
        "cat.ema_end=0.999",
        f"cat.ema_anneal_steps={args.steps}",
    ]


def probe_task(bank, seed: int) -> dict[str, np.ndarray]:
    """The probe task (see the module docstring): each file's 2-s feature chunk
    ``chunks (N, 2, 128, 200)`` and valid frames ``valid (N,)``, ``label (N,)``,
    ``direction (N, 3)``, ``test (N,)`` bool."""
    rng = np.random.default_rng(seed)
    task = synth.speech_commands(rng)
    first_test_scene = 3 * len(bank) // 4
    dry, labels, scenes, test = [], [], [], []
    for split, files in task.splits.items():
        for audio, (word,) in files.values():
            wave = torch.from_numpy(audio).float()
            dry.append(AF.resample(wave, synth.SAMPLE_RATE, feat.SAMPLE_RATE))
            labels.append(task.vocabulary.index(word))
            held_out = split != "train"
            low, high = (first_test_scene, len(bank)) if held_out else (0, first_test_scene)
            scenes.append(int(rng.integers(low, high)))
            test.append(held_out)
    length = max(d.shape[0] for d in dry)
    dry = torch.stack([torch.nn.functional.pad(d, (0, length - d.shape[0])) for d in dry])
    source, noise_rirs, mask = collate_scenes([bank[s] for s in scenes])
    noise = np.stack([coloured_noise(rng, length, float(rng.uniform(0, 2))) for _ in labels])
    waves = mix_scene(
        dry,
        torch.from_numpy(source),
        torch.from_numpy(noise),
        torch.from_numpy(noise_rirs),
        torch.from_numpy(mask),
        torch.from_numpy(rng.uniform(*SNR_DB, size=len(labels))).float(),
        feat.SAMPLE_RATE,
    )
    directions = [
        direction_vector(bank[s].source_azimuth, bank[s].source_elevation) for s in scenes
    ]
    chunks, valid = chunk_inputs(waves.numpy())
    return {
        "chunks": chunks,
        "valid": valid,
        "label": np.array(labels),
        "direction": np.stack(directions),
        "test": np.array(test),
    }


def chunk_inputs(waves: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Each file's normalised 2-s chunk and valid frames, as the HEAR API cuts them (the
    probe files are shorter than 2 s, so one chunk each; computed once for every model)."""
    chunks, valid = [], []
    window, fb = feat.analysis_window(), feat.mel_filterbank()
    for wave in map(torch.from_numpy, waves):
        read = lambda start, stop, wave=wave: wave[:, start:stop]  # noqa: E731
        ((chunk, frames),) = iter_chunks(read, wave.shape[-1], "binaural", window, fb, 200)
        chunks.append(chunk)
        valid.append(frames)
    return torch.cat(chunks), torch.cat(valid)


def embed(encoder: torch.nn.Module, chunks: torch.Tensor, valid: torch.Tensor):
    """Scene embeddings (mean of the valid steps) ``(N, E)`` and CLS tokens ``(N, D)``."""
    steps_kept = (valid + encoder.frames_per_step - 1) // encoder.frames_per_step
    means, tokens = [], []
    encoder.eval()
    with torch.inference_mode():
        for start in range(0, len(chunks), 64):
            kept = steps_kept[start : start + 64]
            cls, steps = encoder(chunks[start : start + 64], kept)
            mask = torch.arange(steps.shape[1])[None, :] < kept[:, None]
            means.append((steps * mask[..., None]).sum(dim=1) / kept[:, None])
            tokens.append(cls)
    return torch.cat(means).numpy(), torch.cat(tokens).numpy()


def probe_scores(encoder: torch.nn.Module, task: dict) -> tuple[float, float]:
    """``(top-1 accuracy in %, mean DoA error in degrees)`` of linear probes on the test half."""
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    mean, cls = embed(encoder, task["chunks"], task["valid"])
    train, test = ~task["test"], task["test"]
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
    classifier.fit(mean[train], task["label"][train])
    accuracy = 100.0 * float((classifier.predict(mean[test]) == task["label"][test]).mean())
    regressor = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))
    regressor.fit(cls[train], task["direction"][train])
    predicted = regressor.predict(cls[test])
    predicted /= np.linalg.norm(predicted, axis=1, keepdims=True).clip(min=1e-9)
    cosine = (predicted * task["direction"][test]).sum(axis=1).clip(-1.0, 1.0)
    return accuracy, float(np.degrees(np.arccos(cosine)).mean())


def initial_encoder(cfg: configuration.Config) -> torch.nn.Module:
    """The encoder a run starts from (the loop seeds with ``train.seed`` before building)."""
    cfg = configuration.from_dict(configuration.to_dict(cfg))
    cfg.cat.rr_targets = None
    torch.manual_seed(cfg.train.seed)
    return family_of(cfg).build(torch.device("cpu"), Path(), []).encoder


def train_and_probe(
    name: str, cfg: configuration.Config, run: Path, task: dict, eval_every: int
) -> list[dict]:
    """Pretrain, then probe step 0 and every checkpoint; returns one row per step."""
    start = time.perf_counter()
    pretrain.train(cfg, run)
    trained = time.perf_counter() - start
    losses = {
        m["step"]: m["loss"]
        for m in map(json.loads, (run / pretrain.METRICS).read_text().splitlines())
    }
    rows = []
    accuracy, doa = probe_scores(initial_encoder(cfg), task)
    rows.append({"model": name, "step": 0, "accuracy": accuracy, "doa": doa, "loss": None})
    for step in range(eval_every, cfg.train.steps + 1, eval_every):
        folder = export(run, run / "exports" / f"step-{step}", step=step)
        encoder, _ = load_encoder(str(folder), cfg.model.variant)
        accuracy, doa = probe_scores(encoder, task)
        row = {"model": name, "step": step, "accuracy": accuracy, "doa": doa}
        rows.append({**row, "loss": losses.get(step)})
    probed = time.perf_counter() - start - trained
    print(f"{name}: pretraining {trained:.0f} s, probes {probed:.0f} s", flush=True)
    return rows


def plot(rows: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        steps = [r["step"] for r in mine]
        axes[0].plot(steps, [r["accuracy"] for r in mine], marker="o", label=name)
        axes[1].plot(steps, [r["doa"] for r in mine], marker="o", label=name)
    axes[0].set(xlabel="pretraining step", ylabel="top-1 accuracy (%)", title="speech commands")
    axes[1].set(xlabel="pretraining step", ylabel="mean DoA error (deg)", title="localization")
    axes[0].legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".{png.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(png)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600, help="pretraining steps per model")
    parser.add_argument("--eval-every", type=int, default=100, help="probe every N steps")
    parser.add_argument("--batch-clips", type=int, default=2, help="4-s clips per step")
    parser.add_argument("--crops", type=int, default=4, help="2-s crops per clip")
    parser.add_argument("--width", type=int, default=64, help="Transformer width")
    parser.add_argument("--depth", type=int, default=2, help="Transformer depth")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--clips", type=int, default=64, help="pretraining clips")
    parser.add_argument("--train-scenes", type=int, default=24, help="pretraining RIR scenes")
    parser.add_argument("--probe-scenes", type=int, default=64, help="probe task RIR scenes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--png", type=Path, default=ROOT / "results" / "cat_convergence.png")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.eval_every < 1 or args.steps % args.eval_every:
        print("error: --steps must be a positive multiple of --eval-every", file=sys.stderr)
        return 2
    try:
        synth.check_tools()
    except synth.SynthError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("training").setLevel(logging.INFO)  # the loop's progress lines
    torch.set_num_threads(2)
    work = args.work or Path(tempfile.mkdtemp(prefix="cat-convergence-"))
    if args.work and work.exists() and any(work.iterdir()):
        print(f"error: --work {work} is not empty; choose a new folder", file=sys.stderr)
        return 2
    work.mkdir(parents=True, exist_ok=True)
    try:
        start = time.perf_counter()
        rng = np.random.default_rng(args.seed)
        write_shards(work / "clips", args.clips, 4, 4.0, rng)
        write_noise(work / "noise", 6, 4.0, rng)
        hrtf = load_kemar()
        rate = feat.SAMPLE_RATE
        build_bank(work / "rirs-train", "binaural", rate, args.train_scenes, 1, hrtf, SIMULATION)
        probe_bank = build_bank(
            work / "rirs-probe", "binaural", rate, args.probe_scenes, 2, hrtf, SIMULATION
        )
        task = probe_task(probe_bank, args.seed)
        print(
            f"data: {args.clips} clips, {args.train_scenes} + {args.probe_scenes} RIR scenes, "
            "probe task of "
            f"{len(task['label'])} files ({int(task['test'].sum())} test): "
            f"{time.perf_counter() - start:.0f} s",
            flush=True,
        )
        common = model_overrides(args.width, args.depth, args.heads) + run_overrides(work, args)
        gram_cfg = configuration.load(
            ROOT / "training/configs/toy.yaml", ["model.variant=gram-binaural", *common]
        )
        cat_cfg = configuration.load(ROOT / "training/configs/cat_toy.yaml", common)
        rows = train_and_probe("GRAM", gram_cfg, work / "gram", task, args.eval_every)
        gram_export = export(work / "gram", work / "gram-export")
        rows += train_and_probe("CAT", cat_cfg, work / "cat", task, args.eval_every)
        rr_cfg = configuration.load(
            ROOT / "training/configs/cat_toy.yaml",
            [*common, f"cat.rr_targets={json.dumps(f'hear_gram.gram_binaural:{gram_export}')}"],
        )
        rows += train_and_probe("CAT + RR (GRAM)", rr_cfg, work / "cat-rr", task, args.eval_every)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'model':<16} {'step':>5} {'accuracy %':>11} {'DoA error':>10} {'loss':>8}")
    for r in rows:
        loss = f"{r['loss']:.3f}" if r["loss"] is not None else "-"
        print(f"{r['model']:<16} {r['step']:>5} {r['accuracy']:>11.1f} {r['doa']:>10.1f} {loss:>8}")
    train_mean = task["direction"][~task["test"]].mean(axis=0)
    train_mean /= np.linalg.norm(train_mean)
    constant = np.degrees(np.arccos((task["direction"][task["test"]] @ train_mean).clip(-1, 1)))
    n_test = int(task["test"].sum())
    print(
        f"(chance: {100.0 / len(synth.WORDS):.1f} % accuracy; one standard error of an accuracy "
        f"near 35 % over {n_test} test files: {100 * np.sqrt(0.35 * 0.65 / n_test):.1f} points; "
        f"predicting the mean training direction: {constant.mean():.1f} deg DoA error)"
    )
    plot(rows, args.png)
    print(f"wrote {args.png}; total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GRAM and CAT pretraining on naturalistic scenes, from one CPU to many GPUs.

    python -m training.pretrain --config training/configs/gram_binaural.yaml --out runs/gb
    torchrun --nproc_per_node 8 -m training.pretrain --config ... --out runs/gb
    python -m training.pretrain --config ... --out runs/gb --resume
    python -m training.pretrain --config ... --out runs/gb --set optim.lr=1e-4 train.steps=1000
    python -m training.pretrain --config training/configs/cat_binaural.yaml --out runs/cat \
        --rr-targets hear_gram.gram_binaural:exported/gram-binaural

One step: each rank takes ``batch_clips / (world * accum_steps)`` clips per micro-batch
from its data readers, mixes them into scenes on the device, computes GRAM features, takes
``crops_per_clip`` random normalised 2-s crops per clip, and computes the loss of the
variant's model family (training.families): GRAM masks 80 % of the patches, encodes the
visible ones, decodes all and scores the masked ones (training.mae); CAT predicts an EMA
teacher's representations of masked clones (training.cat), then moves the teacher after
the optimiser step. Gradients are averaged over ranks (DDP) and micro-batches, clipped,
and AdamW steps with a warm-up + cosine learning rate.

Every random draw is reproducible: per-clip draws are seeded by the clip (training.data),
the loop's draws (clean batch, crops, masks) by ``(seed, rank, step, micro-batch)``.
Checkpoints hold the data readers' positions and the RNG states, so ``--resume`` continues
exactly where the last checkpoint left off: with the same number of ranks and workers, the
weights equal those of an uninterrupted run. SIGTERM or SIGINT writes a checkpoint after
the current step and exits with 128 + the signal number (a second SIGINT stops at once),
also when SIGTERM reaches every process of the run: data workers pass theirs on to the
main process and serve batches until it stops them (training.data.make_loader).

Exit codes: 0 done, 1 training failed (a NaN or infinite loss, too many unreadable clips),
2 bad usage (config, paths, a run folder that exists without --resume, one another process
is training in, or --resume without an intact checkpoint), 130/143 stopped by SIGINT/SIGTERM
after checkpointing. --resume takes the newest checkpoint that reads back whole, naming the
damaged ones it skips (training.checkpointing).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from hear_gram import cpu
from hear_gram.checkpoint import load_state_strict
from hear_gram.errors import CheckpointError
from hear_gram.features import AUDIO_CHANNELS
from hear_gram.variants import get_variant
from training import checkpointing
from training import config as configuration
from training.data import (
    BadClipError,
    ClipStream,
    ReaderState,
    TooManyBadClipsError,
    clip_samples,
    make_loader,
    open_source,
)
from training.families import family_of
from training.mae import parameter_count
from training.samples import training_samples
from training.scenes import SceneSampler, render

log = logging.getLogger("training")
METRICS = "metrics.jsonl"


class UsageError(Exception):
    """Bad input: exit code 2."""


class TrainingFailed(Exception):
    """The run cannot go on (a non-finite loss): exit code 1."""


class Interrupted(Exception):
    """Stopped by a signal after checkpointing: exit code 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / (total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def step_rng(
    seed: int, rank: int, step: int, micro: int, device: torch.device
) -> tuple[np.random.Generator, torch.Generator]:
    """The loop's random draws for one micro-batch: a NumPy generator and a torch one."""
    sequence = np.random.SeedSequence([seed, rank, step, micro])
    generator = torch.Generator(device=device)
    generator.manual_seed(int(sequence.generate_state(1, np.uint64)[0] >> 1))
    return np.random.default_rng(sequence), generator


@torch.no_grad()
def model_inputs(
    batch: dict,
    cfg: configuration.Config,
    encoder: torch.nn.Module,
    clean: bool,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """One micro-batch on the device: scenes (or clean copies), features and normalised
    crops ``x (B * crops, C', 128, 200)``. The family's loss draws its masks after them
    from the same generator (training.families)."""
    kind = get_variant(cfg.model.variant)["features"]
    waves = render(batch, AUDIO_CHANNELS[kind], clean, device)
    return training_samples(waves, kind, cfg.train.crops_per_clip, encoder.chunk_frames, generator)


def format_eta(seconds: float) -> str:
    """Seconds as ``1h02m03s`` (``2d03h04m`` past a day; ``?`` when unknown)."""
    if not math.isfinite(seconds):
        return "?"
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    days, h = divmod(hours, 24)
    return f"{days}d{h:02d}h{m:02d}m" if days else f"{h}h{m:02d}m{s:02d}s"


class StopSignals:
    """Turn SIGINT/SIGTERM into a request to checkpoint and stop (a second SIGINT raises)."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, _frame: object) -> None:
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signum == signum:  # SIGTERM again (data workers pass theirs on)
            return
        self.signum = signum
        log.warning("signal %d: checkpointing after this step, then stopping", signum)

    def __enter__(self) -> StopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def setup_device(wanted: str) -> tuple[int, int, int, torch.device]:
    """``(rank, local_rank, world_size, device)``; joins the process group under torchrun."""
    if wanted == "cuda" and not torch.cuda.is_available():
        raise UsageError("train.device is cuda but no CUDA device is available")
    use_cuda = torch.cuda.is_available() if wanted == "auto" else wanted == "cuda"
    rank, local_rank, world = 0, 0, 1
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return rank, local_rank, world, device


def train(
    cfg: configuration.Config,
    out: Path,
    resume: bool = False,
    init: str | None = None,
) -> torch.nn.Module:
    """Run (or continue) pretraining into run folder ``out``; returns the bare model."""
    rank, _, world, device = setup_device(cfg.train.device)
    try:
        with StopSignals() as stop, contextlib.ExitStack() as held:
            return _train(cfg, Path(out), resume, init, rank, world, device, stop, held)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _train(
    cfg: configuration.Config,
    out: Path,
    resume: bool,
    init: str | None,
    rank: int,
    world: int,
    device: torch.device,
    stop: StopSignals,
    held: contextlib.ExitStack,
) -> torch.nn.Module:
    m, t, o = cfg.model, cfg.train, cfg.optim
    master = rank == 0
    family = family_of(cfg)
    channels = AUDIO_CHANNELS[get_variant(m.variant)["features"]]
    if t.batch_clips % (world * t.accum_steps):
        raise UsageError(
            f"train.batch_clips={t.batch_clips} does not split into {world} ranks x "
            f"{t.accum_steps} micro-batches"
        )
    clips_per_micro = t.batch_clips // (world * t.accum_steps)
    readers = max(1, cfg.data.num_workers)
    checkpoints = checkpointing.step_folders(out)
    pointer = checkpointing.checkpoint_dir(out) / checkpointing.LATEST
    if not checkpoints and pointer.exists():
        raise UsageError(
            f"{out}: {pointer} names a checkpoint, but the run has none; restore its "
            f"checkpoint folders, or remove {pointer} to start the run anew"
        )
    if checkpoints and not resume:
        raise UsageError(
            f"{out} already holds a run: pass --resume to continue it or choose another --out"
        )
    if checkpoints and init:
        raise UsageError("--init-from applies to a new run only; this run already has checkpoints")

    def lock_run() -> None:
        """Hold the run folder (rank 0, the writer) and clear what killed runs left."""
        lock = held.enter_context(checkpointing.RunLock(out))
        for path in checkpointing.remove_temporaries(out, lock):
            log.info("removed %s, left by a run killed while checkpointing", path)

    locked = master and out.exists()
    if locked:
        lock_run()

    units = open_source(cfg.data.train)
    torch.manual_seed(t.seed)
    model = family.build(device, out, units)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=o.lr,
        betas=tuple(o.betas),
        weight_decay=o.weight_decay,
        fused=device.type == "cuda",
    )
    factor = partial(lr_factor, warmup=o.warmup_steps, total=t.steps, min_ratio=o.min_lr / o.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    step, data_state = 0, {"first_reader": 0, "readers": {}}
    torch.manual_seed(t.seed + rank)
    np.random.seed(t.seed + rank)
    intact = checkpointing.newest_intact(out) if checkpoints else None
    if intact is not None:
        found, state = intact.path, intact.state
        if master:
            for problem in intact.skipped:
                log.warning("cannot resume from %s", problem)
            if intact.skipped:
                log.warning("resuming from %s, the newest intact checkpoint", found)
        load_state_strict(model, intact.weights, str(found))
        del intact
        if state["world_size"] != world or state["readers"] != readers:
            raise UsageError(
                f"{found} was written by {state['world_size']} ranks x {state['readers']} data "
                f"readers; resume with the same (now {world} x {readers}; data.num_workers sets "
                "the readers) so the data order continues exactly"
            )
        changed = configuration.differences(configuration.from_dict(state["config"]), cfg)
        if changed and master:
            log.warning("config differs from the run's (no longer exactly resumable): %s", changed)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = state["step"]
        mine = state["ranks"][rank]
        checkpointing.set_rng_state(mine["rng"])
        data_state = mine["data"]
        if master:
            log.info("resumed from %s at step %d", found, step)
    else:
        if resume and master:
            log.info("no checkpoint in %s yet: starting a new run", out)
        if init:
            what = family.init_from(model, init)
            if master:
                log.info("initialised %s", what)
        if master:
            out.mkdir(parents=True, exist_ok=True)
            if not locked:
                lock_run()
            configuration.dump(cfg, out / "config.yaml")

    scenes = None
    if cfg.scenes.clean_ratio < 1.0:
        scenes = SceneSampler(
            cfg.scenes.rirs, cfg.scenes.noise, cfg.scenes.snr_db, channels, cfg.data.loudness_dbfs
        )
    stream = ClipStream(
        units,
        batch_size=clips_per_micro,
        num_samples=clip_samples(cfg.data.clip_seconds),
        loudness_dbfs=cfg.data.loudness_dbfs,
        seed=t.seed,
        rank=rank,
        world_size=world,
        num_readers=readers,
        max_bad_fraction=cfg.data.max_bad_fraction,
        extras=scenes,
        states={int(k): ReaderState(**v) for k, v in data_state["readers"].items()},
        first_reader=data_state["first_reader"],
        target_suffix=family.target_suffix,
    )
    reader_states = dict(data_state["readers"])
    next_reader = data_state["first_reader"]

    bare = model
    if t.compile:
        model = torch.compile(model)
    if world > 1:
        model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    bf16 = t.precision == "bf16" or (t.precision == "auto" and device.type == "cuda")
    if bf16 and device.type == "cpu" and master and not cpu.fast_bf16():
        log.warning(
            "train.precision=bf16 on this CPU (%s), which has no fast bfloat16 matmuls: "
            "steps run slower than in fp32 (bf16 matmuls tens of times slower); set "
            "train.precision=fp32",
            cpu.cpu_name(),
        )
    autocast = partial(torch.autocast, device.type, dtype=torch.bfloat16, enabled=bf16)
    writer = None
    if master and t.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tensorboard"), purge_step=step)
    if master:
        log.info(
            "encoder %.1fM + decoder %.1fM parameters on %s x %d; %d clips x %d crops a step",
            parameter_count(bare.encoder) / 1e6,
            parameter_count(bare.decoder) / 1e6,
            device.type,
            world,
            t.batch_clips,
            t.crops_per_clip,
        )

    def save() -> Path | None:
        mine = {
            "rng": checkpointing.rng_state(),
            "data": {"first_reader": next_reader, "readers": dict(reader_states)},
        }
        ranks = [None] * world
        if world > 1:
            dist.all_gather_object(ranks, mine)
        else:
            ranks = [mine]
        path = None
        if master:
            shared = {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "config": configuration.to_dict(cfg),
                "world_size": world,
                "readers": readers,
            }
            path = checkpointing.save(out, step, bare, shared, ranks, t.keep_checkpoints)
            log.info("checkpoint %s", path)
        if world > 1:
            dist.barrier()
        return path

    releasing = torch.multiprocessing.Event()
    loader = make_loader(stream, cfg.data.num_workers, device.type == "cuda", releasing)
    batches = iter(loader)
    interval_loss, interval_steps, interval_start = 0.0, 0, time.perf_counter()
    interval_parts: dict[str, torch.Tensor] = {}
    model.train()
    try:
        while step < t.steps:
            loss_sum = torch.zeros((), device=device)
            for micro in range(t.accum_steps):
                batch = next(batches)
                reader_states[batch["reader"]] = batch["state"]
                next_reader = (batch["reader"] + 1) % readers
                rng, generator = step_rng(t.seed, rank, step, micro, device)
                clean = scenes is None or rng.random() < cfg.scenes.clean_ratio
                x = model_inputs(batch, cfg, bare.encoder, clean, generator, device)
                last = micro == t.accum_steps - 1
                sync = contextlib.nullcontext() if last or world == 1 else model.no_sync()
                with sync:
                    with autocast():
                        loss, parts = family.loss(model, bare, x, batch, generator)
                        loss = loss / t.accum_steps
                    loss.backward()
                loss_sum += loss.detach()
                for name, value in parts.items():
                    interval_parts[name] = interval_parts.get(name, 0.0) + value / t.accum_steps
            grad_norm = torch.nn.utils.clip_grad_norm_(bare.parameters(), o.grad_clip)
            bad = sum(s["bad"] for s in reader_states.values())
            flags = torch.tensor([float(stop.signum > 0), float(bad)], device=device)
            stats = torch.cat([torch.stack([loss_sum, grad_norm.to(device)]), flags])
            if world > 1:
                dist.all_reduce(stats)
                stats[:2] /= world
            loss_value, norm_value, stopping, bad_total = stats.tolist()
            if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
                last_good = checkpointing.latest(out)
                raise TrainingFailed(
                    f"loss {loss_value} / gradient norm {norm_value} at step {step + 1} is not "
                    "finite; stopped without updating the weights. The last good checkpoint is "
                    f"{last_good or '(none yet)'}: resume from it with a lower optim.lr or a "
                    f"longer optim.warmup_steps. Rank {rank}'s last clips: "
                    + ", ".join(batch["keys"][:8])
                )
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            family.after_step(bare, step)
            interval_loss += loss_value
            interval_steps += 1
            if master and (step % t.log_every == 0 or step == t.steps):
                elapsed = time.perf_counter() - interval_start
                samples_per_s = interval_steps * t.batch_clips * t.crops_per_clip / elapsed
                eta = (t.steps - step) * elapsed / interval_steps
                mean_loss = interval_loss / interval_steps
                log.info(
                    "step %d/%d | loss %.4f | lr %.2e | %.1f samples/s | ETA %s | bad clips %d",
                    step,
                    t.steps,
                    mean_loss,
                    lr,
                    samples_per_s,
                    format_eta(eta),
                    bad_total,
                )
                metrics = {
                    "step": step,
                    "loss": mean_loss,
                    "lr": lr,
                    "samples_per_s": samples_per_s,
                    "eta_s": eta,
                    "grad_norm": norm_value,
                    "bad_clips": bad_total,
                    **{f"loss_{k}": float(v) / interval_steps for k, v in interval_parts.items()},
                }
                with open(out / METRICS, "a") as f:
                    f.write(json.dumps(metrics) + "\n")
                if writer is not None:
                    for name, value in metrics.items():
                        if name != "step":
                            writer.add_scalar(f"train/{name}", value, step)
                    writer.flush()
                interval_loss, interval_steps, interval_start = 0.0, 0, time.perf_counter()
                interval_parts = {}
            if stopping or step % t.checkpoint_every == 0 or step == t.steps:
                save()
            if stopping:
                raise Interrupted(stop.signum or signal.SIGTERM)
    finally:
        releasing.set()
        del batches
        if writer is not None:
            writer.close()
    return bare


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of ``python -m training.pretrain``."""
    parser = argparse.ArgumentParser(
        prog="python -m training.pretrain",
        description="GRAM and CAT pretraining on naturalistic scenes (run it under torchrun "
        "for DDP).",
        epilog=(
            "Overrides: --set section.field=value (repeatable) or trailing section.field=value "
            "pairs, values in YAML: optim.lr=1e-4 scenes.snr_db=[5,40] scenes.noise=null. "
            "Exit codes: 0 done, 1 failed, 2 bad usage, 128+N stopped by signal N."
        ),
    )
    parser.add_argument("--config", help="YAML config (training/configs/*.yaml)")
    parser.add_argument("--out", required=True, help="run folder: checkpoints, logs, config")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument(
        "--init-from",
        metavar="REF",
        help="start from pretrained weights: a reference GRAM-T checkpoint file (encoder and "
        "decoder) or a hear_gram checkpoint folder (encoder; for CAT, student and teacher)",
    )
    parser.add_argument(
        "--rr-targets",
        metavar="SPEC",
        help="CAT representation regularization (sets cat.rr_targets): MODULE:CKPT, any HEAR "
        "module and its model file (hear_gram.gram_binaural:exported/gram-binaural), or "
        "beside[:SUFFIX] for vectors stored beside the audio (default suffix rr.npy)",
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("pairs", nargs="*", metavar="KEY=VALUE", help="more overrides")
    return parser.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> configuration.Config:
    """The run's config: --config (or, resuming without it, the run's own) plus overrides."""
    overrides = args.overrides + args.pairs
    if args.rr_targets is not None:
        overrides.append(f"cat.rr_targets={json.dumps(args.rr_targets)}")
    path = args.config
    saved = Path(args.out) / "config.yaml"
    if path is None and args.resume and saved.is_file():
        path = saved
    if path is None:
        raise configuration.ConfigError(
            "--config is required (except with --resume of an existing run)"
        )
    return configuration.load(path, overrides)


def main(argv: list[str] | None = None) -> int:
    """``python -m training.pretrain``: run or resume pretraining; the exit code."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if int(os.environ.get("RANK", 0)) == 0 else logging.WARNING,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        cfg = resolve_config(args)
        train(cfg, Path(args.out), resume=args.resume, init=args.init_from)
    except (
        configuration.ConfigError,
        UsageError,
        checkpointing.RunInUse,
        CheckpointError,
        BadClipError,
        ValueError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Interrupted as stopped:
        return 128 + stopped.signum
    except (TrainingFailed, TooManyBadClipsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

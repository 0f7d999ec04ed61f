"""Pretraining throughput next to a matmul-bound ceiling for the same shapes (not a test).

    python bench/train_throughput.py                       # toy and ViT-B, CPU or the GPU
    python bench/train_throughput.py --configs vitb --batch-clips 96 --crops 16
    python bench/train_throughput.py --configs gram-m      # GRAM-M (16 Mamba-2 blocks)

For each config it times full training steps (scenes mixed on the device, features,
crops, masks, encoder + decoder forward and backward, gradient clipping, AdamW) on one
batch of synthetic 32-kHz clips read through the real data path once (reading runs in
DataLoader workers during training, so it is left out). The ceiling: every matrix-multiply
kind of operation of one forward + backward (mm, addmm, bmm, convolutions, attention
kernels, with their exact shapes, strides and dtypes) is recorded, then replayed alone on
random tensors and timed; samples / (replayed time) is what the step would reach if it
were nothing but those matmuls at the speed this device gives them. Also printed: the
FLOPs per sample (torch's FlopCounterMode) and the FLOP/s of the replay.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hear_gram.cpu import cpu_name  # noqa: E402
from hear_gram.features import AUDIO_CHANNELS  # noqa: E402
from hear_gram.variants import get_variant  # noqa: E402
from training import config as configuration  # noqa: E402
from training.data import ClipStream, clip_samples, open_source  # noqa: E402
from training.mae import build_model  # noqa: E402
from training.masking import random_masking  # noqa: E402
from training.pretrain import model_inputs, step_rng  # noqa: E402
from training.scenes import SceneSampler  # noqa: E402
from training.synthetic import write_dataset  # noqa: E402

CONFIGS = {
    "toy": ROOT / "training" / "configs" / "toy.yaml",
    "vitb": ROOT / "training" / "configs" / "gram_binaural.yaml",
    "gram-m": ROOT / "training" / "configs" / "gram_m_binaural.yaml",
}
aten = torch.ops.aten
MATMUL_OPS = {
    aten.mm.default,
    aten.addmm.default,
    aten.bmm.default,
    aten.baddbmm.default,
    aten.convolution.default,
    aten.convolution_backward.default,
    aten._scaled_dot_product_flash_attention_for_cpu.default,
    aten._scaled_dot_product_flash_attention_for_cpu_backward.default,
    aten._scaled_dot_product_flash_attention.default,
    aten._scaled_dot_product_flash_attention_backward.default,
    aten._scaled_dot_product_efficient_attention.default,
    aten._scaled_dot_product_efficient_attention_backward.default,
    aten._scaled_dot_product_cudnn_attention.default,
    aten._scaled_dot_product_cudnn_attention_backward.default,
}


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    def make(self) -> torch.Tensor:
        t = torch.empty_strided(self.shape, self.stride, dtype=self.dtype, device=self.device)
        return t.normal_(0, 0.1) if self.dtype.is_floating_point else t.zero_()


class RecordMatmuls(TorchDispatchMode):
    """Record matmul-kind ops with the shapes, strides and dtypes of their tensor inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in MATMUL_OPS:

            def spec(a):
                if isinstance(a, torch.Tensor):
                    return TensorSpec(tuple(a.shape), tuple(a.stride()), a.dtype, a.device)
                return a

            self.calls.append((func, tree_map(spec, args), tree_map(spec, kwargs)))
        return func(*args, **kwargs)


def materialise(spec):
    return spec.make() if isinstance(spec, TensorSpec) else spec


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def replay_seconds(calls: list[tuple], device: torch.device, repeats: int) -> float:
    """Seconds one pass over the recorded ops takes, replayed alone (best of ``repeats``)."""
    prepared = [(f, tree_map(materialise, a), tree_map(materialise, k)) for f, a, k in calls]
    best = float("inf")
    for _ in range(repeats + 1):  # the first pass warms up
        sync(device)
        start = time.perf_counter()
        for func, args, kwargs in prepared:
            func(*args, **kwargs)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def bench(name: str, args: argparse.Namespace, device: torch.device, tmp: Path) -> dict:
    cfg = configuration.load(
        CONFIGS[name],
        [
            f"train.batch_clips={args.batch_clips[name]}",
            f"train.crops_per_clip={args.crops[name]}",
            f"train.device={device.type}",
            "data.train=unused",
        ],
    )
    t = cfg.train
    kind = get_variant(cfg.model.variant)["features"]
    data = write_dataset(
        tmp / name, t.batch_clips, 1, cfg.data.clip_seconds, noise=4, scenes=8, kind=kind
    )
    channels = AUDIO_CHANNELS[kind]
    sampler = SceneSampler(str(data / "rirs"), str(data / "noise"), cfg.scenes.snr_db, channels)
    stream = ClipStream(
        open_source(str(data / "shards")),
        t.batch_clips,
        clip_samples(cfg.data.clip_seconds),
        extras=sampler,
    )
    batch = next(stream.batches(0))
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.mamba).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=cfg.optim.lr,
        betas=tuple(cfg.optim.betas),
        fused=device.type == "cuda",
    )
    bf16 = t.precision == "bf16" or (t.precision == "auto" and device.type == "cuda")

    def forward_backward(x, keep, masked) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(x, keep, masked)
        loss.backward()

    prep_times, step_times = [], []
    for step in range(args.steps + 1):  # step 0 warms up
        sync(device)
        start = time.perf_counter()
        _, generator = step_rng(0, 0, step, 0, device)
        x = model_inputs(batch, cfg, model.encoder, False, generator, device)
        keep, masked = random_masking(
            x.shape[0], model.encoder.num_patches, cfg.model.mask_ratio, generator, device
        )
        sync(device)
        prepared = time.perf_counter()
        forward_backward(x, keep, masked)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        if step:
            prep_times.append(prepared - start)
            step_times.append(time.perf_counter() - start)
    samples = x.shape[0]
    recorder = RecordMatmuls()
    with recorder:
        forward_backward(x, keep, masked)
    optimizer.zero_grad(set_to_none=True)
    counter = FlopCounterMode(display=False)
    with counter:
        forward_backward(x, keep, masked)
    optimizer.zero_grad(set_to_none=True)
    matmul_s = replay_seconds(recorder.calls, device, args.repeats)
    step_s = min(step_times)
    flops = counter.get_total_flops()
    return {
        "config": name,
        "samples": samples,
        "step_s": step_s,
        "prep_s": min(prep_times),
        "samples_per_s": samples / step_s,
        "ceiling_samples_per_s": samples / matmul_s,
        "gflop_per_sample": flops / samples / 1e9,
        "matmul_tflops": flops / matmul_s / 1e12,
        "ops": len(recorder.calls),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["toy", "vitb"])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up)")
    parser.add_argument("--repeats", type=int, default=3, help="timed replays of the matmuls")
    parser.add_argument("--batch-clips", type=int, help="clips a step (default: per config)")
    parser.add_argument("--crops", type=int, help="crops per clip (default: per config)")
    args = parser.parse_args(argv)
    use_cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device", file=sys.stderr)
        return 2
    device = torch.device("cuda" if use_cuda else "cpu")
    # CPU defaults keep ViT-B to a few seconds a step; on a GPU, the paper's 96 x 16.
    large = (96, 16) if use_cuda else (2, 4)
    defaults = {"toy": (4, 4), "vitb": large, "gram-m": large}
    args.batch_clips = {k: args.batch_clips or v[0] for k, v in defaults.items()}
    args.crops = {k: args.crops or v[1] for k, v in defaults.items()}
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
        what = torch.cuda.get_device_name(device)
    else:
        what = f"CPU {cpu_name()}, {torch.get_num_threads()} threads"
    print(f"device: {what}; torch {torch.__version__}")
    header = (
        f"{'config':<6} {'samples':>7} {'step s':>8} {'prep s':>7} {'samples/s':>10} "
        f"{'ceiling/s':>10} {'ratio':>6} {'GFLOP/sample':>13} {'matmul TFLOP/s':>15}"
    )
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            r = bench(name, args, device, Path(tmp))
            print(
                f"{r['config']:<6} {r['samples']:>7} {r['step_s']:>8.3f} {r['prep_s']:>7.3f} "
                f"{r['samples_per_s']:>10.1f} {r['ceiling_samples_per_s']:>10.1f} "
                f"{r['samples_per_s'] / r['ceiling_samples_per_s']:>6.2f} "
                f"{r['gflop_per_sample']:>13.2f} {r['matmul_tflops']:>15.3f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

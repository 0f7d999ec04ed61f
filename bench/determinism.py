"""What gives the same bits with 1 and 2 intra-op threads, and what pinning costs (not a test).

    python bench/determinism.py                      # all four parts below
    python bench/determinism.py --parts probe        # only the probe's thread cost
    python bench/determinism.py --quick --parts embeddings probe step

1. Embeddings: scene and timestamp embeddings of each hear_gram variant (random weights)
   and of the log-mel baseline, for batches of 1-s, 2.5-s and 4-s stereo (or 4-channel)
   clips, computed with 1 and with 2 threads: equal or not (bit for bit).
2. Probe training: the localization probe (heareval's predictor, one grid point) on random
   scene embeddings, trained with 1 intra-op thread (what ``evaluate`` pins it to) and with
   2: the time of each and whether the per-clip errors agree.
3. One pretraining step of the toy GRAM-Binaural (training/configs/toy.yaml) on the same
   clips with 1 and 2 threads: features, loss and each parameter's gradient equal or not,
   and a LayerNorm's backward pass alone.
4. The whole toy pretraining run twice, ``OMP_NUM_THREADS=1`` and ``=2``, on the toy data
   set: the logged losses and the final weights compared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hear_gram.hear_api import load_model  # noqa: E402
from natheear_tasks.baselines import logmel  # noqa: E402
from natheear_tasks.evaluation import determinism, doa_probe  # noqa: E402

VARIANTS = {"gram-binaural": 2, "gram-binaural-time": 2, "gram-ambisonics": 4, "cat-binaural": 2}
TOY = ROOT / "training" / "configs" / "toy.yaml"
PARTS = ("embeddings", "probe", "step", "pretrain")


def with_threads(count: int, function):
    with determinism.intra_op_threads(count):
        return function()


def same(function) -> bool:
    one, two = with_threads(1, function), with_threads(2, function)
    return all(torch.equal(a, b) for a, b in zip(one, two, strict=True))


def embeddings(quick: bool) -> None:
    print("1. embeddings, 1 vs 2 threads (bit for bit)")
    lengths = (1.0,) if quick else (1.0, 2.5, 4.0)
    batch = 2 if quick else 4
    variants = {"gram-binaural": 2} if quick else VARIANTS
    g = torch.Generator().manual_seed(0)
    for variant, channels in variants.items():
        model = load_model(variant, "random", sample_rate=16000)
        for seconds in lengths:
            audio = torch.randn(batch, int(16000 * seconds), channels, generator=g) * 0.1
            scene = same(lambda m=model, a=audio: (m.scene_embeddings(a),))
            steps = same(lambda m=model, a=audio: (m.timestamp_embeddings(a)[0],))
            print(f"   {variant:20s} {batch} x {seconds:3.1f} s  scene {scene}  timestamp {steps}")
    baseline = logmel.load_model(sample_rate=16000)
    audio = torch.randn(batch, 16000 * 3, 2, generator=g)
    equal = same(lambda: (logmel.get_scene_embeddings(audio, baseline),))
    print(f"   {'logmel baseline':20s} {batch} x 3.0 s  scene {equal}")


def probe_cost(quick: bool) -> None:
    print("2. localization probe (one grid point of heareval's default grid)")
    n, dim = (200, 512) if quick else (600, 6144)
    g = torch.Generator().manual_seed(1)

    def split(name: str, count: int) -> doa_probe.Split:
        y = torch.nn.functional.normalize(torch.randn(count, 3, generator=g), dim=-1)
        x = torch.randn(count, dim, generator=g) + y.repeat(1, dim // 3 + 1)[:, :dim]
        return doa_probe.Split([f"{name}{i}" for i in range(count)], x, y)

    splits = {"train": split("a", n), "valid": split("b", n // 4), "test": split("c", n // 4)}
    metadata = {"split_mode": "trainvaltest", "evaluation": ["mean_doa_error_deg"]}
    grid = "faster" if quick else "default"
    results = {}
    pinned = determinism.PROBE_THREADS
    try:
        for threads in (1, 2):
            determinism.PROBE_THREADS = threads  # what probe_threads() pins the count to
            start = time.perf_counter()
            scores = doa_probe.fit_and_score(splits, metadata, grid, 1)
            results[threads] = (time.perf_counter() - start, scores["errors_deg"])
            error = scores["test"]["mean_doa_error_deg"]
            print(f"   {threads} thread(s): {results[threads][0]:6.1f} s, mean DoA error {error!r}")
    finally:
        determinism.PROBE_THREADS = pinned
    print(
        f"   per-clip errors equal: {results[1][1] == results[2][1]}; time with 1 thread / "
        f"with 2: {results[1][0] / results[2][0]:.2f} ({n} training clips, {dim}-d embeddings)"
    )


def pretraining_step() -> None:
    import copy

    from training import config as configuration
    from training import mae
    from training.families import family_of
    from training.samples import training_samples

    print("3. one toy pretraining step, 1 vs 2 threads")
    cfg = configuration.load(TOY)
    family = family_of(cfg)
    torch.manual_seed(0)
    start_model = mae.build_model(cfg.model)
    waves = torch.randn(4, 2, 32000 * 4, generator=torch.Generator().manual_seed(1)) * 0.1
    out = {}
    for threads in (1, 2):
        model = copy.deepcopy(start_model).train()

        def step(model=model) -> tuple:
            generator = torch.Generator().manual_seed(2)
            x = training_samples(waves, "binaural", 4, model.encoder.chunk_frames, generator)
            loss, _ = family.loss(model, model, x, {}, generator)
            loss.backward()
            return x, loss.detach()

        x, loss = with_threads(threads, step)
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        out[threads] = (x, loss, grads)
    (x1, l1, g1), (x2, l2, g2) = out[1], out[2]
    print(f"   features equal {torch.equal(x1, x2)}; loss equal {torch.equal(l1, l2)}")
    differ = {
        n: ((g1[n] - g2[n]).abs().max() / g1[n].abs().max().clamp_min(1e-30)).item()
        for n in g1
        if not torch.equal(g1[n], g2[n])
    }
    print(f"   gradients equal: {len(g1) - len(differ)} of {len(g1)} parameters")
    for name, rel in sorted(differ.items(), key=lambda kv: -kv[1])[:5]:
        print(f"     {name}: max |difference| / max |gradient| {rel:.1e}")
    norms = torch.nn.LayerNorm(64)
    rows = torch.randn(640, 64, generator=torch.Generator().manual_seed(3))
    upstream = torch.randn(640, 64, generator=torch.Generator().manual_seed(4))

    def layer_norm_backward() -> tuple:
        norms.zero_grad()
        inp = rows.clone().requires_grad_()
        norms(inp).backward(upstream)
        return inp.grad, norms.weight.grad.clone(), norms.bias.grad.clone()

    one, two = with_threads(1, layer_norm_backward), with_threads(2, layer_norm_backward)
    names = ("input", "weight", "bias")
    print(
        "   LayerNorm backward alone, gradient equal for "
        + ", ".join(f"{n} {torch.equal(a, b)}" for n, a, b in zip(names, one, two, strict=True))
    )


def pretraining_runs(work: Path) -> None:
    from safetensors.torch import load_file

    from training.synthetic import write_dataset

    print("4. the toy pretraining run, OMP_NUM_THREADS=1 and =2")
    data = write_dataset(work / "toy")
    runs = {}
    for threads in ("1", "2"):
        out = work / f"run-{threads}"
        command = [sys.executable, "-m", "training.pretrain", "--config", str(TOY)]
        command += ["--out", str(out), f"data.train={data / 'shards'}"]
        command += [f"scenes.rirs={data / 'rirs'}", f"scenes.noise={data / 'noise'}"]
        command += ["train.tensorboard=false"]
        env = {**os.environ, "OMP_NUM_THREADS": threads, "PYTHONPATH": str(ROOT)}
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True, cwd=ROOT)
        losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").open()]
        final = sorted((out / "checkpoints").glob("step-*"))[-1] / "model.safetensors"
        runs[threads] = (losses, load_file(final))
        print(f"   {threads} thread(s): {time.perf_counter() - start:.0f} s")
    (l1, w1), (l2, w2) = runs["1"], runs["2"]
    largest = max(abs(a - b) for a, b in zip(l1, l2, strict=True))
    print(f"   logged losses equal: {l1 == l2}; largest difference {largest:.1e}")
    relative = {
        k: ((w1[k].float() - w2[k].float()).norm() / w1[k].float().norm().clamp_min(1e-30)).item()
        for k in w1
        if w1[k].is_floating_point()
    }
    equal = sum(torch.equal(w1[k], w2[k]) for k in w1)
    worst = max(relative, key=relative.get)
    median = sorted(relative.values())[len(relative) // 2]
    print(
        f"   final weights: {equal} of {len(w1)} tensors equal; relative L2 difference median "
        f"{median:.1e}, largest {relative[worst]:.1e} ({worst})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=list(PARTS),
        help="what to run (default: all): embeddings, probe, step, pretrain",
    )
    args = parser.parse_args(argv)
    capability = torch.backends.cpu.get_cpu_capability()
    print(f"CPU {determinism.cpu_model()} ({capability}), torch {torch.__version__}")
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if "embeddings" in args.parts:
        embeddings(args.quick)
    if "probe" in args.parts:
        probe_cost(args.quick)
    if "step" in args.parts:
        pretraining_step()
    if "pretrain" in args.parts:
        with tempfile.TemporaryDirectory() as work:
            pretraining_runs(Path(work))
    return 0


if __name__ == "__main__":
    sys.exit(main())

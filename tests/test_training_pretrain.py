"""The pretraining loop on CPU: the loss falls, DDP ranks agree, a killed run resumes
exactly, a NaN stops the run, and an exported run passes hear-validator."""

import json
import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from training_support import toy_overrides

from hear_gram import cpu
from training import checkpointing, config
from training.export import main as export_main
from training.mae import MaskedAutoencoder, build_model
from training.pretrain import TrainingFailed, main, train
from training.synthetic import write_dataset

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "training" / "configs" / "toy.yaml"


def toy_config(data: Path, **fields) -> config.Config:
    return config.load(TOY, toy_overrides(data, **fields))


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def toy_run(toy_data, tmp_path_factory) -> Path:
    """30 toy steps with scenes, noise and clean batches; TensorBoard on."""
    run = tmp_path_factory.mktemp("runs") / "toy"
    fields = {"train.steps": 30, "optim.lr": 3e-3, "train.tensorboard": True}
    train(toy_config(toy_data, **fields), run)
    return run


def test_toy_pretraining_lowers_the_loss(toy_run):
    losses = [m["loss"] for m in metrics(toy_run)]
    assert len(losses) == 30 and all(math.isfinite(x) for x in losses)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    # Predicting the normalised mean (zeros) scores about 2 (1 per value x 2 channels).
    assert last < 0.9 * first and last < 2.0, (first, last)
    assert list((toy_run / "tensorboard").glob("events.out.tfevents.*"))
    assert checkpointing.latest(toy_run).name == "step-000000030"
    assert len(list((toy_run / "checkpoints").glob("step-*"))) == 2  # keep_checkpoints: 2


def test_existing_run_needs_resume(toy_run, capsys):
    assert main(["--config", str(TOY), "--out", str(toy_run)]) == 2
    assert "already holds a run: pass --resume" in capsys.readouterr().err


def test_too_many_bad_clips_through_workers_exits_instead_of_hanging(tmp_path):
    """The run stops with exit code 1 and its data worker processes end with it."""
    data = write_dataset(tmp_path / "data", clips=4, shards=2, seconds=2.5, noise=2, scenes=2)
    for shard in (data / "shards").glob("*.tar"):
        shard.write_bytes(shard.read_bytes()[:600] + b"\0" * 2000)
    cmd = [
        sys.executable,
        "-m",
        "training.pretrain",
        "--config",
        str(TOY),
        "--out",
        str(tmp_path / "r"),
    ]
    result = subprocess.run(
        cmd + toy_overrides(data, **{"data.max_bad_fraction": 0.0}),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "no readable clips" in result.stderr


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, read from /proc, descendants first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    order: list[int] = []

    def visit(p: int) -> None:
        for child in children.get(p, []):
            visit(child)
        order.append(p)

    visit(pid)
    return order


@pytest.mark.parametrize("target", ["group", "every process"])
def test_resume_after_sigterm_equals_an_uninterrupted_run(toy_data, tmp_path, target):
    """SIGTERM as a scheduler sends it to the process group (data workers sit in a group of
    their own, so only the main process sees it), or as systemd's KillMode and ``pkill -f``
    send it to every process of the run, data workers first: either way the run
    checkpoints after the current step, stops its workers and exits 143, and resumes
    exactly."""
    fields = {"train.steps": 8, "train.checkpoint_every": 100, "data.num_workers": 2}
    whole = train(toy_config(toy_data, **fields), tmp_path / "whole")

    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "training.pretrain", "--config", str(TOY), "--out", str(run)]
    proc = subprocess.Popen(
        cmd + toy_overrides(toy_data, **fields),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output, workers = [], []
    for line in proc.stdout:
        output.append(line)
        if "step 3/8" in line:
            if target == "group":
                os.killpg(proc.pid, signal.SIGTERM)
            else:
                *workers, main_pid = process_tree(proc.pid)
                assert len(workers) >= 2, workers
                for pid in [*workers, main_pid]:
                    os.kill(pid, signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, "".join(output)
    assert "killed by signal" not in "".join(output)
    stopped = checkpointing.latest(run)
    assert stopped is not None and 3 <= checkpointing.read_state(stopped)["step"] < 8, output
    for pid in workers:  # stopped with the run, not orphaned
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()

    resumed = train(toy_config(toy_data, **fields), run, resume=True)
    for key, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    assert torch.equal(
        load_file(checkpointing.latest(run) / "model.safetensors")["encoder.norm.weight"],
        whole.encoder.norm.weight.detach(),
    )


def test_resume_skips_damaged_checkpoints_and_continues_exactly(toy_data, tmp_path, caplog):
    """The newest checkpoint truncated (model.safetensors) and the one before damaged
    (state.pt): --resume names both files and why, resumes from the newest intact one and
    ends where an uninterrupted run does."""
    fields = {"train.steps": 8, "train.checkpoint_every": 2, "train.keep_checkpoints": 0}
    whole = train(toy_config(toy_data, **fields), tmp_path / "whole")
    run = tmp_path / "damaged"
    train(toy_config(toy_data, **fields), run)
    root = checkpointing.checkpoint_dir(run)
    weights = root / "step-000000008" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    state = root / "step-000000006" / "state.pt"
    state.write_bytes(state.read_bytes()[:-100])
    with caplog.at_level("WARNING"):
        resumed = train(toy_config(toy_data, **fields), run, resume=True)
    warned = caplog.text
    assert f"step-000000008: {weights} is not a readable safetensors file" in warned
    assert f"step-000000006: {state} is unreadable" in warned
    assert f"resuming from {root / 'step-000000004'}, the newest intact checkpoint" in warned
    for key, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    assert checkpointing.read_state(root / "step-000000008")["step"] == 8  # written anew


def test_keeping_the_newest_checkpoints_counts_from_the_step_written(tmp_path):
    """Resumed from step 4 past a damaged step 8, the run writes step 5 with keep 1: step 4
    goes, step 5 (which latest names) stays, and step 8 stays until written again."""
    model = torch.nn.Linear(2, 2)
    for step in (4, 8):
        checkpointing.save(tmp_path, step, model, {}, [{}])
    checkpointing.save(tmp_path, 5, model, {}, [{}], keep=1)
    names = [p.name for p in checkpointing.step_folders(tmp_path)]
    assert names == ["step-000000008", "step-000000005"]
    assert checkpointing.latest(tmp_path).name == "step-000000005"


def test_resume_without_an_intact_checkpoint_is_refused(toy_data, tmp_path, capsys):
    run = tmp_path / "run"
    train(toy_config(toy_data, **{"train.steps": 2}), run)
    state = checkpointing.checkpoint_dir(run) / "step-000000002" / "state.pt"
    state.write_bytes(b"")
    args = ["--config", str(TOY), "--out", str(run), "--resume"]
    assert main(args + toy_overrides(toy_data, **{"train.steps": 4})) == 2
    err = capsys.readouterr().err
    assert f"has no intact checkpoint to resume from: step-000000002: {state}" in err


KILLED_WHILE_CHECKPOINTING = """
import os, signal, sys, torch
from training import pretrain
save = torch.save
def save_then_die(*args, **kwargs):
    save(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = save_then_die
sys.exit(pretrain.main(sys.argv[1:]))
"""


def test_temporary_folders_of_a_killed_run_are_removed_on_the_next_start(toy_data, tmp_path):
    """A run SIGKILLed inside its first checkpoint's write leaves a hidden .step-* folder;
    the next start removes it (and nothing else), holding the run folder's lock, which a
    second process cannot take."""
    run = tmp_path / "run"
    fields = {"train.steps": 2, "train.checkpoint_every": 1, "data.num_workers": 0}
    args = ["--config", str(TOY), "--out", str(run), *toy_overrides(toy_data, **fields)]
    result = subprocess.run(
        [sys.executable, "-c", KILLED_WHILE_CHECKPOINTING, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    root = checkpointing.checkpoint_dir(run)
    (left,) = root.glob(".step-000000001.*")
    assert (left / "state.pt").is_file()
    (root / ".latest.tmp").write_text("step-000000001\n")
    (root / ".step-notes").write_text("not ours")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / ".step-000000009.abcdefgh").symlink_to(elsewhere)

    with checkpointing.RunLock(run):
        assert main([*args, "--resume"]) == 2  # in use: nothing removed
    assert left.exists()
    train(toy_config(toy_data, **fields), run, resume=True)
    assert not left.exists() and not (root / ".latest.tmp").exists()
    assert (root / ".step-notes").is_file() and elsewhere.is_dir()
    assert checkpointing.latest(run).name == "step-000000002"


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(toy_data, tmp_path, monkeypatch):
    forward = MaskedAutoencoder.forward
    calls = []

    def failing(self, *args):
        calls.append(1)
        loss = forward(self, *args)
        return loss * float("nan") if len(calls) == 5 else loss

    monkeypatch.setattr(MaskedAutoencoder, "forward", failing)
    cfg = toy_config(toy_data, **{"train.steps": 10, "train.checkpoint_every": 2})
    with pytest.raises(TrainingFailed, match=r"at step 5 is not finite.*step-000000004"):
        train(cfg, tmp_path / "run")
    last = checkpointing.latest(tmp_path / "run")
    assert last.name == "step-000000004"
    assert all(v.isfinite().all() for v in load_file(last / "model.safetensors").values())


def test_bf16_on_a_cpu_without_fast_bfloat16_warns(toy_data, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(cpu, "fast_bf16", lambda: False)
    cfg = toy_config(toy_data, **{"train.steps": 1, "train.precision": "bf16"})
    with caplog.at_level("WARNING"):
        train(cfg, tmp_path / "run")
    assert "train.precision=bf16 on this CPU" in caplog.text
    assert "set train.precision=fp32" in caplog.text


def _ddp_rank(rank: int, port: int, fields: dict, out: str, data: str, results: str) -> None:
    os.environ.update(
        {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2"},
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    model = train(toy_config(Path(data), **fields), Path(out))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{results}/{rank}.st")


def test_two_gloo_ranks_keep_identical_weights(toy_data, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fields = {"train.steps": 3, "data.num_workers": 0, "train.batch_clips": 4}
    args = (port, fields, str(tmp_path / "run"), str(toy_data), str(tmp_path))
    mp.start_processes(_ddp_rank, args=args, nprocs=2, join=True, start_method="spawn")
    rank0, rank1 = load_file(tmp_path / "0.st"), load_file(tmp_path / "1.st")
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    # They trained: the weights moved from the initial ones (seeded by train.seed).
    torch.manual_seed(toy_config(toy_data).train.seed)
    fresh = build_model(toy_config(toy_data).model).state_dict()
    key = "encoder.blocks.0.attn.qkv.weight"
    assert not torch.equal(fresh[key], rank0[key])
    state = checkpointing.read_state(checkpointing.latest(tmp_path / "run"))
    assert state["world_size"] == 2 and len(state["ranks"]) == 2


@pytest.mark.slow
def test_exported_toy_run_passes_hear_validator(toy_run, tmp_path, bin_dir):
    out = tmp_path / "exported"
    assert export_main([str(toy_run), str(out)]) == 0
    from hear_gram import load_model

    model = load_model(str(out))
    trained = load_file(checkpointing.latest(toy_run) / "model.safetensors")
    for key, value in model.encoder.state_dict().items():
        if f"encoder.{key}" in trained:
            assert torch.equal(value, trained[f"encoder.{key}"]), key
    assert json.loads((out / "config.json").read_text())["metadata"]["step"] == 30
    assert export_main([str(toy_run), str(out)]) == 2  # exists
    assert export_main([str(toy_run), str(tmp_path / "x"), "--step", "7"]) == 2
    result = subprocess.run(
        [str(bin_dir / "hear-validator"), "hear_gram", "-m", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

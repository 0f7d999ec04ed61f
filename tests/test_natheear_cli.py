"""natheear-tasks command line: help, the rirs and preview commands, and heareval's
embeddings runner on converted and localization tasks."""

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from source_tasks import write_task

from natheear_tasks.cli import main
from natheear_tasks.simulation.rirbank import RirBank
from natheear_tasks.simulation.rirs import SimulationSettings, build_bank

FAST = SimulationSettings(n_rays=3000, max_seconds=0.5)


@pytest.mark.parametrize("command", [[], ["convert"], ["localize"], ["rirs"], ["preview"]])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: natheear-tasks" in capsys.readouterr().out


def test_module_entry_point_and_usage_errors():
    run = [sys.executable, "-m", "natheear_tasks"]
    done = subprocess.run([*run, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "convert" in done.stdout and "preview" in done.stdout
    bad = subprocess.run([*run, "convert", "x"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--format" in bad.stderr


def test_rirs_command_builds_resumes_and_refuses_other_options(tmp_path, capsys):
    out = tmp_path / "bank"
    args = ["rirs", str(out), "--format", "ambisonics", "--count", "2", "--sample-rate", "16000"]
    assert main(args) == 0
    bank = RirBank.open(out)
    assert (len(bank), bank.format, bank.sample_rate) == (2, "ambisonics", 16000)
    assert bank[1].rirs.shape[:2] == (1 + bank[1].num_noise, 4)
    listing = sorted(p.name for p in out.iterdir())
    assert listing == ["bank.json", "rirs", "scenes.jsonl"]
    assert main(args) == 0  # complete: nothing to do
    assert main([*args[:-3], "3", "--sample-rate", "16000"]) == 2
    assert "different RIR bank" in capsys.readouterr().err


def test_preview_draws_ambisonics_and_binaural_clips(tmp_path, capsys):
    bank = build_bank(tmp_path / "bank", "ambisonics", 16000, 1, 0, None, FAST)
    src = write_task(tmp_path / "src", rates=(16000,), files_per_split=1, seconds=1.5)
    out = tmp_path / "out"
    args = ["--rirs", str(bank.path), "--format", "ambisonics"]
    assert main(["convert", str(src), str(out), *args]) == 0
    wav = out / "toy-scene-ambisonics" / "16000" / "test" / "test-0.wav"
    png = tmp_path / "x.png"
    assert main(["preview", str(wav), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20000
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.random.default_rng(0).standard_normal((16000, 2)) * 0.1, 16000)
    assert main(["preview", str(stereo), "--out", str(tmp_path / "s.png")]) == 0
    (tmp_path / "bad.wav").write_bytes(b"nope")
    assert main(["preview", str(tmp_path / "bad.wav"), "--out", str(png)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_intensity_direction_of_a_plane_wave():
    from natheear_tasks.tasks.preview import intensity_directions

    rate = 16000
    s = np.random.default_rng(0).standard_normal(rate)
    az, el = np.radians(-130), np.radians(25)
    gains = [1, np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)]
    azimuth, elevation, _ = intensity_directions(np.outer(gains, s), rate, 512, 128)
    np.testing.assert_allclose(np.median(azimuth), -130, atol=0.5)
    np.testing.assert_allclose(np.median(elevation), 25, atol=0.5)


def _tiny_checkpoint(folder, variant: str, in_chans: int):
    from hear_gram.checkpoint import save_checkpoint
    from hear_gram.variants import create_encoder

    args = {
        "in_chans": in_chans,
        "patch_size": (16, 8),
        "embed_dim": 32,
        "depth": 1,
        "num_heads": 2,
    }
    encoder = create_encoder("gram", args, seed=0)
    return save_checkpoint(folder, encoder, variant, args)


def _embed(bin_dir, module: str, model, tasks, embeddings) -> None:
    command = [
        str(bin_dir / "python"), "-m", "heareval.embeddings.runner", module,
        "--model", str(model), "--tasks-dir", str(tasks), "--embeddings-dir", str(embeddings),
        "--model-options", json.dumps({"sample_rate": 16000}),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.slow
def test_heareval_embeds_converted_and_localization_tasks(tmp_path, bin_dir):
    from natheear_tasks.simulation.hrtf import load_kemar

    torch.manual_seed(0)
    src = write_task(tmp_path / "src", rates=(16000,), files_per_split=2, seconds=1.0)
    binaural = build_bank(tmp_path / "b", "binaural", 16000, 2, 0, load_kemar(), FAST)
    ambisonics = build_bank(tmp_path / "a", "ambisonics", 16000, 2, 0, None, FAST)
    tasks_b, tasks_a = tmp_path / "tasks-b", tmp_path / "tasks-a"
    assert (
        main(
            [
                "convert",
                str(src),
                str(tasks_b),
                "--format",
                "binaural",
                "--rirs",
                str(binaural.path),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "localize",
                str(src),
                str(tasks_a),
                "--format",
                "ambisonics",
                "--rirs",
                str(ambisonics.path),
            ]
        )
        == 0
    )

    embeddings = tmp_path / "embeddings"
    _embed(
        bin_dir,
        "hear_gram.gram_binaural",
        _tiny_checkpoint(tmp_path / "gb", "gram-binaural", 2),
        tasks_b,
        embeddings,
    )
    _embed(
        bin_dir,
        "hear_gram.gram_ambisonics",
        _tiny_checkpoint(tmp_path / "ga", "gram-ambisonics", 7),
        tasks_a,
        embeddings,
    )

    scene = embeddings / "hear_gram.gram_binaural-sample-rate=16000" / "toy-scene-binaural"
    assert (scene / ".done.embeddings").exists()
    dims = json.loads((scene / "test.embedding-dimensions.json").read_text())
    assert dims == [2, 8 * 32]
    local = (
        embeddings
        / "hear_gram.gram_ambisonics-sample-rate=16000"
        / "toy-scene-localization-ambisonics"
    )
    assert (local / ".done.embeddings").exists()
    labels = pickle.loads((local / "train.target-labels.pkl").read_bytes())
    expected = json.loads(
        (tasks_a / "toy-scene-localization-ambisonics" / "train.json").read_text()
    )
    assert sorted(map(tuple, labels)) == sorted(map(tuple, expected.values()))
    assert all(len(v) == 3 for v in labels)

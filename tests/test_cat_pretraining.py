"""CAT through the shared pretraining loop: toy runs on synthetic scenes, regularization
targets from a HEAR module and from files beside the audio, exact resume, export."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from hear_gram.cat import CatEncoder
from hear_gram.checkpoint import load_encoder, save_checkpoint
from training import config as configuration
from training import pretrain
from training.export import export
from training.synthetic import synth_clip, write_dataset

pytestmark = pytest.mark.slow
TOY = Path(__file__).resolve().parents[1] / "training" / "configs" / "cat_toy.yaml"
EXTERNAL = {
    "in_chans": 2,
    "stem_dims": (8, 8),
    "stem_depths": (1, 1),
    "embed_dim": 16,
    "depth": 1,
    "num_heads": 2,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cat-data")
    return write_dataset(root / "toy", clips=8, shards=2, seconds=2.5, noise=2, scenes=4)


def toy_config_overrides(data: Path) -> list[str]:
    return [
        f"data.train={data / 'shards'}",
        f"scenes.rirs={data / 'rirs'}",
        f"scenes.noise={data / 'noise'}",
        "data.clip_seconds=2.5",
        "data.num_workers=0",
        "train.batch_clips=2",
        "train.crops_per_clip=2",
        "train.tensorboard=false",
    ]


def toy_config(data: Path, *overrides: str) -> configuration.Config:
    return configuration.load(TOY, [*toy_config_overrides(data), *overrides])


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / pretrain.METRICS).read_text().splitlines()]


def test_toy_cat_pretraining_lowers_its_loss_and_exports(data, tmp_path, bin_dir):
    cfg = toy_config(data, "train.steps=40", "train.log_every=8", "train.checkpoint_every=40")
    run = tmp_path / "run"
    model = pretrain.train(cfg, run)
    logged = metrics(run)
    assert logged[-1]["loss"] < 0.8 * logged[0]["loss"], logged
    assert logged[-1]["loss_frame"] < logged[0]["loss_frame"]
    # The teacher followed the student (EMA), and is not the student.
    student, teacher = model.encoder.state_dict(), model.teacher.state_dict()
    assert not torch.equal(student["blocks.0.attn.qkv.weight"], teacher["blocks.0.attn.qkv.weight"])

    out = export(run, tmp_path / "exported")
    encoder, config = load_encoder(str(out), "cat-binaural")
    assert config["architecture"] == "cat" and config["metadata"]["step"] == 40
    torch.testing.assert_close(encoder.state_dict()["cls_token"], student["cls_token"])
    ema = export(run, tmp_path / "exported-ema", teacher=True)
    ema_encoder, _ = load_encoder(str(ema), "cat-binaural")
    torch.testing.assert_close(ema_encoder.state_dict()["cls_token"], teacher["cls_token"])
    result = subprocess.run(
        [str(bin_dir / "hear-validator"), "hear_gram.cat_binaural", "-m", str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "Looks good!" in result.stdout, result.stderr[-2000:]


def test_resumed_cat_run_ends_with_the_same_weights(data, tmp_path):
    common = ("train.steps=4", "train.log_every=2", "train.checkpoint_every=2")
    straight = pretrain.train(toy_config(data, *common), tmp_path / "a")
    run = tmp_path / "b"
    pretrain.train(toy_config(data, *common, "train.steps=2"), run)
    resumed = pretrain.train(toy_config(data, *common), run, resume=True)
    for name, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=0, msg=name)


def test_rr_targets_from_a_hear_module_are_cached(data, tmp_path):
    external = save_checkpoint(
        tmp_path / "external", CatEncoder(**EXTERNAL), "cat-binaural", EXTERNAL
    )
    run = tmp_path / "run"
    code = pretrain.main(
        [
            "--config",
            str(TOY),
            "--out",
            str(run),
            "--rr-targets",
            f"hear_gram.cat_binaural:{external}",
            *toy_config_overrides(data),
            "train.steps=4",
            "train.log_every=2",
            "cat.rr_loss=cosine",
        ]
    )
    assert code == 0
    assert all("loss_rr" in m for m in metrics(run))
    cached = sorted((run / "rr_cache").glob("*.npy"))
    assert len(cached) == 8  # 4 steps x 2 clips: every clip of the epoch, once
    assert np.load(cached[0]).shape == (8 * 16,)
    weights = load_file(run / "checkpoints" / "step-000000004" / "model.safetensors")
    assert weights["rr_head.weight"].shape == (8 * 16, 32)


def test_rr_targets_stored_beside_the_audio(data, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        sf.write(clips / f"c{i}.wav", synth_clip(rng, 2.5, 32000), 32000)
        if i != 3:  # c3 has no target: skipped as a bad clip
            np.save(clips / f"c{i}.clap.npy", rng.standard_normal(6).astype(np.float32))
    run = tmp_path / "run"
    cfg = toy_config(
        data,
        f"data.train={clips}",
        "data.max_bad_fraction=1.0",
        "cat.rr_targets=beside:clap.npy",
        "train.steps=3",
        "train.log_every=1",
    )
    model = pretrain.train(cfg, run)
    assert model.rr_head.out_features == 6
    assert all("loss_rr" in m for m in metrics(run))
    assert metrics(run)[-1]["bad_clips"] >= 1


def test_rr_targets_are_refused_for_gram_and_bad_specs(data, tmp_path, capsys):
    base = ["--out", str(tmp_path / "r"), *toy_config_overrides(data)]
    gram = Path(TOY).with_name("toy.yaml")
    assert pretrain.main(["--config", str(gram), "--rr-targets", "beside", *base]) == 2
    assert "regularizes CAT models" in capsys.readouterr().err
    assert pretrain.main(["--config", str(TOY), "--rr-targets", "no_colon", *base]) == 2
    assert "MODULE:CKPT" in capsys.readouterr().err

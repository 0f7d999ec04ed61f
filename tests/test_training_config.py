"""Pretraining configs: the shipped variants carry the paper's settings; overrides."""

from pathlib import Path

import pytest

from training import config
from training.pretrain import main

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


@pytest.mark.parametrize(
    "name, variant, windows, clean",
    [
        ("gram_binaural", "gram-binaural", [2, 5, 10, 25, 50, 100, 0, 0], 0.0),
        ("gram_binaural_time", "gram-binaural-time", [2, 5, 10, 25, 50, 0, 0, 0], 0.0),
        ("gram_ambisonics", "gram-ambisonics", [2, 5, 10, 25, 50, 100, 0, 0], 0.0),
        ("gram_clean", "gram-clean", [2, 5, 10, 25, 50, 100, 0, 0], 1.0),
    ],
)
def test_variant_configs_have_the_paper_settings(name, variant, windows, clean):
    cfg = config.load(CONFIGS / f"{name}.yaml")
    m, o, t = cfg.model, cfg.optim, cfg.train
    assert (m.variant, m.decoder_windows, cfg.scenes.clean_ratio) == (variant, windows, clean)
    assert (m.embed_dim, m.depth, m.num_heads, m.mlp_ratio) == (768, 12, 12, 4.0)
    assert (m.decoder_dim, m.decoder_depth, m.mask_ratio) == (512, 8, 0.8)
    assert (o.lr, o.betas, o.weight_decay, o.warmup_steps, o.grad_clip) == (
        2e-4,
        [0.9, 0.95],
        0.01,
        10_000,
        5.0,
    )
    assert (t.steps, t.batch_clips, t.crops_per_clip, t.checkpoint_every) == (
        500_000,
        96,
        16,
        25_000,
    )
    assert (cfg.data.clip_seconds, cfg.data.loudness_dbfs, cfg.scenes.snr_db) == (
        10.0,
        -14.0,
        [5.0, 40.0],
    )
    assert (cfg.scenes.rirs is None) == (clean == 1.0)


def test_overrides_are_typed_by_the_field():
    cfg = config.load(
        CONFIGS / "toy.yaml",
        [
            "optim.lr=1e-4",
            "train.steps=1000",
            "scenes.snr_db=[10, 20]",
            "scenes.noise=null",
            "train.compile=true",
            "data.train=some/{000..009}.tar",
        ],
    )
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.train.steps == 1000 and cfg.train.compile is True
    assert cfg.scenes.snr_db == [10.0, 20.0] and cfg.scenes.noise is None
    assert cfg.data.train == "some/{000..009}.tar"
    assert config.differences(config.load(CONFIGS / "toy.yaml"), cfg)[0].startswith("data.train")


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.nope=1", "unknown config field 'optim.nope'"),
        ("nope.lr=1", "unknown config section 'nope'"),
        ("train.steps=1.5", "train.steps must be an integer"),
        ("train.compile=maybe", "train.compile must be true or false"),
        ("optim.lr", "not of the form section.field=value"),
        ("model.variant=gram-x", "model.variant 'gram-x' is not one of"),
        ("model.decoder_windows=[2,0,0]", "divisible by 4 and by the number of decoder heads"),
        ("scenes.rirs=null", "scenes.rirs is not set"),
    ],
)
def test_bad_overrides_are_named(override, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load(CONFIGS / "toy.yaml", [override])


def test_cli_reports_bad_config_with_exit_code_2(tmp_path, capsys):
    code = main(["--config", str(CONFIGS / "toy.yaml"), "--out", str(tmp_path), "--set", "x.y=1"])
    assert code == 2
    assert "unknown config section 'x'" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "new")]) == 2
    assert "--config is required" in capsys.readouterr().err

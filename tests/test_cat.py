"""CAT encoder: stem geometry, masking inside the conv stages, checkpoints, HEAR tools."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from hear_tasks import write_task
from safetensors.torch import save_file

from hear_gram import hear_api
from hear_gram.cat import CatEncoder
from hear_gram.checkpoint import load_encoder, save_checkpoint
from hear_gram.errors import CheckpointError
from hear_gram.variants import VARIANTS

TINY = {
    "stem_dims": (8, 12),
    "stem_depths": (1, 1),
    "embed_dim": 16,
    "depth": 2,
    "num_heads": 2,
}


def tiny(in_chans: int = 2, seed: int = 0) -> CatEncoder:
    torch.manual_seed(seed)
    return CatEncoder(in_chans=in_chans, **TINY).eval()


@pytest.mark.parametrize("in_chans", [1, 2, 7])
def test_stage_shapes(in_chans):
    encoder = tiny(in_chans)
    x = torch.randn(3, in_chans, 128, 200)
    s1, s2, s3 = encoder.stem.stage_outputs(x)
    assert s1.shape == (3, 8, 32, 50)
    assert s2.shape == (3, 12, 16, 25)
    assert s3.shape == (3, 16, 8, 25)
    assert encoder.stem(x).shape == (3, 200, 16)
    assert encoder.grid == (8, 25) and encoder.num_patches == 200
    assert encoder.frames_per_step == 8 and encoder.frame_dim == 8 * 16
    cls, steps = encoder(x)
    assert cls.shape == (3, 16) and steps.shape == (3, 25, 128)


def test_named_variants_are_vit_b_with_a_16_by_8_token_grid():
    for name in ("cat-binaural", "cat-ambisonics", "cat-clean"):
        assert VARIANTS[name]["architecture"] == "cat"
    encoder = CatEncoder(**VARIANTS["cat-binaural"]["encoder"])
    assert (encoder.embed_dim, len(encoder.blocks), encoder.grid) == (768, 11, (8, 25))
    assert encoder.frame_dim == 6144
    assert 80e6 < sum(p.numel() for p in encoder.parameters()) < 92e6


def test_strides_that_do_not_tile_a_chunk_are_refused():
    with pytest.raises(ValueError, match="do not tile"):
        CatEncoder(strides=((4, 4), (2, 2), (2, 2)), **TINY)


def _perturb_hidden(x: torch.Tensor, hidden: torch.Tensor, token=(16, 8)) -> torch.Tensor:
    """``x`` with new random content in the input footprint of every hidden token."""
    footprint = hidden.repeat_interleave(token[0], 1).repeat_interleave(token[1], 2)
    return torch.where(footprint[:, None], torch.randn_like(x) * 3, x)


def _upsample(hidden: torch.Tensor, factor: tuple[int, int]) -> torch.Tensor:
    return hidden.repeat_interleave(factor[0], 1).repeat_interleave(factor[1], 2)


def test_mask_reaches_every_stem_stage():
    """With the token mask, new content under masked tokens changes no visible position of
    any stage; without it, the depthwise convolutions carry it into visible positions."""
    encoder = tiny()
    stem = encoder.stem
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, 128, 200, generator=gen)
    hidden = torch.rand(2, 8, 25, generator=gen) < 0.5
    y = _perturb_hidden(x, hidden)
    with torch.no_grad():
        masked = zip(stem.stage_outputs(x, hidden), stem.stage_outputs(y, hidden), strict=True)
        open_ = zip(stem.stage_outputs(x), stem.stage_outputs(y), strict=True)
        for stage, ((a, b), (c, d)) in enumerate(zip(masked, open_, strict=True)):
            visible = ~_upsample(hidden, stem.stage_factor(stage))[:, None]
            assert torch.equal(a * visible, b * visible), f"stage {stage + 1} leaks"
            assert ((a - b).abs() * ~visible).amax() > 0.1  # masked positions did change
            if stage < 2:  # stages with conv blocks mix neighbours when nothing is masked
                assert ((c - d).abs() * visible).amax() > 1e-3
        tokens_x, tokens_y = stem(x, hidden), stem(y, hidden)
        visible = ~hidden.flatten(1)
        assert torch.equal(tokens_x[visible], tokens_y[visible])


def test_student_tokens_ignore_masked_content():
    encoder = tiny()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 2, 128, 200, generator=gen)
    keep = torch.stack([torch.randperm(200, generator=gen)[:40] for _ in range(2)])
    hidden = torch.ones(2, 200, dtype=torch.bool).scatter(1, keep, False).view(2, 8, 25)
    y = _perturb_hidden(x, hidden)
    with torch.no_grad():
        a = encoder.forward_tokens(x, keep=keep)
        b = encoder.forward_tokens(y, keep=keep)
    assert a.shape == (2, 41, 16)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_padding_reaches_no_valid_step():
    encoder = tiny()
    x = torch.randn(2, 2, 128, 200)
    valid = torch.tensor([13, 25])
    junk = x.clone()
    junk[0, ..., 13 * 8 :] = torch.randn_like(junk[0, ..., 13 * 8 :]) * 5
    with torch.no_grad():
        cls_a, steps_a = encoder(x, valid)
        cls_b, steps_b = encoder(junk, valid)
        cls_c, _ = encoder(junk)
    torch.testing.assert_close(steps_a[0, :13], steps_b[0, :13], rtol=0, atol=1e-5)
    torch.testing.assert_close(cls_a, cls_b, rtol=0, atol=1e-5)
    assert (cls_a[0] - cls_c[0]).abs().amax() > 1e-3  # without valid_steps the junk counts


def _tiny_checkpoint(folder, variant="cat-binaural", in_chans=2):
    args = {"in_chans": in_chans, **TINY}
    return save_checkpoint(folder, CatEncoder(**args), variant, args, {"test": True})


def test_checkpoint_round_trip(tmp_path):
    folder = _tiny_checkpoint(tmp_path / "ckpt")
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "cat" and config["features"] == "binaural"
    encoder, _ = load_encoder(str(folder), "cat-binaural")
    reference, _ = load_encoder(str(folder), "cat-binaural")
    x = torch.randn(1, 2, 128, 200)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x)[1], reference(x)[1])
    with pytest.raises(CheckpointError, match="hear_gram.cat_binaural"):
        load_encoder(str(folder), "cat-clean")
    bare = tmp_path / "bare.safetensors"
    save_file(encoder.state_dict(), bare)
    with pytest.raises(CheckpointError, match="no foreign weight layout"):
        load_encoder(str(bare), "cat-binaural")


def test_hear_api_on_a_tiny_checkpoint(tmp_path):
    folder = _tiny_checkpoint(tmp_path / "ckpt", "cat-ambisonics", 7)
    model = hear_api.load_model("cat-ambisonics", str(folder), sample_rate=16000)
    audio = torch.randn(2, 4, 16000 * 3) * 0.1
    scene = hear_api.get_scene_embeddings(audio, model)
    steps, times = hear_api.get_timestamp_embeddings(audio, model)
    assert scene.shape == (2, 128) and steps.shape == (2, 38, 128)
    torch.testing.assert_close(times[0, :2], torch.tensor([35.0, 115.0]))
    torch.testing.assert_close(scene, steps.mean(dim=1), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_hear_validator_passes(tmp_path, bin_dir):
    folder = _tiny_checkpoint(tmp_path / "ckpt")
    run = subprocess.run(
        [str(bin_dir / "hear-validator"), "hear_gram.cat_binaural", "-m", str(folder)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.slow
def test_embeddings_runner_writes_scene_embeddings(tmp_path):
    folder = _tiny_checkpoint(tmp_path / "ckpt", "cat-ambisonics", 7)
    tasks = tmp_path / "tasks"
    write_task(tasks, "ambix-scene", "scene", channels=4, sample_rate=48000, seconds=2.5)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "heareval.embeddings.runner",
            "hear_gram.cat_ambisonics",
            "--model",
            str(folder),
            "--tasks-dir",
            str(tasks),
            "--embeddings-dir",
            str(tmp_path / "embeddings"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = tmp_path / "embeddings" / "hear_gram.cat_ambisonics" / "ambix-scene"
    assert (out / ".done.embeddings").exists()
    assert json.loads((out / "test.embedding-dimensions.json").read_text()) == [3, 128]
    emb = np.load(out / "test" / "test0.wav.embedding.npy")
    assert emb.shape == (128,) and np.isfinite(emb).all()

"""Masking, patch targets, crops and the pretraining model (loss, init from the reference
layout)."""

import re

import pytest
import torch
from safetensors.torch import save_file
from training_support import reference_state_dict

from hear_gram.checkpoint import save_checkpoint
from hear_gram.errors import CheckpointError
from hear_gram.features import normalize
from training.config import ModelConfig
from training.mae import build_model, init_from
from training.masking import num_visible, patchify, random_masking
from training.samples import random_crops

TINY = {"embed_dim": 32, "depth": 1, "num_heads": 2, "decoder_dim": 32, "decoder_depth": 1}


def test_random_masking_hides_80_percent_independently_per_sample():
    g = torch.Generator().manual_seed(0)
    keep, masked = random_masking(64, 200, 0.8, g)
    assert keep.shape == (64, 40) and masked.sum(1).eq(160).all()
    assert not masked.gather(1, keep).any()
    assert (keep.diff(dim=1) > 0).all()
    assert len({tuple(k.tolist()) for k in keep}) == 64
    assert num_visible(100, 0.8) == 20
    # Every patch is masked about equally often.
    assert masked.float().mean(0).std() < 0.1


def test_patchify_matches_the_patch_embedding_layout():
    """A patch's target vector is laid out like the patch convolution's weights, so the
    decoder's linear head and the encoder's patch embedding see the same order."""
    model = build_model(ModelConfig(variant="gram-binaural", **TINY))
    x = torch.randn(2, 2, 128, 200)
    proj = model.encoder.patch_embed.proj
    via_patches = patchify(x, (16, 8)) @ proj.weight.flatten(1).T + proj.bias
    torch.testing.assert_close(via_patches, model.encoder.patch_embed(x), rtol=1e-4, atol=1e-4)
    # Token f * 25 + t is patch row f, column t.
    torch.testing.assert_close(
        patchify(x, (16, 8))[:, 3 * 25 + 7], x[:, :, 48:64, 56:64].flatten(1)
    )


def test_random_crops_are_windows_of_their_own_clip():
    feats = torch.arange(3 * 1000, dtype=torch.float32).reshape(3, 1, 1, 1000).expand(3, 2, 4, 1000)
    crops = random_crops(feats, 5, 200, torch.Generator().manual_seed(0)).reshape(3, 5, 2, 4, 200)
    starts = crops[..., 0, 0, 0] - torch.arange(3)[:, None] * 1000
    assert (starts >= 0).all() and (starts <= 800).all()
    expected = crops[..., :1] + torch.arange(200)
    torch.testing.assert_close(crops, expected)
    assert len(set(starts.flatten().tolist())) > 5


def test_loss_scores_only_masked_patches():
    torch.manual_seed(0)
    model = build_model(ModelConfig(variant="gram-binaural", **TINY))
    x = normalize(torch.randn(2, 2, 128, 200))
    keep, masked = random_masking(2, 200, 0.8, torch.Generator().manual_seed(1))
    loss = model(x, keep, masked)
    visible = model.encoder.forward_tokens(x, keep=keep)[:, 1:]
    pred = model.decoder(visible, keep)
    errors = (pred - patchify(x, (16, 8))).square().mean(-1)
    torch.testing.assert_close(loss, errors[masked].mean() * 2)  # x 2 channels, as the reference
    assert not torch.isclose(loss, errors.mean() * 2)


@pytest.mark.parametrize(
    "variant, patches", [("gram-binaural-time", 100), ("gram-ambisonics", 200)]
)
def test_variants_build_with_their_patch_grids(variant, patches):
    windows = [2, 5, 10, 25, 50, 0, 0, 0] if patches == 100 else [2, 5, 10, 25, 50, 100, 0, 0]
    cfg = ModelConfig(variant=variant, **{**TINY, "decoder_dim": 64}, decoder_windows=windows)
    model = build_model(cfg)
    c = model.encoder.in_chans
    x = torch.randn(2, c, 128, 200)
    keep, masked = random_masking(2, patches, 0.8)
    assert model.encoder.num_patches == patches
    assert model(x, keep, masked).isfinite()


def test_init_from_reference_checkpoint_loads_encoder_and_decoder(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(variant="gram-binaural", **TINY, decoder_windows=[5, 0])
    source = build_model(cfg)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path / "gramt.ckpt"
    torch.save({"state_dict": reference_state_dict(source)}, path)
    torch.manual_seed(1)
    target = build_model(cfg)
    assert "reference" in init_from(target, str(path), "gram-binaural")
    x = normalize(torch.randn(2, 2, 128, 200))
    keep, masked = random_masking(2, 200, 0.8, torch.Generator().manual_seed(0))
    torch.testing.assert_close(target(x, keep, masked), source(x, keep, masked))
    # A reference file without the decoder cannot continue pretraining.
    decoder_keys = re.compile(r"mask_token|decoder_|spec_pred")
    reference = reference_state_dict(source)
    encoder_only = {k: v for k, v in reference.items() if not decoder_keys.match(k)}
    save_file(encoder_only, tmp_path / "encoder.safetensors")
    with pytest.raises(CheckpointError, match="no decoder weights"):
        init_from(target, str(tmp_path / "encoder.safetensors"), "gram-binaural")


def test_init_from_hear_gram_checkpoint_loads_the_encoder_only(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(variant="gram-binaural", **TINY)
    source = build_model(cfg)
    args = {
        "in_chans": 2,
        "patch_size": (16, 8),
        "embed_dim": 32,
        "depth": 1,
        "num_heads": 2,
        "mlp_ratio": 4.0,
    }
    save_checkpoint(tmp_path / "ckpt", source.encoder, "gram-binaural", args)
    torch.manual_seed(1)
    target = build_model(cfg)
    decoder_before = {k: v.clone() for k, v in target.decoder.state_dict().items()}
    init_from(target, str(tmp_path / "ckpt"), "gram-binaural")
    for k, v in source.encoder.state_dict().items():
        torch.testing.assert_close(target.encoder.state_dict()[k], v)
    for k, v in decoder_before.items():
        torch.testing.assert_close(target.decoder.state_dict()[k], v)

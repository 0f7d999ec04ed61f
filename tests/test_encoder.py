"""GramEncoder: token geometry, positions, padding masks, and the shared attention."""

import pytest
import torch

from hear_gram.gram import GRAM_VARIANTS, GramEncoder
from hear_gram.layers import Attention, sincos_2d

SMALL = {"embed_dim": 32, "depth": 2, "num_heads": 2}


@pytest.mark.parametrize("patch,steps,frame_dim", [((16, 8), 25, 8 * 32), ((128, 2), 100, 32)])
def test_step_embedding_shapes(patch, steps, frame_dim):
    encoder = GramEncoder(in_chans=2, patch_size=patch, **SMALL).eval()
    cls, out = encoder(torch.randn(3, 2, 128, 200))
    assert cls.shape == (3, 32)
    assert out.shape == (3, steps, frame_dim)
    assert encoder.frames_per_step * steps == 200


def test_step_t_holds_the_patch_column_t_frequency_tokens_in_order():
    """Without blocks, step t depends only on frames of column t; its k-th slice on row k."""
    encoder = GramEncoder(in_chans=1, patch_size=(16, 8), embed_dim=32, depth=0, num_heads=2)
    x = torch.randn(1, 1, 128, 200)
    _, base = encoder(x)
    changed = x.clone()
    changed[..., 16:32, 40:48] += 1.0  # row 1, column 5
    _, out = encoder(changed)
    diff = (out - base).abs().reshape(25, 8, 32).sum(-1)
    assert diff[5, 1] > 0
    diff[5, 1] = 0
    assert diff.max() == 0


def test_sincos_positions_cls_row_zero_and_time_first():
    pos = sincos_2d(64, (8, 25))[0]
    assert pos.shape == (201, 64)
    assert torch.all(pos[0] == 0)
    tokens = pos[1:].reshape(8, 25, 64)
    # Same column (time), different rows: the first half (time) is identical.
    torch.testing.assert_close(tokens[0, 7, :32], tokens[5, 7, :32])
    assert not torch.allclose(tokens[0, 7, 32:], tokens[5, 7, 32:])
    torch.testing.assert_close(tokens[3, 0, 32:], tokens[3, 9, 32:])


def test_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    ours = Attention(32, 4)
    theirs = torch.nn.MultiheadAttention(32, 4, batch_first=True)
    theirs.in_proj_weight.data.copy_(ours.qkv.weight)
    theirs.in_proj_bias.data.copy_(ours.qkv.bias)
    theirs.out_proj.weight.data.copy_(ours.proj.weight)
    theirs.out_proj.bias.data.copy_(ours.proj.bias)
    x = torch.randn(2, 9, 32)
    torch.testing.assert_close(
        ours(x), theirs(x, x, x, need_weights=False)[0], rtol=1e-5, atol=1e-5
    )


def test_padded_columns_do_not_change_valid_steps():
    torch.manual_seed(1)
    encoder = GramEncoder(in_chans=2, patch_size=(16, 8), **SMALL).eval()
    x = torch.randn(1, 2, 128, 200)
    valid = torch.tensor([7])
    _, a = encoder(x, valid)
    noisy = x.clone()
    noisy[..., 56:] = torch.randn_like(noisy[..., 56:]) * 100
    cls_b, b = encoder(noisy, valid)
    torch.testing.assert_close(a[:, :7], b[:, :7])
    _, unmasked = encoder(noisy)
    assert not torch.allclose(a[:, :7], unmasked[:, :7])


def test_keep_encodes_only_visible_patches():
    encoder = GramEncoder(in_chans=2, patch_size=(16, 8), **SMALL).eval()
    keep = torch.tensor([[0, 5, 199], [3, 4, 10]])
    assert encoder.forward_tokens(torch.randn(2, 2, 128, 200), keep=keep).shape == (2, 4, 32)


def test_named_variants_are_vit_base():
    for name, spec in GRAM_VARIANTS.items():
        enc = spec["encoder"]
        assert (enc["embed_dim"], enc["depth"], enc["num_heads"]) == (768, 12, 12), name
    encoder = GramEncoder(**GRAM_VARIANTS["gram-binaural"]["encoder"])
    assert 85e6 < sum(p.numel() for p in encoder.parameters()) < 88e6

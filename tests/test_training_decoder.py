"""The multi-window decoder: windowed attention against a naive masked computation, and the
conversion of reference-layout decoder weights."""

import math

import pytest
import torch
from training_support import reference_decoder_state

from hear_gram.errors import CheckpointError
from training.decoder import (
    PATCH_WINDOWS,
    TIME_WINDOWS,
    MultiWindowDecoder,
    WindowedAttention,
    convert_reference_decoder,
)


def naive_attention(attn: WindowedAttention, x: torch.Tensor) -> torch.Tensor:
    """Full N x N attention per head with a block-diagonal mask and the relative bias."""
    b, n, d = x.shape
    heads = attn.num_heads
    hd = d // heads
    q, k, v = attn.qkv(x).reshape(b, n, 3, heads, hd).permute(2, 0, 3, 1, 4)
    outs = []
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    for h, w in enumerate(attn.windows):
        logits = q[:, h] @ k[:, h].transpose(-1, -2) / math.sqrt(hd)
        if w:
            table = attn.bias_tables[str(h)]
            bias = table[(i % w) - (j % w) + w - 1]
            logits = logits + bias
            logits = logits.masked_fill(i // w != j // w, float("-inf"))
        outs.append(torch.softmax(logits, dim=-1) @ v[:, h])
    out = torch.stack(outs, dim=1).transpose(1, 2).reshape(b, n, d)
    return attn.proj(out)


@pytest.mark.parametrize(
    "windows, n",
    [(PATCH_WINDOWS, 200), (TIME_WINDOWS, 100), ([5, 0, 5, 2], 50)],
)
def test_windowed_attention_equals_naive_masked_attention(windows, n):
    torch.manual_seed(0)
    attn = WindowedAttention(8 * len(windows), windows)
    with torch.no_grad():
        for table in attn.bias_tables.values():
            table.normal_(0, 1.0)  # large biases, so a wrong offset would show
    x = torch.randn(3, n, 8 * len(windows))
    torch.testing.assert_close(attn(x), naive_attention(attn, x), rtol=1e-5, atol=1e-5)


def test_windows_are_local():
    """Changing a token outside a window leaves that window's output unchanged."""
    torch.manual_seed(0)
    attn = WindowedAttention(16, [4, 4])  # both heads local
    x = torch.randn(1, 16, 16)
    y = x.clone()
    y[0, 8:] += torch.randn(8, 16)
    torch.testing.assert_close(attn(x)[0, :8], attn(y)[0, :8])
    assert not torch.allclose(attn(x)[0, 8:], attn(y)[0, 8:])


def test_decoder_rejects_windows_that_do_not_tile():
    with pytest.raises(ValueError, match="do not divide"):
        MultiWindowDecoder((8, 25), 32, 256, dim=32, depth=1, windows=[3, 0])


@pytest.mark.parametrize("flip_index", [False, True])
def test_reference_decoder_weights_load_and_give_identical_outputs(flip_index):
    torch.manual_seed(0)
    source = MultiWindowDecoder((8, 25), 48, 256, dim=32, depth=2, windows=[2, 5, 25, 0])
    with torch.no_grad():
        for param in source.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    reference = reference_decoder_state(source, flip_index)
    torch.manual_seed(1)
    target = MultiWindowDecoder((8, 25), 48, 256, dim=32, depth=2, windows=[2, 5, 25, 0])
    converted = convert_reference_decoder(reference, target)
    target.load_state_dict(converted, strict=True)
    visible = torch.randn(2, 40, 48)
    keep = torch.stack([torch.randperm(200)[:40].sort().values for _ in range(2)])
    torch.testing.assert_close(target(visible, keep), source(visible, keep))


def test_reference_decoder_conversion_names_problems():
    torch.manual_seed(0)
    decoder = MultiWindowDecoder((8, 25), 48, 256, dim=32, depth=1, windows=[2, 0])
    good = reference_decoder_state(decoder, False)
    with pytest.raises(CheckpointError, match="decoder_blocks.0.wmha.extra"):
        convert_reference_decoder({**good, "decoder_blocks.0.wmha.extra": torch.zeros(1)}, decoder)
    with pytest.raises(CheckpointError, match="decoder_pos_embed"):
        convert_reference_decoder({**good, "decoder_pos_embed": torch.zeros(1, 200, 32)}, decoder)
    bad_index = torch.tensor([[0, 1], [1, 2]])  # not a function of i - j
    key = "decoder_blocks.0.wmha.attn_heads.0.relative_position_index"
    with pytest.raises(CheckpointError, match="not a function of i - j"):
        convert_reference_decoder({**good, key: bad_index}, decoder)

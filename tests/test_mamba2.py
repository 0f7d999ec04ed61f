"""The pure-PyTorch Mamba-2 mixer against an independent token-by-token recurrence."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from reference_layout import ReferenceMamba2, recurrence

from hear_gram.mamba2 import (
    Mamba2Mixer,
    MambaBlock,
    causal_depthwise_conv1d,
    segment_sums,
    ssd_scan,
)


def random_scan_inputs(b, length, h, p, g, n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, length, h, p, generator=gen)
    dt = F.softplus(torch.randn(b, length, h, generator=gen) - 1.0)
    A = -torch.empty(h).uniform_(1.0, 16.0, generator=gen)
    B = torch.randn(b, length, g, n, generator=gen)
    C = torch.randn(b, length, g, n, generator=gen)
    return x, dt, A, B, C


@pytest.mark.parametrize(
    ("batch", "length", "chunk"),
    [(1, 1, 4), (2, 37, 8), (3, 64, 16), (2, 201, 64), (1, 50, 256), (2, 33, 33)],
)
def test_scan_matches_the_recurrence(batch, length, chunk):
    x, dt, A, B, C = random_scan_inputs(batch, length, 6, 5, 2, 7, seed=length)
    y, final = ssd_scan(x, dt, A, B, C, chunk_size=chunk, return_final_state=True)
    y_ref, final_ref = recurrence(x, dt, A, B, C)
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(final.double(), final_ref, rtol=1e-5, atol=1e-5)


def test_scan_continues_from_an_initial_state():
    x, dt, A, B, C = random_scan_inputs(2, 40, 4, 3, 1, 5, seed=1)
    first, state = ssd_scan(x[:, :17], dt[:, :17], A, B[:, :17], C[:, :17], 8, None, True)
    second, _ = ssd_scan(x[:, 17:], dt[:, 17:], A, B[:, 17:], C[:, 17:], 8, state)
    y_ref, _ = recurrence(x, dt, A, B, C)
    torch.testing.assert_close(torch.cat([first, second], 1).double(), y_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["difference", "cumsum"])
def test_long_decays_stay_exact_within_a_chunk(method):
    """Strong decays over a long chunk: float32 differences of long prefix sums would lose
    the small terms; every entry keeps float32 precision."""
    a = torch.full((300,), -3.7)
    seg = segment_sums(a, method)
    t, s = 299, 297
    assert seg[t, s].item() == pytest.approx(-7.4, abs=1e-5)
    assert seg[5, 5].item() == 0.0 and seg[4, 5].item() == float("-inf")


def test_both_segment_sum_methods_agree_with_float64():
    a = -torch.rand(2, 3, 201, generator=torch.Generator().manual_seed(0)) * 1.6
    cum = a.double().cumsum(-1)
    exact = (cum[..., :, None] - cum[..., None, :]).tril()
    for method in ("difference", "cumsum"):
        seg = segment_sums(a, method)
        assert seg.dtype == torch.float32
        torch.testing.assert_close(seg.double().tril(), exact, rtol=1e-6, atol=1e-5)
        assert torch.isinf(seg.triu(1)[seg.triu(1) != 0]).all()
    with pytest.raises(ValueError, match="method must be"):
        segment_sums(a, "fast")


def test_causal_convolution_matches_a_loop():
    gen = torch.Generator().manual_seed(0)
    x, w, bias = torch.randn(2, 9, 5, generator=gen), torch.randn(5, 1, 4), torch.randn(5)
    y = causal_depthwise_conv1d(x, w, bias)
    padded = torch.cat([torch.zeros(2, 3, 5), x], dim=1)
    expected = torch.stack(
        [(padded[:, t : t + 4] * w[:, 0].T).sum(dim=1) + bias for t in range(9)], dim=1
    )
    torch.testing.assert_close(y, expected)


@pytest.mark.parametrize(("length", "chunk", "ngroups"), [(23, 8, 1), (64, 16, 2), (201, 256, 1)])
def test_mixer_matches_its_recurrence(length, chunk, ngroups):
    """Our mixer's weights load strictly into an independent step-by-step mixer with
    mamba_ssm's parameter names, and both compute the same."""
    torch.manual_seed(0)
    reference = ReferenceMamba2(24, d_state=6, d_conv=4, expand=2, headdim=8, ngroups=ngroups)
    mixer = Mamba2Mixer(24, d_state=6, d_conv=4, expand=2, headdim=8, ngroups=ngroups,
                        chunk_size=chunk)  # fmt: skip
    mixer.load_state_dict(reference.state_dict(), strict=True)
    u = torch.randn(3, length, 24)
    with torch.no_grad():
        torch.testing.assert_close(mixer(u).double(), reference(u), rtol=1e-5, atol=1e-5)


def test_chunk_size_does_not_change_the_output():
    torch.manual_seed(1)
    block = MambaBlock(32, d_state=16, headdim=8, chunk_size=256)
    u = torch.randn(2, 101, 32)
    with torch.no_grad():
        whole = block(u)
        block.mixer.chunk_size = 7
        chunked = block(u)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)


def test_block_is_causal():
    torch.manual_seed(2)
    block = MambaBlock(16, norm="rmsnorm", d_state=8, headdim=4, chunk_size=5)
    u = torch.randn(1, 20, 16)
    changed = u.clone()
    changed[:, 12:] = torch.randn(1, 8, 16)
    with torch.no_grad():
        torch.testing.assert_close(block(changed)[:, :12], block(u)[:, :12])
        assert not torch.allclose(block(changed)[:, 12:], block(u)[:, 12:])


def test_bf16_follows_fp32():
    torch.manual_seed(3)
    block = MambaBlock(64, d_state=16, headdim=16)
    u = torch.randn(2, 50, 64)
    with torch.no_grad():
        ref = block(u)
        out = block.to(torch.bfloat16)(u.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    cos = F.cosine_similarity(out.float().flatten(1), ref.flatten(1)).min()
    assert cos > 0.999


def test_gradients_flow_through_every_parameter():
    torch.manual_seed(4)
    block = MambaBlock(16, d_state=8, headdim=4, chunk_size=4)
    block(torch.randn(2, 11, 16)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="headdim"):
        Mamba2Mixer(24, headdim=7)
    with pytest.raises(ValueError, match="groups"):
        Mamba2Mixer(24, headdim=8, ngroups=4)
    with pytest.raises(ValueError, match="norm"):
        MambaBlock(8, norm="batchnorm")


def test_matches_the_ssd_reference_shipped_with_mamba_ssm():
    """bench/mamba_ssd_reference.py: the scan against ``ssd_minimal_discrete`` read from the
    mamba-ssm 2.3.0 source distribution (downloaded from PyPI once, sha256-checked)."""
    script = Path(__file__).resolve().parents[1] / "bench" / "mamba_ssd_reference.py"
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    if result.returncode == 3:
        pytest.skip(f"mamba-ssm sdist not reachable: {result.stderr.strip()}")
    assert result.returncode == 0, result.stdout + result.stderr
    worst = float(result.stdout.split("worst ours-theirs ")[1].split()[0])
    assert worst < 1e-5

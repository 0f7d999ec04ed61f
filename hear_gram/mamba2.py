"""Mamba-2 in plain PyTorch: the selective state-space mixer of GRAM-M on any device.

The mixer has the layout and numerics of ``mamba_ssm``'s ``Mamba2`` layer with its defaults
(``d_state`` 128, ``d_conv`` 4, ``expand`` 2, ``headdim`` 64, ``ngroups`` 1, gated RMSNorm,
no biases in the projections, a depthwise causal convolution with bias), without its CUDA
kernels: the scan is the chunked state-space-duality (SSD) algorithm written with tensor
operations, batched, for CPU and CUDA, float32 and bfloat16 (the scan itself always runs
in float32).

Per head, with ``x_t`` its ``headdim`` inputs and ``B_t``, ``C_t`` the ``d_state`` values of
its group::

    h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T        (headdim x d_state)
    y_t = h_t C_t + D x_t

The sequence is cut into chunks of ``chunk_size`` tokens: inside a chunk the outputs are
one masked matrix product (quadratic in the chunk only), between chunks the state is
carried by a loop, so memory grows linearly with the sequence beyond one chunk.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NORMS = ("layernorm", "rmsnorm")


def causal_depthwise_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Depthwise causal convolution: ``y_t = b + sum_k w_k x_{t - K + 1 + k}``.

    Args:
        x: ``(B, L, D)``.
        weight: ``(D, 1, K)`` (``nn.Conv1d`` with ``groups=D``) or ``(D, K)``.
        bias: ``(D,)`` or None.
    Returns:
        ``(B, L, D)``; ``y_t`` depends on ``x_{<=t}`` only.
    """
    d = x.shape[-1]
    weight = weight.reshape(d, 1, -1)
    padded = F.pad(x.transpose(1, 2), (weight.shape[-1] - 1, 0))
    return F.conv1d(padded, weight, bias, groups=d).transpose(1, 2)


def _pad_time(t: Tensor, pad: int) -> Tensor:
    """Zero-pad dimension 1 of ``t`` by ``pad`` steps at the end."""
    return F.pad(t, [0, 0] * (t.dim() - 2) + [0, pad]) if pad else t


def segment_sums(a: Tensor, method: str = "auto") -> Tensor:
    """``(..., Q)`` log decays to ``(..., Q, Q)`` in ``a``'s dtype: entry ``[t, s]`` is
    ``sum_{s < r <= t} a_r`` for ``s <= t`` and ``-inf`` above the diagonal.

    ``method``: ``"difference"`` takes the prefix sums and their differences in float64 and
    rounds each entry once, so it keeps ``a``'s precision however long the prefix sums grow
    (a float32 difference would lose its small terms); ``"cumsum"`` makes each entry a
    masked cumulative sum of its own terms, as precise, about twice as slow, and without
    float64 (which MPS lacks); ``"auto"``: ``"difference"`` on CPU and CUDA.
    """
    q = a.shape[-1]
    upper = torch.ones(q, q, dtype=torch.bool, device=a.device).triu_(1)
    if method == "auto":
        method = "difference" if a.device.type in ("cpu", "cuda") else "cumsum"
    if method == "difference":
        cum = a.double().cumsum(dim=-1)
        return (cum[..., :, None] - cum[..., None, :]).to(a.dtype).masked_fill_(upper, -math.inf)
    if method != "cumsum":
        raise ValueError(f"method must be auto, difference or cumsum, got {method!r}")
    strictly_lower = torch.ones(q, q, dtype=torch.bool, device=a.device).tril_(-1)
    terms = a[..., :, None].expand(*a.shape, q).masked_fill(~strictly_lower, 0.0)
    return terms.cumsum(dim=-2).masked_fill_(upper, -math.inf)


def ssd_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int = 256,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """The selective scan ``h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T``, ``y_t = h_t C_t``,
    by chunks (state-space duality).

    Args:
        x: ``(b, L, H, P)`` inputs.
        dt: ``(b, L, H)`` positive step sizes (after softplus).
        A: ``(H,)`` negative decay rates.
        B: ``(b, L, G, N)`` input projections; head ``h`` reads group ``h // (H / G)``.
        C: ``(b, L, G, N)`` output projections, grouped as ``B``.
        chunk_size: tokens per chunk (the quadratic part is ``chunk_size^2`` per head).
        initial_state: ``(b, H, P, N)``, or None for zeros.
        return_final_state: also return the state after step ``L``.
    Returns:
        ``y`` ``(b, L, H, P)`` (without the ``D x`` skip) and the final state
        ``(b, H, P, N)`` (None unless asked for).
    """
    b, length, h, p = x.shape
    g, n = B.shape[-2:]
    if h % g:
        raise ValueError(f"{h} heads cannot share {g} groups")
    r = h // g
    q = min(chunk_size, length)
    c = math.ceil(length / q)
    # Padded steps have dt = 0: no decay and no input, so the state after them is that of
    # step L, and causality keeps them out of every real output.
    x, dt, B, C = (_pad_time(t, c * q - length) for t in (x, dt, B, C))
    xs = (x * dt[..., None]).view(b, c, q, g, r, p)
    a = (dt * A).view(b, c, q, g, r).permute(0, 1, 3, 4, 2)  # (b, c, g, r, q) log decays
    Bc, Cc = B.view(b, c, q, g, n), C.view(b, c, q, g, n)
    # (b, c, g, r, q, q) decays from step s to step t, weighted by C_t . B_s; without
    # autograd in place, saving two passes over the largest tensor of the scan
    inplace = not torch.is_grad_enabled()
    decay = segment_sums(a)
    decay = decay.exp_() if inplace else decay.exp()
    carried = c > 1 or initial_state is not None or return_final_state
    to_end = decay[..., -1, :].clone() if carried else None  # from each step to the chunk's end
    scores = torch.einsum("bctgn,bcsgn->bcgts", Cc, Bc)[:, :, :, None]
    weights = decay.mul_(scores) if inplace else decay * scores
    y = torch.einsum("bcgrts,bcsgrp->bctgrp", weights, xs)

    final = None
    if carried:
        cum = a.cumsum(dim=-1)  # decay from the chunk's start through each step
        added = torch.einsum("bcgrs,bcsgrp,bcsgn->bcgrpn", to_end, xs, Bc)
        through = cum[..., -1].exp()[..., None, None]  # (b, c, g, r, 1, 1)
        state = x.new_zeros(b, g, r, p, n)
        if initial_state is not None:
            state = initial_state.reshape(b, g, r, p, n).to(x.dtype)
        entering = []
        for k in range(c):
            entering.append(state)
            state = state * through[:, k] + added[:, k]
        y = y + torch.einsum(
            "bctgn,bcgrpn,bcgrt->bctgrp", Cc, torch.stack(entering, dim=1), cum.exp()
        )
        final = state.reshape(b, h, p, n) if return_final_state else None
    return y.reshape(b, c * q, h, p)[:, :length], final


class GatedRMSNorm(nn.Module):
    """``rmsnorm(y * silu(z)) * weight`` over groups of ``group_size`` channels (mamba_ssm's
    ``RMSNormGated`` with ``norm_before_gate=False``)."""

    def __init__(self, dim: int, group_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        if dim % group_size:
            raise ValueError(f"group size {group_size} does not divide width {dim}")
        self.group_size = group_size
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, y: Tensor, z: Tensor) -> Tensor:
        """``y``, ``z``: ``(..., dim)``; computed in float32, returned in ``y``'s dtype."""
        gated = y.float() * F.silu(z.float())
        groups = gated.unflatten(-1, (-1, self.group_size))
        scale = torch.rsqrt(groups.square().mean(dim=-1, keepdim=True) + self.eps)
        return ((groups * scale).flatten(-2) * self.weight.float()).to(y.dtype)


class Mamba2Mixer(nn.Module):
    """The Mamba-2 mixer: ``in_proj`` to ``[z, x, B, C, dt]``, causal depthwise convolution
    and SiLU over ``[x, B, C]``, the SSD scan with ``D`` skip, gated RMSNorm with ``z``,
    ``out_proj``. Parameter names and shapes are ``mamba_ssm.modules.mamba2.Mamba2``'s."""

    def __init__(
        self,
        dim: int,
        d_state: int = 128,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 64,
        ngroups: int = 1,
        chunk_size: int = 256,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.d_inner = expand * dim
        if min(d_state, d_conv, expand, headdim, ngroups, chunk_size) < 1:
            raise ValueError(
                "Mamba-2 sizes (d_state, d_conv, expand, headdim, ngroups, "
                "chunk_size) must be positive"
            )
        if self.d_inner % headdim:
            raise ValueError(f"headdim {headdim} does not divide the inner width {self.d_inner}")
        self.nheads = self.d_inner // headdim
        if self.nheads % ngroups:
            raise ValueError(f"{ngroups} groups do not divide {self.nheads} heads")
        self.d_state, self.headdim = d_state, headdim
        self.ngroups, self.chunk_size = ngroups, chunk_size
        self.conv_dim = self.d_inner + 2 * ngroups * d_state
        self.in_proj = nn.Linear(dim, self.d_inner + self.conv_dim + self.nheads, bias=False)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim)
        self.dt_bias = nn.Parameter(torch.zeros(self.nheads))
        self.A_log = nn.Parameter(torch.zeros(self.nheads))
        self.D = nn.Parameter(torch.ones(self.nheads))
        self.norm = GatedRMSNorm(self.d_inner, self.d_inner // ngroups, norm_eps)
        self.out_proj = nn.Linear(self.d_inner, dim, bias=False)
        self.init_ssm_parameters()

    def init_ssm_parameters(
        self,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_floor: float = 1e-4,
        a_range: tuple[float, float] = (1.0, 16.0),
    ) -> None:
        """mamba_ssm's initialisation: step sizes log-uniform in ``[dt_min, dt_max]`` (at
        least ``dt_floor``) through the inverse softplus, ``A`` uniform in ``a_range``,
        ``D`` ones."""
        with torch.no_grad():
            u = torch.rand(self.nheads)
            dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=dt_floor)
            self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            self.A_log.copy_(torch.empty(self.nheads).uniform_(*a_range).log())
            self.D.fill_(1.0)

    def forward(self, u: Tensor) -> Tensor:
        """``(B, L, dim)`` to ``(B, L, dim)``; output ``t`` depends on inputs ``<= t`` only."""
        b, length, _ = u.shape
        h, p, g, n = self.nheads, self.headdim, self.ngroups, self.d_state
        z, xbc, dt = self.in_proj(u).split([self.d_inner, self.conv_dim, h], dim=-1)
        xbc = F.silu(causal_depthwise_conv1d(xbc, self.conv1d.weight, self.conv1d.bias))
        x, B, C = xbc.float().split([self.d_inner, g * n, g * n], dim=-1)
        x = x.reshape(b, length, h, p)
        dt = F.softplus(dt.float() + self.dt_bias.float())
        A = -torch.exp(self.A_log.float())
        y, _ = ssd_scan(
            x, dt, A, B.reshape(b, length, g, n), C.reshape(b, length, g, n), self.chunk_size
        )
        y = y + x * self.D.float()[:, None]
        return self.out_proj(self.norm(y.reshape(b, length, self.d_inner), z).to(u.dtype))


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    """``"layernorm"`` (weight and bias) or ``"rmsnorm"`` (weight only)."""
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps)
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


class MambaBlock(nn.Module):
    """Pre-norm residual Mamba-2 block without MLP: ``x + mixer(norm(x))`` (mamba_ssm's
    ``Block`` with ``d_intermediate=0``; its fused add-and-norm computes the same)."""

    def __init__(self, dim: int, norm: str = "layernorm", norm_eps: float = 1e-5, **mixer) -> None:
        super().__init__()
        self.norm = make_norm(norm, dim, norm_eps)
        self.mixer = Mamba2Mixer(dim, **mixer)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, L, dim)`` to ``(B, L, dim)``, causal along ``L``."""
        return x + self.mixer(self.norm(x))
